"""Decoder runner steps on the loading thread vs a second thread, in one process (the engine steps on its own
thread): median ms per one-stream decode step of an artifact, alternating main / second thread.

    python benchmarks/decoder_thread_ab.py runs/bench/smollm2-weight-int8 [--rounds 2]
"""
import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from deploylm.artifacts import Artifact
    from deploylm.generation.types import SeqChunk, StepBatch
    from deploylm.runtime.decoder_runner import TorchDecoderRunner

    runner = TorchDecoderRunner.from_artifact(Artifact.open(args.artifact))
    ctx = 128

    def run(tag: str) -> None:
        runner.step(StepBatch(chunks=[SeqChunk(7, [1] * ctx, 0, True)], reserve={7: 1024}))
        times = []
        for p in range(30):
            t0 = time.perf_counter()
            runner.step(StepBatch(chunks=[SeqChunk(7, [5], ctx + p, True)]))
            times.append(time.perf_counter() - t0)
        runner.step(StepBatch([], free=[7]))
        print(f"{tag}: median {statistics.median(times[3:]) * 1e3:.1f} ms per step", flush=True)

    for r in range(args.rounds):
        run(f"round {r + 1} loading thread")
        t = threading.Thread(target=run, args=(f"round {r + 1} second thread",))
        t.start()
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
