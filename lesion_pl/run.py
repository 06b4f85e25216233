"""The run folder: where `fit` writes and every later command reads.

runs/NAME/config.yaml, splits.csv, summary.json, checkpoints/{best,last}.ckpt, logs/metrics.csv,
test/{metrics.json, predictions.csv, confusion_matrix.png, roc.png}.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import LesionPLError


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
    def test(self) -> Path:
        return self.path / "test"

    def require(self, what: Path, made_by: str) -> Path:
        if not what.exists():
            raise LesionPLError(f"{what} does not exist; `{made_by}` makes it")
        return what

    def load_config(self, data_root: Path | None = None, data_format: str | None = None,
                    skip_bad_images: bool = False) -> dict:
        """The run's saved config (over the defaults), pointed at other data where given."""
        from .config import load_config

        cfg = load_config(self.config)
        if data_root is not None:
            cfg["data"]["root"] = str(data_root)
        if data_format is not None:
            cfg["data"]["format"] = data_format
        if skip_bad_images:
            cfg["data"]["skip_bad_images"] = True
        return cfg

    def datamodule(self, cfg: dict, progress: bool = True, whole: bool = False):
        """The run's data with its own splits.csv (or, `whole`, every image as one split), checked and cached."""
        from .data.datamodule import LesionDataModule

        return LesionDataModule(cfg, splits_file=None if whole else self.splits, progress=progress, whole=whole).build()

    def require_fitted(self) -> None:
        if not self.path.is_dir():
            raise LesionPLError(f"run folder {self.path} does not exist; "
                                f"`python cli.py fit --out {self.path}` makes it")
        made_by = f"python cli.py fit --out {self.path}"
        self.require(self.config, made_by)
        self.require(self.splits, made_by)
        self.require(self.best, made_by)
