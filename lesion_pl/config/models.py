"""The configuration as typed objects: one pydantic model per section, each key's type, default, rule (what it
takes: config/rules.py) and one-line doc in one place. configs/ham10000.yaml documents these defaults, and a test
proves the two equal. Unknown keys are refused (extra="forbid"); a checkpoint's saved config loads through the same
models, its missing keys taking their defaults."""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from . import rules

Balance = str | float  # a name (none, shuffle, sqrt, balanced) or a power in [0, 1]


def rule(spec: tuple[str, Callable[[Any], bool]]):
    """A key's rule as a validator: a value its check refuses is an error that says what the key takes."""
    takes, ok = spec

    def check(value):
        if not ok(value):
            raise PydanticCustomError("lesion_pl_rule", "{takes}", {"takes": takes})
        return value
    return BeforeValidator(check)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=False)


class Columns(Section):
    image: Annotated[str, rule(("a column name (text)", lambda v: isinstance(v, str) and v != ""))] = Field(
        "image", description="csv: the column of image paths (relative to the root)")
    label: Annotated[str, rule(("a column name (text)", lambda v: isinstance(v, str) and v != ""))] = Field(
        "label", description="csv: the column of labels")
    group: Annotated[str | None, rule(rules.text_or_null())] = Field(
        None, description="csv: the column naming each image's lesion or patient (null: split by image)")


class Splits(Section):
    train: Annotated[float, rule(rules.number(0, 1))] = Field(0.70, description="share of lesions in train")
    val: Annotated[float, rule(rules.number(0, 1))] = Field(0.15, description="share of lesions in validation")
    test: Annotated[float, rule(rules.number(0, 1))] = Field(0.15, description="share of lesions in test")
    seed: Annotated[int | None, rule(rules.or_null(rules.whole(0)))] = Field(
        42, description="the split's seed (null: the run's seed)")


class ColorJitter(Section):
    brightness: Annotated[float, rule(rules.number(0))] = Field(0.2, description="brightness factor range +-")
    contrast: Annotated[float, rule(rules.number(0))] = Field(0.2, description="contrast factor range +-")
    saturation: Annotated[float, rule(rules.number(0))] = Field(0.2, description="saturation factor range +-")
    hue: Annotated[float, rule(rules.number(0, 0.5))] = Field(0.0, description="hue shift range +-")


class Augment(Section):
    """Applied to whole batches on the training device (lesion_pl/data/transforms.py)."""
    scale: Annotated[list[float], rule(rules.pair(1))] = Field([0.5, 1.0], description="RandomResizedCrop area range")
    ratio: Annotated[list[float], rule(rules.pair(100))] = Field([0.75, 1.3333], description="its aspect ratio range")
    rotation: Annotated[float, rule(rules.number(0, 180))] = Field(180, description="degrees, uniform in +-rotation")
    hflip: Annotated[bool, rule(rules.boolean())] = Field(True, description="random horizontal flips")
    vflip: Annotated[bool, rule(rules.boolean())] = Field(True, description="random vertical flips")
    color_jitter: ColorJitter = Field(default_factory=ColorJitter)
    mixup: Annotated[float, rule(rules.number(0))] = Field(0.0, description="MixUp alpha (0: off)")
    cutmix: Annotated[float, rule(rules.number(0))] = Field(0.0, description="CutMix alpha (0: off)")
    channel_gain: Annotated[float, rule(rules.number(0, 0.5))] = Field(
        0.0, description="s: a colour cast, each channel times a gain in [1 - s, 1 + s]")
    gamma: Annotated[list[float] | None, rule(rules.or_null(rules.pair(5)))] = Field(
        None, description="[low, high]: a tone curve (x/255)^g, g log-uniform in the range")
    blur: Annotated[float, rule(rules.number(0, 0.05))] = Field(
        0.0, description="s: Gaussian blur, sigma uniform in [0, s * image side]")
    vignette: Annotated[float, rule(rules.number(0, 1))] = Field(
        0.0, description="p: this share of images get a round lens's dark corners")
    downscale: Annotated[float | None, rule(rules.number(1, 8, nullable=True))] = Field(
        None, description="f: each batch down- and upscaled by a factor drawn in [1, f]")
    jpeg: Annotated[list[float] | None, rule(rules.or_null((
        "a pair [min, max] of JPEG qualities with 1 <= min <= max <= 100",
        lambda v: rules.pair(100)[1](v) and v[0] >= 1)))] = Field(
        None, description="[low, high]: each image re-encoded as JPEG at a quality drawn in the range")


class Source(Section):
    """Another archive trained on in the same run (data.sources)."""
    name: str = Field(description="its name (letters, digits, - and _), in splits.csv and the per-source figures")
    root: str = Field(description="its folder (relative: under $LESION_PL_DATA, else data/)")
    format: Annotated[str, rule(rules.one_of(*rules.FORMATS))] = Field("auto", description="its format")
    csv: Annotated[str | None, rule(rules.text_or_null())] = Field(None, description="csv formats: the CSV file")
    columns: Columns | None = Field(None, description="csv: its columns (the defaults where not given)")
    label_map: Annotated[dict, rule(rules.mapping())] = Field({}, description="its labels -> class codes")
    drop_labels: Annotated[list, rule(("a list of source labels", lambda v: isinstance(v, list)))] = Field(
        [], description="its labels to leave out")
    where: Annotated[dict, rule(rules.rows())] = Field({}, description="its rows to keep, e.g. {split: train}")


class Data(Section):
    format: Annotated[str, rule(rules.one_of(*rules.FORMATS))] = Field(
        "auto", description="auto | ham10000 | isic-csv | isic2020 | csv | folder | dermamnist")
    dermamnist_size: Annotated[int | None, rule(rules.one_of(None, 28, 64, 128, 224))] = Field(
        None, description="dermamnist: 28, 64, 128 or 224 (null: the largest .npz present)")
    root: Annotated[str | None, rule(rules.text_or_null())] = Field(
        None, description="null: $LESION_PL_DATA/ham10000, else data/ham10000")
    csv: Annotated[str | None, rule(rules.text_or_null())] = Field(
        None, description="isic-csv/csv: the CSV file (default: found in the root)")
    columns: Columns = Field(default_factory=Columns, description="csv: column names")
    # parse_label_space says what is wrong with a space (a code, a key) in its own words
    classes: Annotated[None | str | dict, rule((
        "a preset name or a mapping of codes", lambda v: _label_space(v)))] = Field(
        None, description="the label space: null or ham10000, melanoma, isic2019, or {codes, malignant, ...}")
    label_map: Annotated[dict, rule(rules.mapping())] = Field({}, description="source label -> class code")
    drop_labels: Annotated[list, rule(("a list of source labels", lambda v: isinstance(v, list)))] = Field(
        [], description="source labels to leave out (counted and reported)")
    where: Annotated[dict, rule(rules.rows())] = Field(
        {}, description="keep only the rows whose column holds one of these values (counted)")
    sources: Annotated[list[Source], rule(rules.sources())] = Field(
        [], description="more archives trained on in the same run, each split by its own groups")
    balance_sources: Annotated[bool, rule(rules.boolean())] = Field(
        False, description="each source drawn as often as the others in total")
    skip_bad_images: Annotated[bool, rule(rules.boolean())] = Field(
        False, description="leave out unreadable images (counted, listed in summary.json)")
    image_size: Annotated[Literal["auto"] | int, rule((
        f"auto or a whole number of pixels from 8 to {rules.MAX_IMAGE_SIZE}",
        lambda v: v == "auto" or (rules.whole(8)[1](v) and v <= rules.MAX_IMAGE_SIZE)))] = Field(
        "auto", description="resized (shorter side) and centre-cropped to this square; auto: by the hardware")
    color_constancy: Annotated[float | None, rule(rules.number(1, 16, nullable=True))] = Field(
        None, description="p: Shades of Gray colour constancy inside the model; null: off")
    splits: Splits = Field(default_factory=Splits, description="grouped by lesion, stratified by class")
    splits_file: Annotated[str | None, rule(rules.text_or_null())] = Field(
        None, description="a splits.csv to reuse")
    cache_dir: Annotated[str | None, rule(rules.text_or_null())] = Field(
        None, description="null: $LESION_PL_CACHE, else ~/.cache/lesion_pl")
    cache_in_memory_max_gb: Annotated[float, rule(rules.number(0))] = Field(
        1.0, description="a larger cache stays memory-mapped on disk")
    cache_on_device: Annotated[bool, rule(rules.boolean())] = Field(
        False, description="the whole uint8 cache in GPU memory (CUDA only)")
    batch_size: Annotated[int, rule(rules.whole(1))] = Field(64, description="images a training step")
    num_workers: Annotated[int, rule(rules.whole(0))] = Field(0, description="loader processes")
    sampler: Annotated[Balance, rule(rules.balance())] = Field(
        "sqrt", description="each image drawn with weight count^-p: shuffle | sqrt | balanced, or p")
    sampler_start: Annotated[Balance | None, rule(rules.balance(nullable=True))] = Field(
        "balanced", description="a sampler to begin with, ramped to `sampler`")
    sampler_ramp_epochs: Annotated[int, rule(rules.whole(1))] = Field(15, description="epochs of that ramp")
    sample_weights: Annotated[dict, rule(rules.sample_weights())] = Field(
        {}, description="{column: {value: w}}: such an image drawn w times as often as another of its class")
    augment: Augment = Field(default_factory=Augment)


class Model(Section):
    name: Annotated[str, rule(("a network name (lesion_cnn, or a timm model)",
                               lambda v: isinstance(v, str) and v != ""))] = Field(
        "lesion_cnn", description="lesion_cnn, or any timm model name")
    pretrained: Annotated[bool, rule(rules.boolean())] = Field(
        False, description="ImageNet weights from a weights package, else the Hugging Face Hub or its cache")
    weights: Annotated[str | None, rule(rules.text_or_null())] = Field(
        None, description="a local weights file (.pth/.safetensors)")
    normalization: Annotated[str | dict, rule((
        "auto, dataset, or {mean: [r, g, b], std: [r, g, b]} (0..1 scale, std > 0)",
        lambda v: v in ("auto", "dataset") or rules.mean_std(v)))] = Field(
        "auto", description="auto: the weights' own where the network starts from weights, else the data's")
    widths: Annotated[list[int], rule(("a list of whole numbers >= 1 (channels per stage)",
                                       lambda v: isinstance(v, list) and bool(v) and all(
                                           rules.whole(1)[1](w) for w in v)))] = Field(
        [32, 64, 128, 256], description="lesion_cnn: channels of the convolution stages")
    dropout: Annotated[float, rule(rules.number(0, 1))] = Field(0.3, description="before the classifier")


class Loss(Section):
    class_weights: Annotated[Balance, rule(rules.balance())] = Field(
        "none", description="none | sqrt | balanced, or a power p (weights count^-p)")
    label_smoothing: Annotated[float, rule(rules.number(0, 1))] = Field(0.05, description="cross entropy's")
    logit_adjustment: Annotated[float, rule(rules.number(0))] = Field(
        0.0, description="tau: train on logits + tau * log(class prior of the batches)")
    malignant_weight: Annotated[float, rule(rules.number(0))] = Field(
        0.0, description="w: add w * binary cross entropy of malignant vs benign")
    confirmed_weight: Annotated[float, rule(rules.number(0))] = Field(
        0.0, description="w: add w * that cross entropy over the malignant and the histopathology-confirmed benign")
    group_dro: Annotated[str | None, rule(rules.text_or_null())] = Field(
        None, description="a column (e.g. dx_type): group DRO over its value x class (null: off)")
    group_dro_step: Annotated[float, rule(rules.number(0, low_open=True))] = Field(
        0.01, description="group DRO's step: the group weights' exponentiated-gradient rate per batch")


class Optim(Section):
    lr: Annotated[float, rule(rules.number(0, low_open=True))] = Field(0.003, description="AdamW's learning rate")
    weight_decay: Annotated[float, rule(rules.number(0))] = Field(0.05, description="AdamW's (not on norms, biases)")
    warmup_epochs: Annotated[float, rule(rules.number(0))] = Field(1, description="linear warmup, then cosine")
    backbone_lr_scale: Annotated[float, rule(rules.number(0, 1, low_open=True))] = Field(
        1.0, description="a network that starts from weights: its backbone at this times lr")


class Calibration(Section):
    prior_correction: Annotated[bool, rule(rules.boolean())] = Field(
        True, description="add a * log(train class frequencies), a fitted on val")
    decision: Annotated[str, rule(rules.one_of("balanced", "accuracy"))] = Field(
        "balanced", description="the class named: balanced (balanced accuracy) | accuracy")
    malignant_sensitivity: Annotated[float, rule(rules.number(0, 1, low_open=True))] = Field(
        0.90, description="referral threshold: the highest reaching this on val")
    melanoma_sensitivity: Annotated[float, rule(rules.number(0, 1, low_open=True))] = Field(
        0.90, description="the same for melanoma alone")
    referral_confidence: Annotated[float | None, rule(rules.number(0.5, 1, low_open=True, nullable=True))] = Field(
        0.99, description="...with this confidence on new lesions; null: the point estimate")
    tta: Annotated[bool, rule(rules.boolean())] = Field(
        True, description="score each image as the mean of its 8 flips/90-degree rotations")
    bootstrap: Annotated[int, rule(rules.whole(1))] = Field(1000, description="lesion resamples for 95% CIs")
    ood_pass: Annotated[float | None, rule(rules.number(0.5, 1, low_open=True, nullable=True))] = Field(
        0.99, description="refuse images outside the training data: this share of val passes (null: off)")
    clinical: Annotated[bool, rule(rules.boolean())] = Field(
        True, description="fuse age, sex and body site (where the data has them) with the image")
    clinical_columns: Annotated[dict, rule(rules.mapping())] = Field(
        {"age": "age", "sex": "sex", "site": "localization"}, description="the data's column for each field")


class Trainer(Section):
    max_epochs: Annotated[int, rule(("a whole number >= 1, or -1 (no limit)", lambda v: isinstance(v, int) and not
                                     isinstance(v, bool) and (v >= 1 or v == -1)))] = Field(
        80, description="per member")
    members: Annotated[int, rule(rules.whole(1))] = Field(1, description=">1: an ensemble trained one after another")
    max_time: Annotated[None | str | float, rule((
        'a wall-clock limit "DD:HH:MM:SS" (e.g. "00:01:00:00"), a number of seconds, or null',
        rules.duration))] = Field(None, description='wall-clock limit "DD:HH:MM:SS"')
    budget: Annotated[None | str | float, rule((
        'a wall-clock budget for all of fit "DD:HH:MM:SS" (e.g. "00:00:25:00"), a number of seconds, or null',
        rules.duration))] = Field(None, description="fit's wall clock: plans the size and the training time")
    patience: Annotated[int, rule(rules.whole(1))] = Field(20, description="early stopping on val balanced accuracy")
    stop_at: Annotated[float | None, rule(rules.number(0, 1, nullable=True))] = Field(
        None, description="stop as soon as val balanced accuracy reaches this")
    ema_decay: Annotated[float | None, rule(rules.number(0, 1, nullable=True))] = Field(
        0.99, description="validate and checkpoint an exponential moving average of the weights (null: off)")
    accelerator: Annotated[str, rule(rules.one_of("auto", "cpu", "gpu", "cuda", "mps", "tpu"))] = Field(
        "auto", description="auto | cpu | gpu")
    devices: Annotated[int | str | list[int], rule(rules.devices())] = Field(
        1, description="per machine; >1 trains with DDP")
    num_nodes: Annotated[int, rule(rules.whole(1))] = Field(1, description="machines")
    strategy: Annotated[str, rule(("a Lightning strategy name (auto, ddp, ...)",
                                   lambda v: isinstance(v, str) and v != ""))] = Field(
        "auto", description="Lightning's strategies")
    precision: Annotated[str | int, rule(rules.one_of(
        "auto", "32-true", "32", 32, "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64", 64))] = Field(
        "auto", description="auto: bf16-mixed on CUDA; on a bf16 CPU the faster of the two; else 32-true")
    channels_last: Annotated[bool, rule(rules.boolean())] = Field(True, description="NHWC memory layout")
    limit_train_batches: Annotated[float, rule(rules.number(0, low_open=True))] = Field(
        1.0, description="a share (or a count) of the training batches an epoch")
    limit_val_batches: Annotated[float, rule(rules.number(0))] = Field(1.0, description="the same for validation")
    loggers: Annotated[list[str], rule(("a list of csv, tensorboard, mlflow", lambda v: isinstance(v, list) and all(
        x in ("csv", "tensorboard", "mlflow") for x in v)))] = Field(
        ["csv"], description="csv (always: RUN/logs/metrics.csv), tensorboard (RUN/tensorboard), mlflow")
    mlflow_uri: Annotated[str | None, rule(("a tracking URI (http://host:port, sqlite:///file.db, a folder) or null",
                                            lambda v: v is None or (isinstance(v, str) and v != "")))] = Field(
        None, description="MLflow tracking URI; null: $MLFLOW_TRACKING_URI, else RUN/../mlflow.db")
    mlflow_experiment: Annotated[str, rule(("a non-empty name", lambda v: isinstance(v, str) and v.strip() != ""))] = \
        Field("lesion-pl", description="the MLflow experiment a run logs to")


class Config(Section):
    seed: Annotated[int, rule(rules.whole(0))] = Field(42, description="training (and, with --seed, the split)")
    data: Data = Field(default_factory=Data)
    model: Model = Field(default_factory=Model)
    loss: Loss = Field(default_factory=Loss)
    optim: Optim = Field(default_factory=Optim)
    calibration: Calibration = Field(default_factory=Calibration)
    trainer: Trainer = Field(default_factory=Trainer)


def _label_space(value) -> bool:
    from ..classes import parse_label_space

    return parse_label_space(value) is not None  # raises, naming what is wrong
