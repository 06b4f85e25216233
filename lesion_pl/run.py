"""The run folder: where `fit` writes and every later command reads.

runs/NAME/config.yaml, splits.csv, summary.json, checkpoints/{best,last}.ckpt, logs/metrics.csv,
test/{metrics.json, predictions.csv, confusion_matrix.png, roc.png} (the run's own test split),
evaluations/NAME/ (the same for another source or split, one folder each). An ensemble (trainer.members > 1)
keeps each member as a run folder of its own, members/0, members/1, ..., in place of checkpoints/ and
logs/; the calibration, test and export of the ensemble live at the top.
"""
from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LesionPLError

if TYPE_CHECKING:
    from .config import Config


def check_evaluation_name(name: str) -> None:
    """An evaluation's name is one plain folder name: never a path that leaves evaluations/."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise LesionPLError(f"evaluation name '{name}' must be a plain folder name (no '/', not starting with '.')")


def require_data_keys(overrides) -> None:
    """An evaluation's `--set` items may only say how to read its data (data.*): the model, its calibration and
    thresholds are the run's."""
    not_data = [item for item in overrides if not item.strip().startswith("data.")]
    if not_data:
        raise LesionPLError(f"--set {not_data[0]}: an evaluation only takes data.* keys (how to read the data); "
                            "the model, its calibration and thresholds are the run's")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def splits(self) -> Path:
        return self.path / "splits.csv"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def log(self) -> Path:
        """Lightning's per-epoch CSV: losses, metrics, learning rates, elapsed time."""
        return self.path / "logs" / "metrics.csv"

    @property
    def calibration(self) -> Path:
        return self.path / "calibration.json"

    @property
    def ood(self) -> Path:
        """The out-of-distribution Gaussian calibrate fits on the train split's features (lesion_pl.ood)."""
        return self.path / "ood.npz"

    @property
    def ood_benchmark(self) -> Path:
        """What benchmarks/ood.py measured of the exported model's refusal (the model card cites it)."""
        return self.path / "ood_benchmark.json"

    @property
    def val_predictions(self) -> Path:
        """The validation scores the calibration and thresholds were chosen on."""
        return self.path / "val_predictions.csv"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def onnx(self) -> Path:
        return self.export_dir / "model.onnx"

    @property
    def onnx_int8(self) -> Path:
        return self.export_dir / "model.int8.onnx"

    @property
    def report(self) -> Path:
        """The report of the run's own test split (an evaluation's is in its own folder)."""
        return self.path / "report"

    @property
    def shift(self) -> Path:
        """benchmarks/shift.py's figures on the run's test split (report shows them)."""
        return self.path / "shift.json"

    @property
    def explain(self) -> Path:
        """`explain`'s overlays, unless told another folder."""
        return self.path / "explain"

    @property
    def members_dir(self) -> Path:
        return self.path / "members"

    def member(self, i: int) -> RunDir:
        return RunDir(self.members_dir / str(i))

    @property
    def members(self) -> list[RunDir]:
        """The ensemble's member runs in order (none: a single model)."""
        folder = self.members_dir
        if not folder.is_dir():
            return []
        return [RunDir(p) for p in sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))]

    @property
    def best_checkpoints(self) -> list[Path]:
        """The checkpoint(s) evaluated: the run's best.ckpt, or each member's."""
        members = self.members
        return [m.best for m in members] if members else [self.best]

    @property
    def test(self) -> Path:
        """The run's own held-out test split's evaluation (metrics.json, predictions.csv, plots)."""
        return self.path / "test"

    @property
    def evaluations(self) -> Path:
        """Every other evaluation (another source, another split) in a folder of its own: evaluations/NAME."""
        return self.path / "evaluations"

    def evaluation(self, name: str | None) -> Path:
        """The folder of evaluation `name` (None: the run's own test split)."""
        if name is None:
            return self.test
        check_evaluation_name(name)
        return self.evaluations / name

    def evaluation_names(self) -> list[str]:
        """The evaluations that hold results, in name order."""
        folder = self.evaluations
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "metrics.json").is_file())

    def require(self, what: Path, made_by: str) -> Path:
        if not what.exists():
            raise LesionPLError(f"{what} does not exist; `{made_by}` makes it")
        return what

    def load_config(self, data_root: Path | None = None, data_format: str | None = None,
                    skip_bad_images: bool = False, data_overrides: list[str] = ()) -> Config:
        """The run's saved config (over the defaults), pointed at other data where given; `data_overrides`:
        `data.KEY=value` items (how to read that data: its columns, labels, rows), nothing about the model."""
        from .config import load_config

        require_data_keys(data_overrides)
        cfg = load_config(self.config, list(data_overrides))
        if data_root is not None:
            cfg.data.root = str(data_root)
        if data_format is not None:
            cfg.data.format = data_format
        if skip_bad_images:
            cfg.data.skip_bad_images = True
        return cfg

    def datamodule(self, cfg: Config, progress: bool = True, whole: bool = False):
        """The run's data with its own splits.csv (or, `whole`, every image as one split), checked and cached."""
        from .data.datamodule import LesionDataModule

        return LesionDataModule(cfg.data, cfg.seed, splits_file=None if whole else self.splits, progress=progress,
                                whole=whole).build()

    @contextmanager
    def lock(self, command: str, create: bool = False):
        """Hold the run folder for one whole command: a second command on the same folder (a second `fit
        --out` into it, a `test` while it trains) is refused with one line naming the process that holds it.

        The lock is an flock on RUN/.lock, which holds the holder's pid and command and is removed on
        release. `create`: make the folder (fit), removed again if the command left nothing in it; otherwise
        a folder that does not exist is not locked (the command then says so itself). Only the first process
        of a multi-process run takes it (the others are that command's own workers).
        """
        workers = any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
        if workers or (not create and not self.path.is_dir()):
            yield
            return
        from .io import LockHeld, exclusive_lock

        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LesionPLError(f"cannot create run folder {self.path}: {e.strerror or e}") from None
        if not self.path.is_dir():
            raise LesionPLError(f"run folder {self.path} is a file, not a folder")
        try:
            with ExitStack() as held:
                try:
                    held.enter_context(exclusive_lock(self.path / ".lock", wait=False,
                                                      holder=f"lesion-pl {command} (pid {os.getpid()})"))
                except LockHeld as e:
                    raise LesionPLError(f"run folder {self.path} is in use by {e}; wait for it to finish, or choose "
                                        "another folder") from None
                except OSError as e:
                    raise LesionPLError(f"cannot write in run folder {self.path}: {e.strerror or e}") from None
                yield
        finally:  # the lock is released (its file removed) first
            if created and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()

    def require_fitted(self) -> None:
        if not self.path.is_dir():
            raise LesionPLError(f"run folder {self.path} does not exist; "
                                f"`python cli.py fit --out {self.path}` makes it")
        made_by = f"python cli.py fit --out {self.path}"
        self.require(self.config, made_by)
        self.require(self.splits, made_by)
        for ckpt in self.best_checkpoints:  # a fit that was stopped before it finished continues with --resume
            self.require(ckpt, made_by + (" --resume" if (ckpt.parent / "last.ckpt").exists() else ""))
        from .config import load_config

        expected = int(load_config(self.config).trainer.members)  # a run older than the option: one model
        if expected > 1 and len(self.members) < expected:
            raise LesionPLError(f"{self.path} is an ensemble of {expected} members but holds "
                                f"{len(self.members)}; `{made_by} --resume` trains the rest")
