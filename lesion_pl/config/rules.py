"""What a config value may be: the rules the typed configuration (config/models.py) attaches to its keys, each a
text saying what the key takes and a check, so that a bad value is one line naming the key, what it takes and the
value, before anything runs; and the readings of values that need one (a sampler's power, a duration)."""
from __future__ import annotations

from ..errors import LesionPLError
from ..formats import FORMATS

MAX_IMAGE_SIZE = 1024  # px: dermoscopy models train at 64-600; 10,000 images at 1024 px are a 31 GB cache
BALANCE_POWER = {"none": 0.0, "shuffle": 0.0, "sqrt": 0.5, "balanced": 1.0}


def balance_power(name: str | float, key: str) -> float:
    """The power p of count^-p that a sampler or class-weight name stands for; a number in [0, 1] is
    the power itself."""
    if isinstance(name, (int, float)) and not isinstance(name, bool) and 0 <= name <= 1:
        return float(name)
    if name not in BALANCE_POWER:
        raise LesionPLError(f"{key} must be one of {', '.join(BALANCE_POWER)} or a power in [0, 1], got '{name}'")
    return BALANCE_POWER[name]


def duration_seconds(value, key: str = "trainer.max_time") -> float | None:
    """'DD:HH:MM:SS' (Lightning's max_time format) or a number of seconds -> seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        d, h, m, sec = (float(x) for x in str(value).split(":"))
    except ValueError:
        raise LesionPLError(f"{key} must be 'DD:HH:MM:SS', got '{value}'") from None
    return ((d * 24 + h) * 60 + m) * 60 + sec


def duration(v) -> bool:
    try:
        return v in (None, "") or (duration_seconds(v) or 0) >= 0
    except LesionPLError:
        return False


def whole(low: int):
    return f"a whole number >= {low}", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def number(low: float, high: float | None = None, low_open: bool = False, nullable: bool = False):
    text = f"a number {'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")

    def ok(v) -> bool:
        if v is None:
            return nullable
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return (v > low if low_open else v >= low) and (high is None or v <= high)
    return text + (", or null" if nullable else ""), ok


def one_of(*choices):
    return "one of " + ", ".join(dict.fromkeys(map(str, choices))), lambda v: v in choices


def pair(high: float):
    """A [min, max] pair with 0 < min <= max <= high."""
    def ok(v) -> bool:
        return (isinstance(v, list) and len(v) == 2 and all(number(0, high, low_open=True)[1](x) for x in v)
                and v[0] <= v[1])
    return f"a pair [min, max] with 0 < min <= max <= {high}", ok


def or_null(rule):
    text, ok = rule
    return text + ", or null", lambda v: v is None or ok(v)


def devices():
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


def mean_std(v) -> bool:
    """{mean: [3 numbers], std: [3 numbers > 0]}."""
    def three(x, low_open):
        return isinstance(x, list) and len(x) == 3 and all(number(0, low_open=low_open)[1](n) for n in x)
    return isinstance(v, dict) and set(v) == {"mean", "std"} and three(v["mean"], False) and three(v["std"], True)


def balance(nullable: bool = False):
    def ok(v) -> bool:
        if v is None:
            return nullable
        try:
            balance_power(v, "")
        except LesionPLError:
            return False
        return True
    return f"one of {', '.join(BALANCE_POWER)} or a power in [0, 1]" + (", or null" if nullable else ""), ok


def boolean():
    return "true or false", lambda v: isinstance(v, bool)


def text_or_null():
    return "a path or name (text), or null", lambda v: v is None or (isinstance(v, str) and v != "")


def mapping():
    return "a mapping of keys to values ({} for none)", lambda v: isinstance(v, dict)


def scalar(v) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def sample_weights():
    """data.sample_weights: {column: {value: weight > 0}}."""
    def ok(v) -> bool:
        return isinstance(v, dict) and all(isinstance(k, str) and isinstance(m, dict) and all(
            scalar(x) and number(0, 100, low_open=True)[1](w) for x, w in m.items()) for k, m in v.items())
    return "a mapping {column: {value: weight in (0, 100]}}, e.g. {dx_type: {follow_up: 0.25}} ({} for none)", ok


SOURCE_KEYS = ("name", "root", "format", "csv", "columns", "label_map", "drop_labels", "where")


def sources():
    """data.sources: a list of {name, root, ...}: each a plain name (a folder name), once, with a root."""
    def ok(v) -> bool:
        if not isinstance(v, list):
            return False
        v = [s.model_dump(exclude_defaults=True) if hasattr(s, "model_dump") else s for s in v]  # typed already
        names = [s.get("name") for s in v if isinstance(s, dict)]
        return len(names) == len(v) == len(set(names)) and all(
            set(s) <= set(SOURCE_KEYS) and isinstance(s.get("name"), str) and s["name"].replace("-", "").replace(
                "_", "").isalnum() and isinstance(s.get("root"), str) and s["root"] != ""
            and s.get("format", "auto") in FORMATS and rows()[1](s.get("where") or {}) for s in v)
    return (f"a list of sources, each a mapping with a name (letters, digits, - and _; each once), a root and "
            f"optionally {', '.join(SOURCE_KEYS[2:])}", ok)


def rows():
    """data.where: {column: value or [values]}: which rows of a source to keep."""
    return ("a mapping of column names to a value or a list of values to keep, e.g. {split: val} ({} for every row)",
            lambda v: isinstance(v, dict) and all(isinstance(k, str) and (scalar(x) or (
                isinstance(x, list) and bool(x) and all(map(scalar, x)))) for k, x in v.items()))


