"""Class imbalance: what the samplers draw, the loss weights, and the logit-adjusted loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lesion_pl.config import load_config
from lesion_pl.module import LesionClassifier


def _datamodule(root, *sets):
    from lesion_pl.data.datamodule import LesionDataModule

    cfg = load_config(None, [f"data.root={root}", "data.image_size=32", "data.batch_size=16", *sets])
    return LesionDataModule(cfg, progress=False).build()


@pytest.mark.parametrize("sampler, power", [("shuffle", 0.0), ("sqrt", 0.5), ("balanced", 1.0), (0.75, 0.75)])
def test_training_batches_follow_the_sampled_class_prior(small_ham, sampler, power):
    dm = _datamodule(small_ham, f"data.sampler={sampler}")
    counts = dm.class_counts().astype(float)
    prior = np.array(dm.sampled_class_prior())
    assert np.allclose(prior, counts ** (1 - power) / (counts ** (1 - power)).sum())
    drawn, loader = np.zeros(len(prior)), dm.train_dataloader()
    for _ in range(30):  # epochs: Lightning asks for the loader once
        for _, y in loader:
            drawn += np.bincount(y.numpy(), minlength=len(prior))
    assert np.abs(drawn / drawn.sum() - prior).max() < 0.02


def test_sampler_power_outside_0_1_is_refused(small_ham):
    from lesion_pl.errors import LesionPLError

    with pytest.raises(LesionPLError, match=r"data.sampler must be one of .* or a power in \[0, 1\], got '1.5'"):
        _datamodule(small_ham, "data.sampler=1.5").train_dataloader()


def test_balanced_class_weights_equalise_the_classes(small_ham):
    dm = _datamodule(small_ham, "loss.class_weights=balanced")
    counts, w = dm.class_counts(), np.array(dm.class_weights())
    assert np.allclose(counts * w, (counts * w)[0])      # every class weighs the same in the loss
    assert np.isclose((counts * w).sum() / counts.sum(), 1.0)
    assert _datamodule(small_ham).class_weights() is None  # default: none


def test_logit_adjusted_loss_shifts_training_logits_only():
    prior = [0.5, 0.2, 0.1, 0.05, 0.05, 0.05, 0.05]
    cfg = load_config(None, ["model.widths=[8,16,32,64]", "loss.logit_adjustment=1.0", "loss.label_smoothing=0"])
    m = LesionClassifier(cfg, [0.5] * 3, [0.2] * 3, None, prior).eval()
    m.log = lambda *a, **k: None
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    target = torch.tensor([0, 1, 2, 3, 4, 6])
    logits = m(images)
    expected = F.cross_entropy(logits + torch.log(torch.tensor(prior)), target)
    assert torch.allclose(m._step((images, target), "train"), expected, atol=1e-6)
    assert torch.allclose(m._step((images, target), "val"), F.cross_entropy(logits, target), atol=1e-6)
    # tau 0 (the default) or no prior: the plain loss
    plain = LesionClassifier(load_config(None, ["model.widths=[8,16,32,64]"]), [0.5] * 3, [0.2] * 3, None, prior)
    assert plain.logit_shift is None
