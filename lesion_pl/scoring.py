"""The referral scores, defined once: the malignancy score (the summed probabilities of mel, bcc and
akiec) and the melanoma score, and who counts as positive for each. numpy only: the torch-free ONNX
runtime imports it, and the torch metrics take their class lists from here."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .classes import CLASSES, MALIGNANT

SCORES: dict[str, tuple[str, ...]] = {"malignant": MALIGNANT, "melanoma": ("mel",)}  # score -> classes summed


def score_indices(name: str, classes: Sequence[str] = CLASSES) -> list[int]:
    """The output columns a score sums, in a model's class order (`classes`)."""
    return [i for i, c in enumerate(classes) if c in SCORES[name]]


def referral_score(probs: np.ndarray, name: str = "malignant", classes: Sequence[str] = CLASSES) -> np.ndarray:
    """The score of each row of probabilities ([N, C] -> [N]; one row [C] -> a number)."""
    return np.asarray(probs)[..., score_indices(name, classes)].sum(axis=-1)


def is_positive(labels: np.ndarray, name: str = "malignant") -> np.ndarray:
    """Which class indices (in CLASSES order) count as positive for a score."""
    return np.isin(labels, score_indices(name))


def scores_and_positives(probs: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    return referral_score(probs, name), is_positive(labels, name)


def describe(name: str) -> str:
    """The score in words, for the ONNX metadata."""
    return "sum of the probabilities of " + ", ".join(SCORES[name])
