"""Library noise goes to a log file, not the user's terminal (unless --verbose or DEPLOYLM_VERBOSE=1).

transformers' load reports, torch's tracer warnings and onnxruntime's advice are for library developers; a user of
deploylm reads deploylm's own lines and its progress bars. Python warnings and the library loggers are written to
one file per command (settings.log_file()), and the command names that file at the end if anything went there.
Errors are not noise: deploylm's own errors and any traceback still reach the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Iterator

LIBRARY_LOGGERS = ("onnxruntime", "onnxscript", "torch", "datasets", "huggingface_hub", "accelerate",
                   "urllib3", "root_onnx")  # transformers: its own logging module, see _quiet_transformers


@contextlib.contextmanager
def library_noise_to(path: Path | None) -> Iterator[list[int]]:
    """Within the block, library warnings and log records go to `path` (None: leave them as they are). Yields a
    one-item list holding how many were written."""
    count = [0]
    if path is None:
        yield count
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w", encoding="utf-8")
    saved_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        count[0] += 1
        handle.write(warnings.formatwarning(message, category, filename, lineno, line))
        handle.flush()

    class _ToFile(logging.Handler):
        def emit(self, record):
            count[0] += 1
            handle.write(self.format(record) + "\n")
            handle.flush()

    handler = _ToFile(logging.INFO)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    saved = {}
    # The root logger too: libraries call logging.warning() (onnxruntime's quantiser does), which would otherwise
    # install a stderr handler on it (logging.basicConfig).
    for name in ("", *LIBRARY_LOGGERS):
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers = [handler]
        logger.propagate = False
    warnings.showwarning = show
    restore_transformers = _quiet_transformers(handler)
    try:
        yield count
    finally:
        restore_transformers()
        warnings.showwarning = saved_show
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        handle.close()


def _quiet_transformers(handler: logging.Handler):
    """transformers installs its own stderr handler on its root logger; its records go to our file instead.
    Returns what undoes that."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return lambda: None
    hf_logging.disable_default_handler()
    hf_logging.add_handler(handler)
    # Its "Loading weights" / "Writing model shards" bars too (transformers 5 draws one per load and save);
    # Trainer's bar is plain tqdm, not this switch, and stays.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()

    def restore() -> None:
        hf_logging.remove_handler(handler)
        hf_logging.enable_default_handler()
        if bars:
            hf_logging.enable_progress_bar()

    return restore
