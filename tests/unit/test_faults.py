"""Faults with real processes: `kill -9` while an artifact is written, and while fine-tuning (then `--resume`).

Each child process announces on stdout that it reached the point to kill it at, then blocks on stdin; the test
kills it there with SIGKILL (no cleanup handler runs), so nothing orders events by sleeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deploylm.artifacts import Artifact, create_artifact
from deploylm.errors import ArtifactError
from deploylm.train import finetune as ft

SRC = str(Path(__file__).resolve().parents[2] / "src")

WRITER = textwrap.dedent("""
    import sys
    from deploylm.artifacts import create_artifact

    def write(tmp):
        (tmp / "model.bin").write_bytes(b"x" * (1 << 20))  # half of what a real stage would write
        print("WRITING", flush=True)
        sys.stdin.read()  # killed here

    create_artifact(sys.argv[1], write, stage="t", config={}, parent=None, task="classification",
                    labels=["a", "b"], max_length=8, overwrite=True)
""")


def _start(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)


def _kill_when(proc: subprocess.Popen, marker: str) -> None:
    for line in proc.stdout:
        if line.strip() == marker:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL
            return
    raise AssertionError(f"the child exited (rc {proc.wait()}) before printing {marker}")


def _make(path: Path, payload: bytes) -> Artifact:
    return create_artifact(path, lambda tmp: (tmp / "model.bin").write_bytes(payload), stage="t", config={},
                           parent=None, task="classification", labels=["a", "b"], max_length=8)


def test_kill_9_mid_write_leaves_nothing_that_looks_like_an_artifact(tmp_path):
    out = tmp_path / "art"
    _kill_when(_start(WRITER, str(out)), "WRITING")
    assert not out.exists()
    with pytest.raises(ArtifactError, match="does not exist"):
        Artifact.open(out)
    # The half-written directory is hidden; the next run at the same path clears it and succeeds.
    assert [p.name.startswith(".art.tmp-") for p in tmp_path.iterdir()] == [True]
    alive = tmp_path / f".art.tmp-{os.getpid()}-0000"  # a live writer's work (this process): kept
    alive.mkdir()
    assert _make(out, b"whole").path == out
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "art"]


def test_kill_9_mid_overwrite_keeps_the_old_artifact_whole(tmp_path):
    out = tmp_path / "art"
    old = _make(out, b"the old model")
    _kill_when(_start(WRITER, str(out)), "WRITING")
    again = Artifact.open(out)  # checksums verified
    assert again.hash == old.hash and (out / "model.bin").read_bytes() == b"the old model"
    assert _make(out.with_name("other"), b"y").path.exists()  # another output's run leaves art's leftovers
    assert any(p.name.startswith(".art.tmp-") for p in tmp_path.iterdir())


FINETUNE = textwrap.dedent("""
    import sys
    import torch
    from transformers import TrainerCallback
    from deploylm.config import FinetuneConfig
    from deploylm.train import finetune as ft

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 11:  # three steps past the epoch-1 checkpoint
                print("STEP 11", flush=True)
                sys.stdin.read()  # killed here

    ft.LossThroughputCallback = Stop
    torch.set_num_threads(int(sys.argv[4]))  # the parent's: another thread count sums in another order
    cfg = FinetuneConfig(model=sys.argv[1], data=sys.argv[2], task="classification", epochs=2, batch_size=8,
                         learning_rate=1e-3, max_length=32, logging_steps=2)
    ft.finetune(cfg, sys.argv[3])
""")


def _weights(art: Artifact) -> dict[str, torch.Tensor]:
    return load_file(str(art.path / "model.safetensors"))


def test_kill_9_during_finetune_then_resume_equals_an_uninterrupted_run(tiny_cls, sst2_dir, tmp_path):
    from deploylm.config import FinetuneConfig

    cfg = FinetuneConfig(model=str(tiny_cls.path), data=str(sst2_dir), task="classification", epochs=2,
                         batch_size=8, learning_rate=1e-3, max_length=32, logging_steps=2)
    whole = ft.finetune(cfg, tmp_path / "whole")
    out = tmp_path / "resumed"
    _kill_when(_start(FINETUNE, str(tiny_cls.path), str(sst2_dir), str(out), str(torch.get_num_threads())), "STEP 11")
    assert not out.exists() and (ft.checkpoint_dir(out) / "checkpoint-8").is_dir()
    resumed = ft.finetune(cfg, out, resume=True)
    assert resumed.manifest["training"]["resumed"] is True
    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, f"resumed weights differ from the uninterrupted run by up to {worst}"
    assert resumed.metrics["sst2mini:dev"] == whole.metrics["sst2mini:dev"] or \
        resumed.metrics["sst2mini:dev"]["accuracy"] == whole.metrics["sst2mini:dev"]["accuracy"]
