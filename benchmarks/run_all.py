"""`make bench`: run each benchmark section script, then assemble BENCHMARKS.md from their results.

Each section is benchmarks/<name>.py; it writes benchmarks/results/<name>.md (figures, the command
that produced them, comparisons side by side) and any plots next to it. Run a subset with
`make bench SECTIONS="optimize serve"`; sections not re-run keep their last committed results.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["finetune", "optimize", "qa", "embeddings", "multitask", "serve", "soak", "generate", "decoder_kernels"]


def main() -> int:
    # `--assemble`: only rebuild BENCHMARKS.md from the committed section results
    wanted = [] if "--assemble" in sys.argv else (os.environ.get("SECTIONS", "").split() or ORDER)
    for name in wanted:
        script = HERE / f"{name}.py"
        if not script.is_file():
            print(f"no benchmark section {name} ({script} missing)", file=sys.stderr)
            return 2
        print(f"== benchmark section: {name}", flush=True)
        rc = subprocess.call([sys.executable, str(script)])
        if rc != 0:
            print(f"section {name} failed with exit code {rc}", file=sys.stderr)
            return rc
    parts = [
        "# deploylm benchmarks\n",
        "Produced by `make bench` (`python benchmarks/run_all.py`; one section: `SECTIONS=optimize make bench`).\n"
        "Each section names the exact command behind its figures and the machine it ran on (read from its own\n"
        "results: sections are re-run separately, and the host behind this project has changed between runs).\n"
        "Comparisons are run side by side in the same script and reported as ratios, because the machine is\n"
        "shared and noisy.\n",
    ]
    for name in ORDER:
        res = HERE / "results" / f"{name}.md"
        if res.is_file():
            # section files link their plots relative to results/; BENCHMARKS.md sits at the repo root
            text = re.sub(r"\]\((?!https?:|/)([^)]+\.png)\)", r"](benchmarks/results/\1)", res.read_text())
            parts.append(text.rstrip() + "\n")
    (HERE.parent / "BENCHMARKS.md").write_text("\n".join(parts))
    print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
