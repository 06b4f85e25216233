"""Where a training step's time goes: torch.profiler over `fit`'s training steps (its size, precision and
per-step EMA; validation and checkpoints, once an epoch, left out) on the real images.

    python benchmarks/profile_train.py [--steps 10] [--rows 15] [--set key=value ...]

Prints the operators with the most self CPU time (forward and backward convolutions, batch norm,
pooling, the optimiser, the batched augmentation, the loader's copies) for the default config.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import describe  # noqa: E402  (the script's own folder is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="profiled training steps")
    ap.add_argument("--rows", type=int, default=15, help="operators shown in the table")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = ap.parse_args()

    import pytorch_lightning as pl
    from torch.profiler import ProfilerActivity, profile

    from lesion_pl.config import load_config
    from lesion_pl.data.datamodule import LesionDataModule
    from lesion_pl.hardware import resolve_auto
    from lesion_pl.module import LesionClassifier
    from lesion_pl.training import step_callbacks

    cfg = resolve_auto(load_config(None, ["trainer.accelerator=cpu", *args.overrides]))  # fit's size and precision
    dm = LesionDataModule(cfg.data, cfg.seed, progress=False).build()
    model = LesionClassifier(cfg, *dm.train_stats())

    def trainer_for(steps: int):  # fit's step: its precision and its per-step EMA; no validation or checkpoints
        return pl.Trainer(accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=False,
                          precision=cfg.trainer.precision, callbacks=step_callbacks(cfg.trainer),
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer_for(3).fit(model, datamodule=dm)  # warm-up
    trainer = trainer_for(args.steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.fit(model, datamodule=dm)
    print(f"{describe()}; config: configs/ham10000.yaml "
          f"{' '.join('--set ' + o for o in args.overrides)} ({cfg.data.image_size} px, "
          f"{cfg.trainer.precision}); {args.steps} of fit's training steps, with its EMA")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
