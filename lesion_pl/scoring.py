"""How one prediction is scored, defined once: the referral scores (the malignancy score, the summed
probabilities of mel, bcc and akiec; the melanoma score), the calibrated probabilities, the class named,
and the referral decision.

`ScoringPolicy` holds a run's fitted calibration (temperature, class-prior bias, decision rule, clinical
metadata model, referral thresholds), loaded from calibration.json or from an exported model's ONNX
metadata, and turns network outputs into a `Scored`: calibrate, test, the report, explain, export and the
torch-free runtime all score through it. numpy only: the ONNX runtime imports it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import clinical
from .classes import HAM10000, LabelSpace, parse_label_space


def score_classes(name: str, space: LabelSpace = HAM10000) -> tuple[str, ...]:
    """The classes a score sums: "malignant" the space's malignant set, "melanoma" its melanoma class."""
    if name == "malignant":
        return space.malignant
    if name == "melanoma" and space.melanoma is not None:
        return (space.melanoma,)
    raise KeyError(f"the label space {', '.join(space.classes)} has no {name} score")


def score_names(space: LabelSpace = HAM10000) -> tuple[str, ...]:
    """The referral scores a space has: malignant (where any class is), melanoma (where it has one)."""
    return tuple(n for n, ok in (("malignant", bool(space.malignant)), ("melanoma", space.melanoma is not None))
                 if ok)


def score_indices(name: str, space: LabelSpace = HAM10000) -> list[int]:
    """The output columns a score sums, in the space's class order."""
    members = score_classes(name, space)
    return [i for i, c in enumerate(space.classes) if c in members]


def referral_score(probs, name: str = "malignant", space: LabelSpace = HAM10000):
    """The score of each row of probabilities ([N, C] -> [N]; one row [C] -> a number): the one place a score
    is computed, for numpy arrays and (validation's metrics) torch tensors alike."""
    probs = probs if hasattr(probs, "shape") else np.asarray(probs)
    return probs[..., score_indices(name, space)].sum(axis=-1)


def is_positive(labels: np.ndarray, name: str = "malignant", space: LabelSpace = HAM10000) -> np.ndarray:
    """Which labels (class indices of the space) count as positive for a score."""
    return np.isin(labels, score_indices(name, space))


def scores_and_positives(probs: np.ndarray, labels: np.ndarray, name: str,
                         space: LabelSpace = HAM10000) -> tuple[np.ndarray, np.ndarray]:
    return referral_score(probs, name, space), is_positive(labels, name, space)


def describe(name: str, space: LabelSpace = HAM10000) -> str:
    """The score in words, for the ONNX metadata."""
    return "sum of the probabilities of " + ", ".join(score_classes(name, space))


def softmax(logits: np.ndarray, temperature: float = 1.0, bias=None) -> np.ndarray:
    """Softmax over the last axis of logits / T + bias; [N, C] or [N, views, C] (views averaged)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=-1, keepdims=True)
    return p.mean(axis=1) if p.ndim == 3 else p


def decide(probs: np.ndarray, decision_bias=None) -> np.ndarray:
    """The class named for each row of probabilities: argmax of log p + `decision_bias` (None: argmax p)."""
    probs = np.asarray(probs, dtype=np.float64)  # float32 would round the clip's 1e-300 to 0
    if decision_bias is None:
        return probs.argmax(axis=-1)
    return (np.log(np.clip(probs, 1e-300, None)) + np.asarray(decision_bias)).argmax(axis=-1)


def metadata_space(value) -> LabelSpace:
    """The label space an ONNX model's metadata states (`value(key, default)` reads one key): its classes,
    display names, malignant list and melanoma class; a model from before spaces were named: HAM10000's,
    with its own classes and malignant list where it lists them."""
    classes = value("classes", list(HAM10000.classes))
    names = value("display_names", None)
    melanoma = value("melanoma", "mel" if "mel" in classes else None)
    return parse_label_space({"codes": classes, "names": dict(zip(classes, names, strict=True)) if names else {},
                              "malignant": value("malignant", list(HAM10000.malignant)), "melanoma": melanoma})


@dataclass
class Scored:
    """What a policy makes of a batch of images."""
    probabilities: np.ndarray  # [N, C] calibrated, fused with the metadata where given
    image_probabilities: np.ndarray  # [N, C] calibrated, the image alone
    with_metadata: np.ndarray | None  # [N] bool: metadata fused into this row (None: none given)
    top_index: np.ndarray  # [N] the class named, by the run's decision rule
    scores: dict[str, np.ndarray]  # score name -> [N]
    thresholds: dict[str, float | np.ndarray]  # score name -> its referral threshold (per image where they differ)
    classes: tuple[str, ...]  # the columns' class codes (the policy's label space)

    def refer(self, name: str = "malignant") -> np.ndarray | None:
        """True where the score reaches its referral threshold (None: the run has no threshold for it)."""
        return None if name not in self.thresholds else self.scores[name] >= self.thresholds[name]

    def take(self, rows: np.ndarray) -> Scored:
        """These rows only (a boolean mask or indices): a subset scored as the whole was."""
        def pick(a):
            return a if a is None or np.ndim(a) == 0 else np.asarray(a)[rows]
        return Scored(self.probabilities[rows], self.image_probabilities[rows], pick(self.with_metadata),
                      self.top_index[rows], {k: v[rows] for k, v in self.scores.items()},
                      {k: pick(v) for k, v in self.thresholds.items()}, self.classes)


@dataclass(frozen=True)
class ScoringPolicy:
    space: LabelSpace = HAM10000
    temperature: float = 1.0
    class_bias: np.ndarray | None = None  # added to logits / T (the training prior, `calibration.prior_correction`)
    decision_bias: np.ndarray | None = None  # added to log-probabilities to name a class (None: the most probable)
    decision: str = "accuracy"
    clinical: dict | None = None  # the metadata model (lesion_pl.clinical), its fusion weight inside
    operating_points: Mapping[str, dict] = field(default_factory=dict)  # score -> fitted threshold and promise
    operating_points_image_only: Mapping[str, dict] = field(default_factory=dict)  # for images without metadata
    tta: bool = False  # fitted on the mean of 8 flips/rotations
    in_graph: bool = False  # temperature and class bias already applied (an ONNX model's probabilities output)

    @classmethod
    def from_calibration(cls, cal: Mapping | None, space: LabelSpace = HAM10000) -> ScoringPolicy:
        """A run's calibration.json (None or {}: uncalibrated, the most probable class named); its label space
        is the one it records (calibrations made before spaces existed: HAM10000's), else `space`."""
        cal = cal or {}
        points = dict(cal.get("operating_points") or {})

        def array(key):
            return None if cal.get(key) is None else np.asarray(cal[key], dtype=np.float64)
        space = parse_label_space(cal["label_space"]) if cal.get("label_space") else space
        return cls(space, float(cal.get("temperature", 1.0)), array("class_bias"),
                   array("decision_bias"), cal.get("decision", "accuracy"), cal.get("clinical"), points,
                   dict(cal.get("operating_points_image_only") or points), bool(cal.get("tta", False)))

    @classmethod
    def from_onnx_metadata(cls, meta: Mapping[str, str]) -> ScoringPolicy:
        """An exported model's lesion-pl metadata (keys without the prefix), read as the file states it:
        its own label space; the temperature and class bias are inside the graph."""
        def value(key, default):
            return json.loads(meta[key]) if key in meta else default
        space = metadata_space(value)
        bias = value("decision_bias", None)
        points = value("operating_points", {})
        return cls(space, float(meta.get("temperature", 1.0)),
                   None, None if bias is None else np.asarray(bias, dtype=np.float64),
                   meta.get("decision_rule", "accuracy"), value("clinical", None), points,
                   value("operating_points_image_only", {}) or points, bool(value("tta", False)), in_graph=True)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.space.classes

    @property
    def score_names(self) -> tuple[str, ...]:
        return score_names(self.space)

    def indices(self, name: str) -> list[int]:
        """The columns a score sums, in this policy's classes."""
        return score_indices(name, self.space)

    def score(self, probs: np.ndarray, name: str = "malignant") -> np.ndarray:
        return referral_score(probs, name, self.space)

    def image_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the image alone: softmax(logits / T + class_bias), [N, C] or
        [N, views, C] (the views' probabilities averaged)."""
        if self.in_graph:
            raise ValueError("this policy's temperature is inside the ONNX graph: score its probabilities "
                             "with `apply`")
        return softmax(logits, self.temperature, self.class_bias)

    def fuse(self, image_probs: np.ndarray, records: Mapping[str, Sequence] | None):
        """(probabilities fused with each row's metadata, which rows had any); unchanged and None without a
        metadata model or without records."""
        if self.clinical is None or records is None:
            return np.asarray(image_probs), None
        return clinical.fused(image_probs, records, self.clinical)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return decide(probs, self.decision_bias)

    def thresholds(self, with_metadata: np.ndarray | None) -> dict[str, float | np.ndarray]:
        """Each score's referral threshold for these rows: the fused one where metadata was fused, the
        image-only one elsewhere (one number where no metadata was given)."""
        out = {}
        for name, op in self.operating_points_image_only.items():
            alone = float(op["threshold"])
            fused = self.operating_points.get(name, op)["threshold"] if self.clinical else alone
            out[name] = alone if with_metadata is None else np.where(with_metadata, float(fused), alone)
        return out

    def apply(self, image_probs: np.ndarray, records: Mapping[str, Sequence] | None = None) -> Scored:
        """Calibrated image probabilities [N, C] (and optional metadata columns) -> everything reported."""
        image_probs = np.asarray(image_probs)
        probs, used = self.fuse(image_probs, records)
        return Scored(probs, image_probs, used, self.decide(probs), {n: self.score(probs, n) for n in self.score_names},
                      self.thresholds(used), self.classes)

    def __call__(self, logits: np.ndarray, records: Mapping[str, Sequence] | None = None) -> Scored:
        """Network logits [N, C] or [N, views, C] -> Scored."""
        return self.apply(self.image_probabilities(logits), records)

    @staticmethod
    def mean_views(view_probs: np.ndarray) -> np.ndarray:
        """[views, N, C] calibrated probabilities of each view -> [N, C]: TTA averages probabilities."""
        return np.asarray(view_probs).mean(axis=0)
