"""`fit`: check the data, lay out the run folder, train with Lightning, record what happened."""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

from .classes import label_space
from .config import Config, Trainer, duration_seconds, save_config
from .errors import LesionPLError
from .hardware import probed_rates, resolve_auto
from .io import atomic_path, atomic_write_json
from .provenance import code_revision
from .run import RunDir
from .tracking import finish_ensemble_run, fit_loggers, start_ensemble_run


def _max_time(value):
    from datetime import timedelta

    seconds = duration_seconds(value)
    return timedelta(seconds=seconds) if seconds else None


def build_trainer(t: Trainer, run: RunDir, progress: bool = True, started: float | None = None,
                  loggers: list | None = None):
    """fit's Lightning Trainer for the trainer section `t` (its precision resolved): checkpoints, early stopping,
    the learning rate and elapsed time in the log, the per-step EMA; `loggers`: tracking.fit_loggers' (None: the
    CSV log alone)."""
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from .callbacks import ElapsedTime, EpochLine

    # Lightning 2.6 still builds torch's deprecated LeafSpec on every batch: a FutureWarning in every log
    # that no user can act on
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # and its model summary cannot size a bf16 model: a warning, with a file path, in every bf16 fit
    warnings.filterwarnings("ignore", message="Precision bf16-mixed is not supported by the model summary")
    monitor = "val/balanced_accuracy"
    callbacks = [
        ModelCheckpoint(dirpath=run.checkpoints, filename="best", monitor=monitor, mode="max",
                        save_top_k=1, auto_insert_metric_name=False),
        # last.ckpt, what --resume continues from: every epoch's, by a callback of its own, since Lightning 2.6's
        # save_last writes it only when a best checkpoint is written (so it was the best epoch, not the last)
        ModelCheckpoint(dirpath=run.checkpoints, filename=run.last.stem, monitor=None, save_top_k=1,
                        enable_version_counter=False),
        EarlyStopping(monitor=monitor, mode="max", patience=int(t.patience),
                      stopping_threshold=float(t.stop_at) if t.stop_at is not None else None),
        LearningRateMonitor(logging_interval="epoch"),
        ElapsedTime(started or time.time()),
    ]
    if progress and not sys.stdout.isatty():  # a file or a CI log: Lightning's bar draws nothing there
        callbacks.append(EpochLine(started or time.time(), duration_seconds(t.max_time)))
    callbacks += step_callbacks(t)
    return _trainer(
        t, max_epochs=int(t.max_epochs), max_time=_max_time(t.max_time),
        callbacks=callbacks, logger=loggers or CSVLogger(run.path, name="logs", version=""),
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        enable_progress_bar=progress, enable_model_summary=progress, log_every_n_steps=10,
        num_sanity_val_steps=0, deterministic=False,
    )


def step_callbacks(t: Trainer) -> list:
    """What `fit` does on every training step besides the step itself: the exponential moving average of the
    weights (validation, checkpoints and everything after them use the averaged weights). The speed benchmarks
    time a step with these, so that they time fit's step."""
    from pytorch_lightning.callbacks import EMAWeightAveraging

    decay = t.ema_decay
    return [EMAWeightAveraging(decay=float(decay))] if decay else []


class _NoNoise(logging.Filter):
    """Drops Lightning's notes that tell a lesion-pl user nothing: an advertisement for its cloud logger,
    that 100% of the batches will be used, that it loads the training data to count the steps."""

    NOISE = ("💡 Tip", "was configured so 100% of the batches", "Loading `train_dataloader` to estimate")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in str(record.msg) for n in self.NOISE)


def _trainer(t: Trainer, quiet: bool = False, **kwargs):
    """A Lightning Trainer on the config's hardware; a one-line error where Lightning refuses it (a strategy
    it does not have, a GPU the machine does not have). `quiet`: without Lightning's notes on the hardware."""
    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    notes = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _NoNoise) for f in notes.filters):
        notes.addFilter(_NoNoise())
    level = notes.level
    if quiet:
        notes.setLevel(logging.WARNING)
    if t.precision == "auto":
        raise LesionPLError("trainer.precision is auto: resolve it for this machine first (hardware.resolve_auto)")
    try:
        return pl.Trainer(accelerator=t.accelerator, devices=t.devices, num_nodes=int(t.num_nodes),
                          strategy=t.strategy, precision=t.precision, **kwargs)
    except (ValueError, TypeError, ImportError, MisconfigurationException) as e:
        raise LesionPLError(f"Lightning refused trainer.accelerator={t.accelerator}, devices={t.devices}, "
                            f"strategy={t.strategy}: {str(e).splitlines()[0]}") from None
    finally:
        notes.setLevel(level)


def fit(cfg: Config, out: Path, resume: bool = False, progress: bool = True) -> dict | None:
    """Train `cfg` into run folder `out`; returns the summary also written to summary.json.

    With several processes (DDP), Lightning starts the others once this one has built the split and
    the cache, so they read both; only global rank 0 writes the summary and calibrates (the others
    return None). With `trainer.members` > 1 the members train one after another (seeds seed,
    seed + 1, ...) into members/0, members/1, ..., each a run folder of its own, sharing the split,
    the cache and the `trainer.max_time` budget; the ensemble is calibrated as one model.
    """
    started = time.time()  # elapsed times in the log count from here, imports and data checks included
    import pytorch_lightning as pl

    chosen = [k for k, v in (("data.image_size", cfg.data.image_size),
                             ("trainer.precision", cfg.trainer.precision)) if v == "auto"]

    from .data.datamodule import LesionDataModule

    run = RunDir(Path(out))
    members = member_count(cfg, run, resume)
    if members > 1 and (str(cfg.trainer.devices) != "1" or int(cfg.trainer.num_nodes) > 1):
        raise LesionPLError(f"trainer.members={members} trains its members one after another in one process; "
                            "with several devices or machines, fit each member as a run of its own")
    if resume and cfg.trainer.budget is not None:
        raise LesionPLError(f"--resume continues {out} with the training time its config.yaml names; "
                            "drop trainer.budget (the run's plan is in its summary.json)")
    trained = run.members + ([run] if run.checkpoints.exists() else [])
    if resume and members == 1:
        run.require(run.last, f"python cli.py fit --out {out}")
    elif resume and not any(r.last.exists() or r.summary.exists() for r in trained):
        raise LesionPLError(f"{run.path / 'members'} holds no member to continue; "
                            f"`python cli.py fit --out {out}` makes them")
    elif not resume and any(r.checkpoints.exists() and any(r.checkpoints.iterdir()) for r in trained):
        raise LesionPLError(f"run folder {out} already holds checkpoints; "
                            "pass --resume to continue it, or choose another --out")
    elif not resume and run.log.exists():  # another run's log, which fit would replace
        raise LesionPLError(f"run folder {out} already holds {Path('logs') / 'metrics.csv'} of another run; "
                            "choose another --out, or pass --resume to continue that run")
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = LesionDataModule(cfg.data, cfg.seed, splits_file=run.splits if run.splits.exists() else None,
                          progress=progress, loss=cfg.loss)
    dm.build_split()  # every data check that needs no image size, before the run folder is written
    plan = _plan(cfg, dm, started) if cfg.trainer.budget is not None else None
    if plan is not None:
        cfg = plan.applied(cfg)
    resolved = resolve_auto(cfg)  # the saved config names the size and precision trained with
    probe = probed_rates(cfg) if "trainer.precision" in chosen and plan is None else None
    cfg = resolved
    dm.data = cfg.data  # the size is known now: the cache is built at it
    dm.build()  # the rest of the data checks
    require_full_batch(len(dm.indices("train")), int(cfg.data.batch_size), dm.root)
    if plan is not None:  # what is left of the budget once the images are cached, less calibration's share
        left = round(plan.training_seconds(started))
        if left < plan.chosen.seconds_per_epoch:
            raise LesionPLError(f"trainer.budget {plan.as_dict()['budget']} is spent before training: "
                                f"{time.time() - started:.0f} s went to the data checks and caching the images "
                                f"(kept for the next fit) and ~{plan.calibration_s:.0f} s are calibration's; "
                                "give a larger budget")
        cfg.trainer.max_time = left
    if progress:
        timed = (f"; bf16 {probe['bf16-mixed']:.0f} vs fp32 {probe['32-true']:.0f} images/s here, timed "
                 f"{probe['timed']} and kept for this machine") if probe else ""
        note = f" ({' and '.join(chosen)}: auto, this machine's choice{timed})" if chosen and plan is None else ""
        if plan is not None:
            print(plan.line(), flush=True)
            note = f" for {cfg.trainer.max_time:.0f} s (trainer.max_time, from the budget)"
        print(f"training {cfg.model.name} at {cfg.data.image_size} px in {cfg.trainer.precision}{note}",
              flush=True)

    # a trainer Lightning refuses, a bad time limit, an unknown network or unreadable weights: all refused
    # before the run folder is written
    _trainer(cfg.trainer, quiet=True, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    _max_time(cfg.trainer.max_time)
    from .models import build_network
    net = build_network(cfg.model, label_space(cfg.data).num_classes)
    if resume and members == 1:
        _require_readable(run.last)
    from .data.splits import write_splits
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config)
    if not run.splits.exists():
        write_splits(dm.table, dm.split, run.splits)

    if members == 1:
        summary = _train(cfg, run, dm, resume, progress, started, net)
        if summary is None:
            return None
    else:
        summary = _train_members(cfg, run, dm, members, progress, started)
    if plan is not None:
        summary["plan"] = {**plan.as_dict(), "max_time_s": cfg.trainer.max_time}
    if plan is not None or members > 1:
        atomic_write_json(run.summary, summary)
    if all(p.exists() for p in run.best_checkpoints):
        from .evaluate.calibrate import calibrate_run
        summary["calibration"] = calibrate_run(run.path, progress=progress, dm=dm)
        if members > 1:  # the ensemble's validation figures exist only once it is calibrated
            cal = summary["calibration"]
            summary["best_val_balanced_accuracy"] = cal["val_balanced_accuracy"]
            summary["best_val_metrics"] = {"balanced_accuracy": round(cal["val_balanced_accuracy"], 4),
                                           "auroc_malignant": round(cal["val_auroc_malignant"], 4),
                                           "scored": "calibrated ensemble"}
            atomic_write_json(run.summary, {k: v for k, v in summary.items() if k != "calibration"})
            finish_ensemble_run(run, summary["best_val_metrics"])  # where the ensemble has an MLflow run
    if plan is not None:  # the budget kept or not, calibration included
        summary["plan"]["fit_wall_s"] = round(time.time() - started, 1)
        atomic_write_json(run.summary, {k: v for k, v in summary.items() if k != "calibration"})
        if progress:
            print(f"fit took {summary['plan']['fit_wall_s'] / 60:.1f} min of its {plan.budget_s / 60:.1f}-minute "
                  "budget", flush=True)
    return summary


def _plan(cfg: Config, dm, started: float):
    """`trainer.budget`'s plan for this data (plan.plan_budget), counting the epoch's images as `fit` will."""
    from .data.cache import seconds_to_cache
    from .plan import epoch_images, plan_budget

    t = cfg.trainer
    train, val = epoch_images(len(dm.indices("train")), len(dm.indices("val")), int(cfg.data.batch_size),
                              float(t.limit_train_batches), float(t.limit_val_batches))
    paths = dm.table["path"].tolist()
    return plan_budget(cfg, started, train, val, lambda size: seconds_to_cache(paths, size, cfg.data.cache_dir))


def require_full_batch(train_images: int, batch_size: int, root) -> None:
    """Training drops the last partial batch (so that batch norm never sees one image): a train split smaller than
    one batch would train nothing and leave no checkpoint."""
    if train_images < batch_size:
        raise LesionPLError(f"the train split of {root} has {train_images} images, fewer than one batch "
                            f"(data.batch_size {batch_size}), so nothing would be trained: pass --set "
                            f"data.batch_size={max(1, train_images // 2)} or use more images")


def member_count(cfg: Config, run: RunDir, resume: bool) -> int:
    """How many models `fit` trains; a run resumed from a top-level last.ckpt is one model, whatever
    the default (runs made before `trainer.members` existed have no such key)."""
    if resume and run.last.exists():
        return 1
    return int(cfg.trainer.members)


def _member_config(cfg: Config, i: int, budget_left: float | None, members_left: int) -> Config:
    """Member i: the run's config with seed + i, trained as one model, with its share of the time left."""
    member = cfg.model_copy(deep=True)
    member.seed = int(cfg.seed) + i
    member.trainer.members = 1
    if budget_left is not None:
        member.trainer.max_time = round(max(60.0, budget_left / members_left))
    return member


def _train_members(cfg: Config, run: RunDir, dm, members: int, progress: bool, started: float) -> dict:
    """Train (or finish, on --resume) each member in turn; the ensemble's summary."""
    import pytorch_lightning as pl

    budget = duration_seconds(cfg.trainer.max_time)
    start_ensemble_run(cfg, run)  # where mlflow logs: the ensemble's own run, its members nested under it
    done = []
    for i in range(members):
        member = run.member(i)
        if member.summary.exists():  # trained before a --resume
            done.append(json.loads(member.summary.read_text()))
            continue
        left = None if budget is None else budget - sum(d["fit_seconds"] for d in done)
        mcfg = _member_config(cfg, i, left, members - i)
        member.path.mkdir(parents=True, exist_ok=True)
        save_config(mcfg, member.config)
        shutil.copy(run.splits, member.splits)
        if progress:
            print(f"member {i + 1} of {members} (seed {mcfg.seed}) -> {member.path}", flush=True)
        pl.seed_everything(int(mcfg.seed), workers=True, verbose=False)
        # the same data; the sampler draws with the member's seed
        summary = _train(mcfg, member, dm.for_seed(mcfg.seed), member.last.exists(), progress, started)
        done.append(summary)
    first = done[0]
    epochs = sum(d["epochs"] for d in done)
    fit_seconds = round(sum(d["fit_seconds"] for d in done), 1)
    return {
        **{k: first[k] for k in ("data_root", "images", "left_out", "rows_kept", "sources", "skipped_bad_images",
                                 "split_note", "model", "image_size", "precision", "code_revision")},
        "members": [{"run": str(Path("members") / str(i)), "seed": int(cfg.seed) + i,
                     **{k: d[k] for k in ("epochs", "best_epoch", "best_val_balanced_accuracy", "fit_seconds",
                                          "seconds_per_epoch")}} for i, d in enumerate(done)],
        "epochs": epochs,
        "best_epoch": [d["best_epoch"] for d in done],
        "best_val_balanced_accuracy": None,  # the ensemble's: filled in by its calibration
        "best_val_metrics": {},
        "fit_seconds": fit_seconds,
        "seconds_per_epoch": round(fit_seconds / max(1, epochs), 1),
        "train_mean": first["train_mean"],
        "train_std": first["train_std"],
    }


def _train(cfg: Config, run: RunDir, dm, resume: bool, progress: bool, started: float, net=None) -> dict | None:
    """One model trained into `run` (checkpoints, logs, summary.json); its summary (None off rank 0). `net`: the
    network fit already built (and so checked); None: built from `cfg` (an ensemble's members, each its seed)."""
    from .models.factory import normalization_stats
    from .module import LesionClassifier

    groups = dm.groups()
    model = LesionClassifier(cfg, *normalization_stats(cfg.model, dm.train_stats), dm.class_weights(cfg.loss),
                             dm.sampled_class_prior(), net=net,
                             groups=None if groups is None else list(groups.categories))
    mean, std = model.hparams["mean"], model.hparams["std"]
    loaded = model.net.loaded_weights
    if progress and loaded is not None:
        print(loaded.describe(), flush=True)
    log = run.log
    backup = log.with_name("metrics.before-resume.csv")
    before, epochs_before = 0.0, 0  # trained before this resume: the log's elapsed time and validated epochs
    if resume:
        if backup.exists():  # an earlier resume was killed: its epochs and those before it, as one log
            _merge_logs(backup, log)
        if log.exists():
            shutil.copy(log, backup)  # Lightning's CSVLogger starts metrics.csv afresh
            before, epochs_before = _elapsed_in(backup), _validated_epochs(backup)
    # elapsed time runs on across resumes
    trainer = build_trainer(cfg.trainer, run, progress, started - before, fit_loggers(cfg, run))
    start = time.time()
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=str(run.last) if resume else None)
    finally:  # finished or failed, the log holds every epoch once (a kill -9 is merged by the next resume)
        if backup.exists() and trainer.is_global_zero:
            _merge_logs(backup, log)
            backup.unlink()
    wall = time.time() - start
    if not trainer.is_global_zero:
        return None

    ckpt_cb = next(c for c in trainer.checkpoint_callbacks if c.monitor)  # best.ckpt's (last.ckpt's has none)
    summary = {
        "data_root": str(dm.root),
        "images": {s: int((dm.split == s).sum()) for s in ("train", "val", "test")},
        "left_out": dm.table.attrs.get("dropped", {}),
        "rows_kept": dm.table.attrs.get("where"),  # data.where: the rule, rows kept and left out
        "sources": dm.table.attrs.get("sources"),  # data.sources: each archive's root, format and images
        "skipped_bad_images": dm.skipped,
        "split_note": dm.table.attrs.get("note"),  # e.g. a source without groups: the split may leak
        "model": cfg.model.name,
        "image_size": int(cfg.data.image_size),
        "precision": cfg.trainer.precision,  # what "auto" meant on the machine that trained
        "epochs": int(trainer.current_epoch),
        "best_epoch": _best_epoch(run),
        "best_val_balanced_accuracy": float(ckpt_cb.best_model_score) if ckpt_cb.best_model_score is not None else None,
        "best_val_metrics": _val_metrics_at(run, _best_epoch(run)),
        "fit_seconds": round(wall + before, 1),  # across resumes
        "seconds_per_epoch": round(wall / max(1, trainer.current_epoch - epochs_before), 1),
        "train_mean": mean,  # the statistics the inputs were normalised with (the weights' own, if pretrained)
        "train_std": std,
        "weights": loaded.source if loaded is not None else None,
        "code_revision": code_revision(),  # the code that trained it (the model card names it)
    }
    atomic_write_json(run.summary, summary)
    return summary


def _read_log(path: Path):
    """metrics.csv as a table; an empty one (a run killed before it logged) as no rows."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame({"epoch": []})
    return table if "epoch" in table else pd.DataFrame({"epoch": []})


def _merge_logs(before: Path, log: Path) -> None:
    """The epochs logged before a resume, then everything logged since, as one metrics.csv (an epoch logged
    again after the resume replaces its earlier rows, so each epoch is there once)."""
    import pandas as pd

    old, new = _read_log(before), _read_log(log)
    first = new["epoch"].min() if new["epoch"].notna().any() else float("inf")
    kept = old[old["epoch"].isna() | (old["epoch"] < first)] if len(new) else old
    merged = pd.concat([kept, new], ignore_index=True) if len(new) else kept
    with atomic_path(log) as tmp:
        merged.to_csv(tmp, index=False)


def _elapsed_in(log: Path) -> float:
    """The last elapsed time a log recorded (0 without one)."""
    table = _read_log(log)
    column = table.get("time/elapsed_s")
    return float(column.max()) if column is not None and column.notna().any() else 0.0


def _validated_epochs(log: Path) -> int:
    """How many epochs the log holds a validation for."""
    table = _read_log(log)
    if "val/balanced_accuracy" not in table:
        return 0
    return int(table.loc[table["val/balanced_accuracy"].notna(), "epoch"].nunique())


def _require_readable(last: Path) -> None:
    """--resume needs a last.ckpt that loads; one line naming it otherwise (before anything is touched)."""
    from .safe_load import torch_load

    hint = "; without --resume, fit into a new --out"
    try:
        ckpt = torch_load(last, "the checkpoint to resume from,")
    except LesionPLError as e:
        raise LesionPLError(f"{e}{hint}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        raise LesionPLError(f"cannot read the checkpoint to resume from, {last}: not a Lightning checkpoint{hint}")


def _best_epoch(run: RunDir) -> int | None:
    import torch

    if not run.best.exists():
        return None
    return int(torch.load(run.best, map_location="cpu", weights_only=True)["epoch"])


def _val_metrics_at(run: RunDir, epoch: int | None) -> dict:
    """The validation metrics logged for `epoch` (from logs/metrics.csv)."""
    import pandas as pd

    log = run.log
    if epoch is None or not log.exists():
        return {}
    df = pd.read_csv(log)
    rows = df[(df["epoch"] == epoch) & df["val/balanced_accuracy"].notna()] if "val/balanced_accuracy" in df else df[:0]
    if rows.empty:
        return {}
    row = rows.iloc[-1]
    return {k[4:]: round(float(row[k]), 4) for k in df.columns if k.startswith("val/") and pd.notna(row[k])}
