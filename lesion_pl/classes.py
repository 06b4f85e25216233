"""The label space: class codes (in the order of the model's outputs), display names, which are malignant and
which one is melanoma. HAM10000's seven diagnoses are the default, defined here once; a run may name another
space (`data.classes`: a preset below, or its own codes) and everything downstream reads the run's
(`label_space(config.data)`, the checkpoint's config, calibration.json and the ONNX metadata carry it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import LesionPLError

CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

DISPLAY_NAMES: dict[str, str] = {
    "akiec": "Actinic keratosis / Bowen's disease",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}

MALIGNANT: tuple[str, ...] = ("akiec", "bcc", "mel")

NUM_CLASSES = len(CLASSES)
CLASS_TO_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}
MALIGNANT_INDICES: tuple[int, ...] = tuple(CLASS_TO_INDEX[c] for c in MALIGNANT)

if TYPE_CHECKING:
    from .config import Data


@dataclass(frozen=True)
class LabelSpace:
    """A run's classes. `source_map`: source labels this space takes in place of its own codes (HAM10000's
    diagnoses into a coarser space), applied before the user's `data.label_map`."""
    classes: tuple[str, ...]
    names: dict[str, str]
    malignant: tuple[str, ...]
    melanoma: str | None = None
    source_map: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def name(self, code: str) -> str:
        return self.names.get(code, code)

    def as_config(self) -> dict:
        """This space as `data.classes` takes it (and calibration.json records it)."""
        return {"codes": list(self.classes), "names": dict(self.names), "malignant": list(self.malignant),
                "melanoma": self.melanoma, "source_map": dict(self.source_map)}


HAM10000 = LabelSpace(CLASSES, DISPLAY_NAMES, MALIGNANT, "mel")

PRESETS: dict[str, LabelSpace] = {
    "ham10000": HAM10000,
    # melanoma against every other diagnosis, from HAM10000's (or ISIC's) labels
    "melanoma": LabelSpace(("mel", "other"), {"mel": "Melanoma", "other": "Any other lesion"}, ("mel",), "mel",
                           {c: "other" for c in CLASSES if c != "mel"} | {"scc": "other", "ak": "other"}),
    # ISIC 2019's eight diagnoses (its UNK column is for data.drop_labels); AK as HAM10000's akiec, malignant
    "isic2019": LabelSpace(("ak", "bcc", "bkl", "df", "mel", "nv", "scc", "vasc"),
                           {"ak": "Actinic keratosis", "bcc": "Basal cell carcinoma",
                            "bkl": "Benign keratosis-like lesion", "df": "Dermatofibroma", "mel": "Melanoma",
                            "nv": "Melanocytic nevus", "scc": "Squamous cell carcinoma", "vasc": "Vascular lesion"},
                           ("ak", "bcc", "mel", "scc"), "mel", {"akiec": "ak"}),
}


def _codes(value, what: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise LesionPLError(f"data.classes.{what} must be a list of class codes (text), got {value!r}")
    return [v.strip().lower() for v in value]


def parse_label_space(spec) -> LabelSpace:
    """`data.classes`: null or a preset's name (ham10000, melanoma, isic2019), or a mapping {codes: [...],
    malignant: [...], melanoma: CODE or null, names: {code: name}, source_map: {label: code}}."""
    if spec is None:
        return HAM10000
    if isinstance(spec, str):
        if spec.lower() not in PRESETS:
            raise LesionPLError(f"data.classes must be one of {', '.join(PRESETS)} or a mapping with codes, "
                                f"got {spec!r}")
        return PRESETS[spec.lower()]
    if not isinstance(spec, dict):
        raise LesionPLError(f"data.classes must be a preset name ({', '.join(PRESETS)}) or a mapping, got {spec!r}")
    unknown = set(spec) - {"codes", "names", "malignant", "melanoma", "source_map"}
    if unknown:
        raise LesionPLError(f"data.classes has unknown key(s) {', '.join(sorted(unknown))} "
                            "(known: codes, names, malignant, melanoma, source_map)")
    codes = _codes(spec.get("codes"), "codes")
    if len(codes) < 2 or len(set(codes)) != len(codes):
        raise LesionPLError(f"data.classes.codes needs two or more different codes, got {codes}")
    malignant = _codes(spec.get("malignant") or [], "malignant")
    melanoma = spec.get("melanoma")
    if melanoma is not None and not isinstance(melanoma, str):
        raise LesionPLError(f"data.classes.melanoma must be one code (text) or null, got {melanoma!r}")
    melanoma = melanoma.strip().lower() if isinstance(melanoma, str) else melanoma
    for code in malignant + ([melanoma] if melanoma is not None else []):
        if code not in codes:
            raise LesionPLError(f"data.classes names '{code}' as malignant or melanoma, which is not one of its "
                                f"codes ({', '.join(codes)})")
    if melanoma is not None and melanoma not in malignant:
        raise LesionPLError(f"data.classes.melanoma '{melanoma}' must also be in data.classes.malignant")
    for key, shape in (("names", "{code: name}"), ("source_map", "{label: code}")):
        if not isinstance(spec.get(key) or {}, dict):
            raise LesionPLError(f"data.classes.{key} must be a mapping {shape}, got {spec[key]!r}")
    names = {str(k).strip().lower(): str(v) for k, v in (spec.get("names") or {}).items()}
    source_map = {str(k).strip().lower(): str(v).strip().lower() for k, v in (spec.get("source_map") or {}).items()}
    for k, v in source_map.items():
        if v not in codes:
            raise LesionPLError(f"data.classes.source_map maps '{k}' to '{v}', which is not one of its codes")
    return LabelSpace(tuple(codes), {c: names.get(c, DISPLAY_NAMES.get(c, c)) for c in codes},
                      tuple(c for c in codes if c in malignant), melanoma, source_map)


def label_space(data: Data) -> LabelSpace:
    """The run's label space, from its config's data section (`data.classes`)."""
    return parse_label_space(data.classes)
