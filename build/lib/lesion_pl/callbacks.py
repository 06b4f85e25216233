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
