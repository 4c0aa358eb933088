"""Trainer's own tqdm bar shows steps/s; users want loss and samples/s on it."""

from __future__ import annotations

import time

from transformers import TrainerCallback


class LossThroughputCallback(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        self._t0, self._step0 = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        bar = None
        for cb in kwargs.get("callback_handler", None).callbacks if kwargs.get("callback_handler") else []:
            bar = getattr(cb, "training_bar", None) or bar
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        rate = (state.global_step - self._step0) * args.per_device_train_batch_size / elapsed
        if bar is not None:
            bar.set_postfix(loss=f"{logs['loss']:.4f}", samples_s=f"{rate:.1f}")
