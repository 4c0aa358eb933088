"""Artifacts: a directory that transformers/onnxruntime opens by itself, plus manifest.json.

The manifest records stage, config, parent (path + content hash), task, labels, metrics, bench
figures, the sha256 of every file, library versions and the machine. Artifacts are built in a
temporary sibling directory and renamed into place only when complete, so a crash never leaves a
directory that looks like a whole artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ArtifactError
from .machine import library_versions, machine_info

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file under root except the manifest, keyed by POSIX relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".tmp"):
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def content_hash(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


@dataclass
class Artifact:
    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "Artifact":
        p = Path(path)
        if not p.exists():
            raise ArtifactError(f"Artifact {p} does not exist. Pass the directory a deploylm stage wrote.")
        mpath = p / MANIFEST
        if not mpath.is_file():
            raise ArtifactError(
                f"{p} has no {MANIFEST}, so it is not a complete deploylm artifact (an interrupted run, or a plain "
                "model directory). Re-run the stage that makes it, or pass a plain model directory with --model."
            )
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{mpath} is not valid JSON ({exc}); the artifact is damaged. Re-create it.") from None
        art = cls(p, manifest)
        if verify:
            art.verify()
        return art

    def verify(self) -> None:
        """Every file the manifest lists must exist with the recorded sha256."""
        problems = []
        for rel, digest in self.manifest.get("files", {}).items():
            f = self.path / rel
            if not f.is_file():
                problems.append(f"{rel} is missing")
            elif sha256_file(f) != digest:
                problems.append(f"{rel} does not match its recorded sha256 (altered or truncated)")
        if problems:
            raise ArtifactError(
                f"Artifact {self.path} failed its checksum check: {'; '.join(problems)}. "
                "Do not use it: re-create it from its parent or restore the original files."
            )

    # -- convenient views -------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def stage(self) -> str:
        return self.manifest.get("stage", "?")

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels", []))

    @property
    def max_length(self) -> int:
        return int(self.manifest.get("max_length", 128))

    @property
    def format(self) -> str:
        return self.manifest.get("format", "transformers")

    @property
    def hash(self) -> str:
        return self.manifest.get("hash") or content_hash(self.manifest.get("files", {}))

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    def as_parent(self) -> dict:
        return {"path": str(self.path.resolve()), "hash": self.hash, "stage": self.stage}

    def update_manifest(self, section: str, key: str, value: Any) -> None:
        """Record a measurement (metrics/bench) after the fact; files are untouched, so hashes stay valid."""
        self.manifest.setdefault(section, {})[key] = value
        _write_json_atomic(self.path / MANIFEST, self.manifest)

    def lineage(self) -> list[dict]:
        """This artifact's parent chain, nearest first, as far as the parents still exist."""
        chain, parent = [], self.manifest.get("parent")
        seen = set()
        while parent and parent.get("path") not in seen:
            chain.append(parent)
            seen.add(parent.get("path"))
            ppath = Path(parent.get("path", ""))
            if not (ppath / MANIFEST).is_file():
                break
            parent = json.loads((ppath / MANIFEST).read_text()).get("parent")
        return chain


def check_output(output: str | Path, overwrite: bool) -> Path:
    out = Path(output)
    if out.exists() and not overwrite:
        raise ArtifactError(
            f"Output directory {out} already exists. Choose another --output, or pass --overwrite to replace it."
        )
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"Output {out} exists and is a file, not a directory. Choose another --output.")
    return out


def work_dir(out: Path, kind: str) -> Path:
    """A hidden sibling of `out` for in-progress work (`kind`: tmp, old, staging), named after this process so
    that a later run can tell the leftovers of a killed one (`clear_leftovers`) from a live writer's."""
    return out.parent / f".{out.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clear_leftovers(out: Path) -> None:
    """Remove the work directories of writers of `out` that were killed (kill -9 runs no cleanup); a live
    writer's stay. Never touches `out` itself: a whole artifact is only ever replaced by a rename."""
    if not out.parent.is_dir():
        return
    for item in out.parent.glob(f".{out.name}.*-*-*"):
        kind, _, rest = item.name[len(out.name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in ("tmp", "old", "staging") and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(item, ignore_errors=True)


def create_artifact(
    output: str | Path,
    write_files: Callable[[Path], None],
    *,
    stage: str,
    config: dict,
    parent: dict | None,
    task: str,
    labels: list[str],
    max_length: int,
    fmt: str = "transformers",
    metrics: dict | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
) -> Artifact:
    """Build an artifact in a temporary sibling directory, then rename it into place."""
    out = check_output(output, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(out)
    tmp = work_dir(out, "tmp")
    tmp.mkdir()
    try:
        write_files(tmp)
        files = hash_files(tmp)
        if not files:
            raise ArtifactError(f"Stage '{stage}' wrote no files; nothing to save to {out}.")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "stage": stage,
            "format": fmt,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config,
            "parent": parent,
            "task": task,
            "labels": labels,
            "max_length": max_length,
            "metrics": metrics or {},
            "bench": {},
            "files": files,
            "hash": content_hash(files),
            "versions": library_versions(),
            "machine": machine_info(),
            **(extra or {}),
        }
        _write_json_atomic(tmp / MANIFEST, manifest)
        if out.exists():  # --overwrite: move the old one aside first so a crash keeps one whole copy
            old = work_dir(out, "old")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Artifact(out, manifest)
