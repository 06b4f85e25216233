"""Configs: the typed defaults (config/models.py), a user's YAML merged over them, `key=value` overrides, all
validated through the models into one `Config`, and saving it. Nothing outside this package reads a raw section:
code takes the typed section it needs (`cfg.data`, `cfg.trainer` ...)."""
from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import LesionPLError
from ..io import atomic_write_text
from .models import (
    Augment,
    Calibration,
    ColorJitter,
    Columns,
    Config,
    Data,
    Loss,
    Model,
    Optim,
    Source,
    Splits,
    Trainer,
)
from .rules import FORMATS, balance_power, duration_seconds

# the documented default: configs/ham10000.yaml in a checkout (tests prove it equals Config()'s defaults)
DOCUMENTED_DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "ham10000.yaml"

__all__ = ["Augment", "Calibration", "ColorJitter", "Columns", "Config", "Data", "Loss", "Model", "Optim", "Source",
           "Splits", "Trainer", "FORMATS", "balance_power", "duration_seconds", "load_config", "config_from",
           "save_config", "read_yaml", "safe_yaml", "parse_override", "merge", "default_data_root", "resolve_data_root"]


class _NoAliases(yaml.SafeLoader):
    """YAML without aliases (*name): a config never needs them, and nested aliases expand exponentially (a 2 KB
    'billion laughs' file takes gigabytes)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"aliases (*name) are not allowed in a config (line {mark.line + 1}, column "
                                 f"{mark.column + 1})")
        return super().compose_node(parent, index)


def safe_yaml(text: str):
    """YAML as every config, override and saved run config is read: safe types, no aliases."""
    return yaml.load(text, Loader=_NoAliases)  # noqa: S506 (a SafeLoader)


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise LesionPLError(f"config file {path} does not exist")
    try:
        data = safe_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise LesionPLError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise LesionPLError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def merge(base: dict, update: dict, where: str = "") -> dict:
    """`update` over `base`; a key that `base` does not have is an error (catches typos). A key whose default is
    an empty mapping (data.label_map, data.where) takes any keys: the value given replaces it whole."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        name = f"{where}{key}"
        if key not in base:
            raise LesionPLError(f"unknown config key '{name}' (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict) and base[key] and isinstance(value, dict):
            out[key] = merge(base[key], value, name + ".")
        elif isinstance(base[key], dict) and base[key]:  # `data: 5`, `optim: null`
            raise LesionPLError(f"config key '{name}' is a section of keys ({', '.join(base[key])}), "
                                f"not {value!r}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> dict:
    """'a.b.c=value' -> {'a': {'b': {'c': value}}}, the value parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise LesionPLError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value: Any = safe_yaml(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        if "aliases" in str(e):
            raise LesionPLError(f"--set {key}: {e}") from None
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; a user means the number
        with contextlib.suppress(ValueError):
            value = float(value)
    node: dict = {}
    out = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return out


def config_from(values: dict) -> Config:
    """A config's values (a file's, a checkpoint's; keys it lacks take their defaults) as a `Config`, or one line
    naming the first key that is wrong, what it takes and the value given."""
    try:
        return Config.model_validate(values)
    except ValidationError as e:
        raise LesionPLError(_one_line(e, values)) from None


def _one_line(e: ValidationError, values: dict) -> str:
    err = e.errors()[0]
    path = [str(p) for p in err["loc"]]
    name = ".".join(path)
    if err["type"] == "lesion_pl_rule":
        return f"{name} must be {err['ctx']['takes']}, got {err['input']!r}"
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{name}'"
    return f"config key '{name}': {err['msg']}, got {err.get('input')!r}"


def load_config(path: Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """The defaults, then the user's file, then each `key=value` override, in that order."""
    values = Config().model_dump()
    if path is not None:
        values = merge(values, read_yaml(path))
    for item in overrides:
        values = merge(values, parse_override(item))
    return config_from(values)


def default_data_root() -> Path:
    """$LESION_PL_DATA/ham10000 where the variable is set, else data/ham10000 under the current folder."""
    base = os.environ.get("LESION_PL_DATA")
    return (Path(base) if base else Path("data")) / "ham10000"


def resolve_data_root(data: Data) -> Path:
    return Path(data.root).expanduser() if data.root else default_data_root()


def save_config(cfg: Config, path: Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(cfg.model_dump(), sort_keys=False))
