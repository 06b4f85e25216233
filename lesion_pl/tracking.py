"""Experiment tracking: the loggers `fit` writes to (`trainer.loggers`: Lightning's CSV always, TensorBoard event
files in RUN/tensorboard, MLflow), and what test, export and report add to a run's MLflow run afterwards (their
metrics and files), through MLflow's own client. RUN/mlflow.json remembers which MLflow run is the run's.

The MLflow store: `trainer.mlflow_uri`, else $MLFLOW_TRACKING_URI, else a local SQLite store beside the run
folder (RUN/../mlflow.db: `mlflow ui --backend-store-uri sqlite:///RUN/../mlflow.db` shows it).
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from .config import Config, Trainer
from .errors import LesionPLError
from .io import atomic_write_json, read_json
from .provenance import code_revision
from .run import RunDir

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # logger -> the package it needs


def require_package(logger: str) -> None:
    """One line naming the package where an optional logger's is not installed."""
    import importlib

    package = PACKAGES[logger]
    try:
        importlib.import_module(package)
    except ImportError:
        raise LesionPLError(f"trainer.loggers names {logger}, but the package '{package}' is not installed: "
                            f"pip install {package} (or drop {logger} from trainer.loggers)") from None


def tracking_uri(t: Trainer, run: RunDir) -> str:
    if t.mlflow_uri:
        return t.mlflow_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(run.path.resolve().parent / 'mlflow.db').as_posix()}"


def flat(config: dict, prefix: str = "") -> dict[str, str]:
    """{"data": {"image_size": 64}} -> {"data.image_size": "64"}: MLflow params are flat strings."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def fit_loggers(cfg: Config, run: RunDir) -> list:
    """Lightning loggers for `fit`: the CSV log the run reads itself, and those `trainer.loggers` adds."""
    from pytorch_lightning.loggers import CSVLogger

    t = cfg.trainer
    loggers: list = [CSVLogger(run.path, name="logs", version="")]
    for name in dict.fromkeys(t.loggers):
        if name == "csv":
            continue
        require_package(name)
        if name == "tensorboard":
            from pytorch_lightning.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(run.path, name="tensorboard", version="", default_hp_metric=False))
        elif name == "mlflow":
            loggers.append(mlflow_logger(cfg, run))
    return loggers


def mlflow_logger(cfg: Config, run: RunDir, tags: dict | None = None):
    """Lightning's MLFlowLogger on the run's MLflow run (a resumed fit continues the one it started), with the
    flattened config as params and the code's revision (and `tags`) as tags; RUN/mlflow.json records which run it
    is."""
    from pytorch_lightning.loggers import MLFlowLogger

    t = cfg.trainer
    known = _record(run)
    uri = known["tracking_uri"] if known else tracking_uri(t, run)
    tags = {"code_revision": code_revision(), "run_folder": str(run.path.resolve()), **(tags or {})}
    ensemble = _ensemble_of(run)
    if ensemble is not None:  # a member: its run nests under the ensemble's
        tags["mlflow.parentRunId"] = ensemble["run_id"]
    logger = MLFlowLogger(experiment_name=t.mlflow_experiment, run_name=run.path.name, tracking_uri=uri,
                          tags=tags, run_id=known["run_id"] if known else None)
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # DDP: the run is rank zero's; Lightning logs from there alone
        return logger
    try:
        run_id = logger.run_id  # creates the run: fails here, before training, where the store cannot be reached
    except Exception as e:
        raise LesionPLError(f"MLflow at {uri} could not start a run ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]}); check trainer.mlflow_uri") from None
    atomic_write_json(run.path / "mlflow.json", {"tracking_uri": uri, "experiment_id": logger.experiment_id,
                                                 "run_id": run_id})
    logger.log_hyperparams(flat(cfg.model_dump()))
    return logger


def _ensemble_of(run: RunDir) -> dict | None:
    """The MLflow run of the ensemble `run` is a member of (RUN/members/i), if it has one."""
    return _record(RunDir(run.path.parent.parent)) if run.path.parent.name == "members" else None


def start_ensemble_run(cfg: Config, run: RunDir) -> None:
    """An ensemble's own MLflow run, where `trainer.loggers` names mlflow: the flattened config as params, its
    members' runs nested under it, and what test, export and report of the ensemble add (RUN/mlflow.json). A resumed
    ensemble keeps the run it had."""
    if "mlflow" in cfg.trainer.loggers and _record(run) is None:
        require_package("mlflow")
        mlflow_logger(cfg, run, tags={"members": str(cfg.trainer.members)})


def finish_ensemble_run(run: RunDir, val_metrics: dict) -> None:
    """The ensemble's validation figures (its calibration's) into its MLflow run, which is then marked finished
    (its members' runs Lightning finishes)."""
    if log_to_mlflow(run, val_metrics, prefix="val"):
        from mlflow.tracking import MlflowClient

        known = _record(run)  # there: log_to_mlflow logged to it
        MlflowClient(tracking_uri=known["tracking_uri"]).set_terminated(known["run_id"])



def _record(run: RunDir) -> dict | None:
    """RUN/mlflow.json: the MLflow run fit started for this run folder (None: it logs to none)."""
    return read_json(run.path / "mlflow.json")


def log_to_mlflow(run: RunDir, metrics: dict | None = None, files: list[Path] = (), prefix: str = "test",
                  artifact_path: str | None = None) -> bool:
    """Adds to the run's MLflow run, where fit started one (RUN/mlflow.json): `metrics`' numbers as `prefix/KEY`
    and `files` as artifacts (under `artifact_path`). A store that cannot be reached is one warning line: the
    command's own outputs are written already. Returns whether anything was logged."""
    known = _record(run)
    if known is None:
        return False
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=known["tracking_uri"])
        numbers = {f"{prefix}/{k}": float(v) for k, v in (metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        for key, value in numbers.items():
            client.log_metric(known["run_id"], key, value)
        for path in files:
            if Path(path).exists():
                client.log_artifact(known["run_id"], str(path), artifact_path)
    except ImportError:
        print(f"warning: {run.path} logs to MLflow but the package 'mlflow' is not installed: pip install mlflow",
              file=sys.stderr)
        return False
    except Exception as e:  # the store is down or refuses: the run's own files are what counts
        print(f"warning: could not log to MLflow at {known['tracking_uri']}: {type(e).__name__}: "
              f"{str(e).splitlines()[0][:160]}", file=sys.stderr)
        return False
    return True
