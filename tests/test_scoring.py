"""The referral scores are defined once (lesion_pl/scoring.py); the torch metrics and the ONNX metadata
follow that definition."""
from __future__ import annotations

import numpy as np
import torch

from lesion_pl.classes import CLASSES, MALIGNANT
from lesion_pl.evaluate.metrics import is_malignant, malignancy
from lesion_pl.scoring import describe, is_positive, referral_score, score_indices


def test_the_scores_sum_their_classes():
    probs = np.random.default_rng(0).dirichlet(np.ones(len(CLASSES)), 50)
    mal = sum(probs[:, CLASSES.index(c)] for c in MALIGNANT)
    np.testing.assert_allclose(referral_score(probs, "malignant"), mal)
    np.testing.assert_allclose(referral_score(probs, "melanoma"), probs[:, CLASSES.index("mel")])
    assert referral_score(probs[0], "malignant") == mal[0]  # one row
    labels = np.arange(len(CLASSES))
    assert [CLASSES[i] for i in labels[is_positive(labels, "malignant")]] == sorted(MALIGNANT)
    # another class order (an ONNX file's) picks the same classes by name
    order = list(reversed(CLASSES))
    assert [order[i] for i in score_indices("malignant", order)] == sorted(MALIGNANT, reverse=True)
    assert describe("malignant") == "sum of the probabilities of " + ", ".join(MALIGNANT)


def test_the_torch_metrics_use_the_same_score():
    probs = np.random.default_rng(1).dirichlet(np.ones(len(CLASSES)), 20)
    labels = np.random.default_rng(2).integers(0, len(CLASSES), 20)
    np.testing.assert_allclose(malignancy(torch.from_numpy(probs)).numpy(), referral_score(probs, "malignant"))
    assert is_malignant(torch.from_numpy(labels)).bool().numpy().tolist() == is_positive(labels).tolist()
