"""`deploylm generate` and `deploylm bench-generate`, registered into the main Typer app by cli.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("bench-generate")(bench_generate)


def open_engine(artifact: Path, kv_tokens: int | None = None, max_num_seqs: int = 64, prefix_caching: bool = True):
    """A started DecoderEngine over a decoder artifact (checksums verified), for the CLI and benchmarks."""
    from ..artifacts import Artifact
    from ..errors import ConfigError
    from ..runtime.decoder_runner import TorchDecoderRunner
    from .engine import DecoderEngine
    from .scheduler import SchedulerConfig

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-load bar of a sub-second load is noise in a terminal
    art = Artifact.open(artifact)
    if art.task != "text-generation":
        raise ConfigError(f"{artifact} is a {art.task} artifact; generate needs a decoder (made by `deploylm import`).")
    runner = TorchDecoderRunner.from_artifact(art)
    cfg = SchedulerConfig(kv_tokens=kv_tokens or 65536, max_num_seqs=max_num_seqs,
                          max_step_tokens=max(512, max_num_seqs), prefix_caching=prefix_caching)
    return DecoderEngine(runner, runner.tokenizer, cfg, name=art.name).start()


def _prompt_ids(engine, prompt: str, chat: bool, system: str | None, chat_template: Path | None) -> list[int]:
    from ..tasks.generation import build_chat_prompt, encode_completion_prompt, require_chat_template

    if not chat:
        if system:
            from ..errors import ConfigError

            raise ConfigError("--system applies to chat prompts only: add --chat.")
        return encode_completion_prompt(engine.tokenizer, prompt)
    template = chat_template.read_text() if chat_template else None
    require_chat_template(engine.tokenizer, engine.name, template)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return build_chat_prompt(engine.tokenizer, messages, chat_template=template, model_name=engine.name)


def generate(
    artifact: Path = typer.Argument(..., help="decoder artifact (deploylm import / quantize)"),
    prompt: str = typer.Argument(..., help="the prompt (a user message with --chat)"),
    chat: bool = typer.Option(False, "--chat", help="apply the model's chat template"),
    system: Optional[str] = typer.Option(None, help="system message (with --chat)"),
    chat_template: Optional[Path] = typer.Option(None, help="Jinja chat template file for a model without one"),
    max_tokens: int = typer.Option(128, min=1),
    temperature: float = typer.Option(0.0, help="0: greedy"),
    top_p: float = typer.Option(1.0),
    top_k: int = typer.Option(0),
    seed: Optional[int] = typer.Option(None),
    stop: Optional[List[str]] = typer.Option(None, "--stop", help="stop string (repeatable)"),
) -> None:
    """Generate from a decoder artifact, streaming text to the terminal as it is produced."""
    import time

    from rich.console import Console

    from .params import validate_params
    from .types import GenerationRequest, SamplingParams

    err = Console(stderr=True)
    with err.status("loading the model"):
        engine = open_engine(artifact, kv_tokens=None, max_num_seqs=1)
    try:
        ids = _prompt_ids(engine, prompt, chat, system, chat_template)
        params = validate_params(SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                                top_k=top_k, seed=seed, stop=list(stop or [])),
                                 max_context=engine.max_context, prompt_len=len(ids), vocab_size=engine.vocab_size)
        start, first, count, reason = time.perf_counter(), None, 0, None
        for ev in engine.iterate(GenerationRequest(engine.new_request_id(), ids, params)):
            if ev.error:
                from ..errors import DeployLMError

                raise DeployLMError(f"Generation failed: {ev.error}")
            sys.stdout.write(ev.text)
            sys.stdout.flush()
            first = first or (time.perf_counter() if ev.token_ids else None)
            count, reason = ev.completion_tokens, ev.finish_reason or reason
        end = time.perf_counter()
        sys.stdout.write("\n")
        rate = (count - 1) / (end - first) if first and count > 1 and end > first else 0.0
        err.print(f"[dim]{len(ids)} prompt tokens, {count} generated ({reason}); first token after "
                  f"{((first or end) - start) * 1e3:.0f} ms, then {rate:.1f} tokens/s[/]")
    finally:
        engine.close()


def bench_generate(
    target: str = typer.Argument(..., help="decoder artifact directory, or a server URL (http://127.0.0.1:8000)"),
    model: Optional[str] = typer.Option(None, help="served model name (with a URL)"),
    concurrency: str = typer.Option("1,4,16,64", help="comma-separated concurrent streams"),
    prompt_len: int = typer.Option(128, min=1, help="prompt tokens (slices of SQuAD dev contexts)"),
    max_tokens: int = typer.Option(128, min=1, help="new tokens per request (EOS ignored)"),
    requests_per_stream: int = typer.Option(1, min=1, help="requests each stream sends in a level"),
    compare: str = typer.Option("", help="peers to run too: hf, hf-static, hf-cb, llama-cpp, llama-cpp-q4"),
    api_key_file: Optional[Path] = typer.Option(None),
    tokenizer: Optional[Path] = typer.Option(None, help="with a URL: the served model's tokenizer directory"),
    output: Optional[Path] = typer.Option(None, help="write the results as JSON here"),
) -> None:
    """Generation benchmark: TTFT and inter-token latency p50/p99, per-stream and aggregate tokens/s per level."""
    from rich.console import Console
    from rich.table import Table

    from ..bench.gen_prompts import benchmark_prompts, level_slices
    from ..bench.generate import run_engine_level, run_http_level
    from ..errors import ConfigError

    from ..serving.loadgen import parse_levels

    levels = parse_levels(concurrency)
    slices, total = level_slices(levels, requests_per_stream)
    console = Console()
    results = []
    is_url = target.startswith(("http://", "https://"))
    if is_url:
        if not model:
            raise ConfigError("With a URL, name the served model: --model NAME.")
        from ..serving.server import read_api_key

        key = read_api_key(api_key_file) if api_key_file else None
        texts = _url_prompts(tokenizer, total, prompt_len)
        for c, part in slices:
            results.append(run_http_level(target, model, texts[part], max_tokens, c, c * requests_per_stream, key))
            console.print(_line(results[-1]))
    else:
        engine = open_engine(Path(target), max_num_seqs=max(levels))
        try:
            texts = benchmark_prompts(total, prompt_len, engine.tokenizer)
            ids = [engine.tokenizer(t).input_ids for t in texts]
            run_engine_level(engine, ids[-1:], 8, 1, 1)  # warm-up, on the one prompt no level measures
            for c, part in slices:
                results.append(run_engine_level(engine, ids[part], max_tokens, c, c * requests_per_stream,
                                                system=f"deploylm-{engine.runner.backend}"))
                console.print(_line(results[-1]))
        finally:
            engine.close()
        results += _peers(compare, Path(target), texts[:max(levels) * requests_per_stream], max_tokens, levels,
                          console)
    table = Table("system", "streams", "agg tok/s", "per-stream tok/s", "TTFT p50/p99 ms", "ITL p50/p99 ms", "errors",
                  title=f"bench-generate {target}")
    for r in results:
        table.add_row(r.system, str(r.concurrency), f"{r.aggregate_tok_s:.1f}", f"{r.per_stream_tok_s:.1f}",
                      f"{r.ttft_p50_ms:.0f} / {r.ttft_p99_ms:.0f}", f"{r.itl_p50_ms:.1f} / {r.itl_p99_ms:.1f}",
                      str(r.errors))
    console.print(table)
    if output:
        output.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")


def _line(r) -> str:
    return (f"  {r.system} c={r.concurrency}: {r.aggregate_tok_s:.1f} tok/s aggregate, "
            f"{r.per_stream_tok_s:.1f} per stream, TTFT p50 {r.ttft_p50_ms:.0f} ms")


def _url_prompts(tokenizer_dir: Path | None, n: int, prompt_len: int) -> list[str]:
    """Prompts for a served model, cut with its tokenizer (the server does not expose its artifact's path)."""
    from transformers import AutoTokenizer

    from ..bench.gen_prompts import benchmark_prompts
    from ..errors import ConfigError

    if tokenizer_dir is None:
        raise ConfigError("With a URL, pass --tokenizer DIR (the served artifact, or any directory with its tokenizer) "
                          "so the prompts are cut to --prompt-len tokens of that model.")
    return benchmark_prompts(n, prompt_len, AutoTokenizer.from_pretrained(tokenizer_dir))


def _peers(compare: str, artifact: Path, texts: list[str], max_tokens: int, levels: list[int], console) -> list:
    from ..bench.generate import LevelResult

    out = []
    names = [c.strip() for c in compare.split(",") if c.strip()]
    if not names:
        return out
    from ..bench.generate_peers import run_peer

    for name in names:
        for c in levels:
            doc = run_peer(name, model_dir=artifact, prompts=texts[:c], max_tokens=max_tokens, concurrency=c)
            out.append(LevelResult.from_peer(name, c, doc))
            console.print(_line(out[-1]))
    return out
