"""Configs: the default YAML, user YAML merged over it, `key=value` overrides, checking the values,
and saving the result."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import LesionPLError
from .io import atomic_write_text

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ham10000.yaml"


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise LesionPLError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LesionPLError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise LesionPLError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def merge(base: dict, update: dict, where: str = "") -> dict:
    """`update` over `base`; a key that `base` does not have is an error (catches typos)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        name = f"{where}{key}"
        if key not in base:
            raise LesionPLError(f"unknown config key '{name}' (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = merge(base[key], value, name + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> dict:
    """'a.b.c=value' -> {'a': {'b': {'c': value}}}, the value parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise LesionPLError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value: Any = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; a user means the number
        try:
            value = float(value)
        except ValueError:
            pass
    node: dict = {}
    out = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return out


def load_config(path: Path | None = None, overrides: list[str] = ()) -> dict:
    """The default config, then the user's file, then each `key=value` override, in that order."""
    cfg = read_yaml(DEFAULT_CONFIG)
    if path is not None and Path(path).resolve() != DEFAULT_CONFIG:
        cfg = merge(cfg, read_yaml(path))
    for item in overrides:
        cfg = merge(cfg, parse_override(item))
    check(cfg)
    return cfg


BALANCE_POWER = {"none": 0.0, "shuffle": 0.0, "sqrt": 0.5, "balanced": 1.0}


def balance_power(name: str | float, key: str) -> float:
    """The power p of count^-p that a sampler or class-weight name stands for; a number in [0, 1] is
    the power itself."""
    if isinstance(name, (int, float)) and not isinstance(name, bool) and 0 <= name <= 1:
        return float(name)
    if name not in BALANCE_POWER:
        raise LesionPLError(f"{key} must be one of {', '.join(BALANCE_POWER)} or a power in [0, 1], got '{name}'")
    return BALANCE_POWER[name]


def _whole(low: int):
    return f"a whole number >= {low}", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(low: float, high: float | None = None, low_open: bool = False, nullable: bool = False):
    text = f"a number {'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")

    def ok(v) -> bool:
        if v is None:
            return nullable
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return (v > low if low_open else v >= low) and (high is None or v <= high)
    return text + (", or null" if nullable else ""), ok


def _one_of(*choices):
    return "one of " + ", ".join(dict.fromkeys(map(str, choices))), lambda v: v in choices


def _range(low: float, high: float):
    """A [min, max] pair within [low, high]."""
    def ok(v) -> bool:
        return (isinstance(v, list) and len(v) == 2 and all(_number(low, high)[1](x) for x in v)
                and v[0] <= v[1] and v[1] > 0)
    return f"a pair [min, max] with {low} <= min <= max <= {high}", ok


def _devices():
    """Lightning's `devices`: a count, -1 (all), "auto", a list of indices or a string of them ("0,1")."""
    def ok(v) -> bool:
        if isinstance(v, bool):
            return False
        if isinstance(v, int):
            return v >= 1 or v == -1
        if isinstance(v, list):
            return bool(v) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
        return isinstance(v, str) and (v == "auto" or all(p.strip().lstrip("-").isdigit() for p in v.split(",")))
    return 'a number of devices, -1 (all), "auto", or their indices ([0, 1] or "0,1")', ok


def _balance(nullable: bool = False):
    def ok(v) -> bool:
        if v is None:
            return nullable
        try:
            balance_power(v, "")
        except LesionPLError:
            return False
        return True
    return f"one of {', '.join(BALANCE_POWER)} or a power in [0, 1]" + (", or null" if nullable else ""), ok


# The values that would otherwise fail deep inside torch or Lightning, with a traceback that names
# neither the key nor the file. Keys with their own checks (image_size, sampler, splits, max_time,
# the data columns) are checked where they are read.
CHECKS = {
    "seed": _whole(0),
    "data.batch_size": _whole(1),
    "data.num_workers": _whole(0),
    "data.cache_in_memory_max_gb": _number(0),
    "data.sampler": _balance(),
    "data.sampler_start": _balance(nullable=True),
    "data.sampler_ramp_epochs": _whole(1),
    "data.augment.scale": _range(0, 1),
    "data.augment.ratio": _range(0, 100),
    "data.augment.rotation": _number(0, 180),
    "data.augment.color_jitter.brightness": _number(0),
    "data.augment.color_jitter.contrast": _number(0),
    "data.augment.color_jitter.saturation": _number(0),
    "data.augment.color_jitter.hue": _number(0, 0.5),
    "data.augment.mixup": _number(0),
    "data.augment.cutmix": _number(0),
    "model.dropout": _number(0, 1),
    "loss.class_weights": _balance(),
    "loss.label_smoothing": _number(0, 1),
    "loss.logit_adjustment": _number(0),
    "loss.malignant_weight": _number(0),
    "optim.lr": _number(0, low_open=True),
    "optim.weight_decay": _number(0),
    "optim.warmup_epochs": _number(0),
    "calibration.decision": _one_of("balanced", "accuracy"),
    "calibration.malignant_sensitivity": _number(0, 1, low_open=True),
    "calibration.melanoma_sensitivity": _number(0, 1, low_open=True),
    "calibration.bootstrap": _whole(1),
    "trainer.max_epochs": ("a whole number >= 1, or -1 (no limit)",
                           lambda v: isinstance(v, int) and not isinstance(v, bool) and (v >= 1 or v == -1)),
    "trainer.members": _whole(1),
    "trainer.patience": _whole(1),
    "trainer.stop_at": _number(0, 1, nullable=True),
    "trainer.ema_decay": _number(0, 1, nullable=True),
    "trainer.num_nodes": _whole(1),
    "trainer.devices": _devices(),
    "trainer.accelerator": _one_of("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
    "trainer.precision": _one_of("auto", "32-true", "32", 32, "bf16-mixed", "16-mixed", "bf16-true", "16-true",
                                 "64-true", "64", 64),
    "trainer.limit_train_batches": _number(0, low_open=True),
    "trainer.limit_val_batches": _number(0),
}


def check(cfg: dict) -> None:
    """A one-line error naming the key, what it takes and the value given, for the first bad value."""
    for key, (takes, ok) in CHECKS.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        if not ok(node):
            raise LesionPLError(f"{key} must be {takes}, got {node!r}")


def default_data_root() -> Path:
    """$LESION_PL_DATA/ham10000 where the variable is set, else data/ham10000 in the project."""
    base = os.environ.get("LESION_PL_DATA")
    base_path = Path(base) if base else Path(__file__).resolve().parent.parent / "data"
    return base_path / "ham10000"


def resolve_data_root(cfg: dict) -> Path:
    root = cfg["data"]["root"]
    return Path(root).expanduser() if root else default_data_root()


def save_config(cfg: dict, path: Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(cfg, sort_keys=False))


def duration_seconds(value) -> float | None:
    """'DD:HH:MM:SS' (Lightning's max_time format) or a number of seconds -> seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        d, h, m, sec = (float(x) for x in str(value).split(":"))
    except ValueError:
        raise LesionPLError(f"trainer.max_time must be 'DD:HH:MM:SS', got '{value}'") from None
    return ((d * 24 + h) * 60 + m) * 60 + sec
