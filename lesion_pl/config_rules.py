"""What each config value may be: one rule per key, checked whenever a config loads (config.load_config),
so a bad value is one line naming the key, what it takes and the value, before anything runs."""
from __future__ import annotations

from .classes import parse_label_space
from .errors import LesionPLError

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


def _duration(v) -> bool:
    try:
        return v in (None, "") or (duration_seconds(v) or 0) >= 0
    except LesionPLError:
        return False


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


def _range(high: float):
    """A [min, max] pair with 0 < min <= max <= high."""
    def ok(v) -> bool:
        return (isinstance(v, list) and len(v) == 2 and all(_number(0, high, low_open=True)[1](x) for x in v)
                and v[0] <= v[1])
    return f"a pair [min, max] with 0 < min <= max <= {high}", ok


def _or_null(rule):
    text, ok = rule
    return text + ", or null", lambda v: v is None or ok(v)


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


def _stats(v) -> bool:
    """{mean: [3 numbers], std: [3 numbers > 0]}."""
    def three(x, low_open):
        return isinstance(x, list) and len(x) == 3 and all(_number(0, low_open=low_open)[1](n) for n in x)
    return isinstance(v, dict) and set(v) == {"mean", "std"} and three(v["mean"], False) and three(v["std"], True)


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


def _bool():
    return "true or false", lambda v: isinstance(v, bool)


def _text_or_null():
    return "a path or name (text), or null", lambda v: v is None or (isinstance(v, str) and v != "")


def _mapping():
    return "a mapping of keys to values ({} for none)", lambda v: isinstance(v, dict)


def _scalar(v) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def _weights_rule():
    """data.sample_weights: {column: {value: weight > 0}}."""
    def ok(v) -> bool:
        return isinstance(v, dict) and all(isinstance(k, str) and isinstance(m, dict) and all(
            _scalar(x) and _number(0, 100, low_open=True)[1](w) for x, w in m.items()) for k, m in v.items())
    return "a mapping {column: {value: weight in (0, 100]}}, e.g. {dx_type: {follow_up: 0.25}} ({} for none)", ok


SOURCE_KEYS = ("name", "root", "format", "csv", "columns", "label_map", "drop_labels", "where")


def _sources_rule():
    """data.sources: a list of {name, root, ...}: each a plain name (a folder name), once, with a root."""
    def ok(v) -> bool:
        if not isinstance(v, list):
            return False
        names = [s.get("name") for s in v if isinstance(s, dict)]
        return len(names) == len(v) == len(set(names)) and all(
            set(s) <= set(SOURCE_KEYS) and isinstance(s.get("name"), str) and s["name"].replace("-", "").replace(
                "_", "").isalnum() and isinstance(s.get("root"), str) and s["root"] != ""
            and s.get("format", "auto") in FORMATS and _rows_rule()[1](s.get("where") or {}) for s in v)
    return (f"a list of sources, each a mapping with a name (letters, digits, - and _; each once), a root and "
            f"optionally {', '.join(SOURCE_KEYS[2:])}", ok)


def _rows_rule():
    """data.where: {column: value or [values]}: which rows of a source to keep."""
    return ("a mapping of column names to a value or a list of values to keep, e.g. {split: val} ({} for every row)",
            lambda v: isinstance(v, dict) and all(isinstance(k, str) and (_scalar(x) or (
                isinstance(x, list) and bool(x) and all(map(_scalar, x)))) for k, x in v.items()))


# the readers' names (data.sources.READERS, tested to agree) and auto
FORMATS = ("auto", "ham10000", "isic-csv", "isic2020", "csv", "folder", "dermamnist")
# keys whose values are checked where they are read, against the data (their own, longer messages)
CHECKED_WHERE_READ = ("data.splits", "data.columns")


# What each key takes; a bad value would otherwise fail deep inside torch or Lightning (with a traceback
# that names neither the key nor the file), or not at all. Keys with their own checks (splits,
# the data columns) are checked where they are read.
CHECKS = {
    "seed": _whole(0),
    "data.format": _one_of(*FORMATS),
    # parse_label_space says what is wrong with a space (a code, a key) in its own words
    "data.classes": ("a preset name or a mapping of codes", lambda v: parse_label_space(v) is not None),
    "data.dermamnist_size": _one_of(None, 28, 64, 128, 224),
    "data.root": _text_or_null(),
    "data.csv": _text_or_null(),
    "data.label_map": _mapping(),
    "data.drop_labels": ("a list of source labels", lambda v: isinstance(v, list)),
    "data.where": _rows_rule(),
    "data.sample_weights": _weights_rule(),
    "data.sources": _sources_rule(),
    "data.balance_sources": _bool(),
    "data.skip_bad_images": _bool(),
    "data.splits_file": _text_or_null(),
    "data.cache_dir": _text_or_null(),
    "data.cache_on_device": _bool(),
    "data.augment.hflip": _bool(),
    "data.augment.vflip": _bool(),
    "model.name": ("a network name (lesion_cnn, or a timm model)", lambda v: isinstance(v, str) and v != ""),
    "model.weights": _text_or_null(),
    "model.widths": ("a list of whole numbers >= 1 (channels per stage)",
                     lambda v: isinstance(v, list) and bool(v) and all(_whole(1)[1](w) for w in v)),
    "calibration.prior_correction": _bool(),
    "calibration.tta": _bool(),
    "calibration.clinical": _bool(),
    "calibration.clinical_columns": _mapping(),
    "trainer.strategy": ("a Lightning strategy name (auto, ddp, ...)", lambda v: isinstance(v, str) and v != ""),
    "trainer.channels_last": _bool(),
    "data.image_size": (f"auto or a whole number of pixels from 8 to {MAX_IMAGE_SIZE}",
                        lambda v: v == "auto" or (_whole(8)[1](v) and v <= MAX_IMAGE_SIZE)),
    "data.batch_size": _whole(1),
    "data.num_workers": _whole(0),
    "data.cache_in_memory_max_gb": _number(0),
    "data.sampler": _balance(),
    "data.sampler_start": _balance(nullable=True),
    "data.sampler_ramp_epochs": _whole(1),
    "data.augment.scale": _range(1),
    "data.augment.ratio": _range(100),
    "data.augment.rotation": _number(0, 180),
    "data.augment.color_jitter.brightness": _number(0),
    "data.augment.color_jitter.contrast": _number(0),
    "data.augment.color_jitter.saturation": _number(0),
    "data.augment.color_jitter.hue": _number(0, 0.5),
    "data.augment.mixup": _number(0),
    "data.augment.cutmix": _number(0),
    "data.augment.channel_gain": _number(0, 0.5),
    "data.augment.gamma": _or_null(_range(5)),
    "data.augment.blur": _number(0, 0.05),
    "data.augment.vignette": _number(0, 1),
    "data.augment.downscale": _number(1, 8, nullable=True),
    "data.augment.jpeg": _or_null(("a pair [min, max] of JPEG qualities with 1 <= min <= max <= 100",
                                   lambda v: _range(100)[1](v) and v[0] >= 1)),
    "model.dropout": _number(0, 1),
    "model.pretrained": ("true or false", lambda v: isinstance(v, bool)),
    "model.normalization": ("auto, dataset, or {mean: [r, g, b], std: [r, g, b]} (0..1 scale, std > 0)",
                            lambda v: v in ("auto", "dataset") or _stats(v)),
    "loss.class_weights": _balance(),
    "loss.label_smoothing": _number(0, 1),
    "loss.logit_adjustment": _number(0),
    "loss.malignant_weight": _number(0),
    "optim.lr": _number(0, low_open=True),
    "optim.weight_decay": _number(0),
    "optim.warmup_epochs": _number(0),
    "optim.backbone_lr_scale": _number(0, 1, low_open=True),
    "calibration.decision": _one_of("balanced", "accuracy"),
    "calibration.malignant_sensitivity": _number(0, 1, low_open=True),
    "calibration.melanoma_sensitivity": _number(0, 1, low_open=True),
    "calibration.bootstrap": _whole(1),
    "data.color_constancy": _number(1, 16, nullable=True),
    "calibration.referral_confidence": _number(0.5, 1, low_open=True, nullable=True),
    "trainer.max_time": ('a wall-clock limit "DD:HH:MM:SS" (e.g. "00:01:00:00"), a number of seconds, or null',
                         _duration),
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
