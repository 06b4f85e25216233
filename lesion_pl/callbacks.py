"""Lightning callbacks of our own (the rest are Lightning's: checkpoints, early stopping, EMA)."""
from __future__ import annotations

import time

import pytorch_lightning as pl


class ElapsedTime(pl.Callback):
    """Logs `time/elapsed_s`, seconds since `fit` started (data checks and caching included), with
    every validation, so metrics.csv shows accuracy against wall-clock time."""

    def __init__(self, started: float):
        self.started = started

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("time/elapsed_s", time.time() - self.started, rank_zero_only=True)


class EpochLine(pl.Callback):
    """One line per epoch where output goes to a file or a CI log, where Lightning's bar draws nothing: the epoch,
    the time so far and per epoch, the train loss, validation's balanced accuracy and malignant AUROC, the best so
    far, and about how long is left (the epochs left, or trainer.max_time where that ends it sooner)."""

    def __init__(self, started: float, max_time_s: float | None, stream=None):
        import sys

        self.started, self.max_time_s, self.stream = started, max_time_s, stream or sys.stdout
        self.best, self.best_epoch, self.train_start = None, None, None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_start, self.first_epoch = time.time(), trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        epoch, done = trainer.current_epoch, trainer.current_epoch + 1 - self.first_epoch
        now = time.time()
        per_epoch = (now - self.train_start) / max(1, done)
        bal = m.get("val/balanced_accuracy")
        if bal is not None and (self.best is None or bal > self.best):
            self.best, self.best_epoch = bal, epoch
        left = (trainer.max_epochs - epoch - 1) * per_epoch if trainer.max_epochs and trainer.max_epochs > 0 else None
        if self.max_time_s:
            budget = self.max_time_s - (now - self.started)
            left = budget if left is None else min(left, budget)
        parts = [f"epoch {epoch + 1}/{trainer.max_epochs}", f"{(now - self.started) / 60:.1f} min",
                 f"{per_epoch:.0f} s/epoch"]
        if "train/loss_epoch" in m:
            parts.append(f"train loss {m['train/loss_epoch']:.3f}")
        if bal is not None:
            parts.append(f"val balanced accuracy {bal:.4f}")
        if "val/auroc_malignant" in m:
            parts.append(f"malignant AUROC {m['val/auroc_malignant']:.4f}")
        if self.best is not None:
            parts.append(f"best {self.best:.4f} (epoch {self.best_epoch + 1})")
        if left is not None:
            parts.append(f"at most {max(0.0, left) / 60:.0f} min left")
        print("  ".join(parts), file=self.stream, flush=True)
