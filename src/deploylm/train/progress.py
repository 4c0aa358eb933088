"""Trainer's own tqdm bar shows steps/s only; users want the loss and samples/s on it."""

from __future__ import annotations

import time

from transformers.trainer_callback import ProgressCallback


class LossThroughputCallback(ProgressCallback):
    """Replaces Trainer's ProgressCallback: same bar, with loss and samples/s as its postfix.
    samples_per_step: when one Trainer item is a whole batch (train/multi.py), the batch size; else Trainer's."""

    def __init__(self, samples_per_step: int | None = None):
        super().__init__()
        self.samples_per_step = samples_per_step

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self._t0, self._step0 = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and self.training_bar is not None:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            per_step = self.samples_per_step or args.per_device_train_batch_size
            rate = (state.global_step - self._step0) * per_step / elapsed
            self.training_bar.set_postfix(loss=f"{float(logs['loss']):.4f}", samples_s=f"{rate:.1f}")
            return  # the postfix replaces the dict Trainer would print under the bar
        super().on_log(args, state, control, logs=logs, **kwargs)
