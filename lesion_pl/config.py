"""Configs: the default YAML, user YAML merged over it, `key=value` overrides (each value checked,
config_rules.py), and saving the result."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from .config_rules import check
from .errors import LesionPLError
from .io import atomic_write_text

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ham10000.yaml"


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


def with_defaults(cfg: dict, base: dict | None = None) -> dict:
    """`cfg` with every key it lacks taken from the default config (a config saved by an older lesion-pl, e.g.
    in a checkpoint): each key's default lives in the YAML only, so code reads `cfg[...][key]`, never a
    `.get(key, fallback)` of its own."""
    base = read_yaml(DEFAULT_CONFIG) if base is None else base
    out = copy.deepcopy(cfg)
    for key, value in base.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and value and isinstance(out[key], dict):
            out[key] = with_defaults(out[key], value)
    return out


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
