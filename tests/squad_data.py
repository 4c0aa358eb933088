"""A small SQuAD-format dataset the QA tests write: enough articles for the article split."""

import json
from pathlib import Path

CITIES = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
          ("Japan", "Tokyo")]


def write_squad(root: Path, n_articles: int = 30, name: str = "dev-v1.1.json", broken=None) -> Path:
    """A SQuAD-format file of n_articles one-paragraph articles, two questions each."""
    root.mkdir(parents=True, exist_ok=True)
    articles = []
    for a in range(n_articles):
        country, city = CITIES[a % len(CITIES)]
        context = f"Article {a}. The capital of {country} is {city}. It has {a + 3} museums."
        qas = [{"id": f"{a}-c", "question": f"What is the capital of {country}?",
                "answers": [{"text": city, "answer_start": context.index(city)}]},
               {"id": f"{a}-m", "question": "How many museums does it have?",
                "answers": [{"text": str(a + 3), "answer_start": context.index(f"{a + 3} museums")}]}]
        articles.append({"title": f"T{a}", "paragraphs": [{"context": context, "qas": qas}]})
    if broken:
        broken(articles)
    (root / name).write_text(json.dumps({"version": "1.1", "data": articles}))
    return root
