"""The training loss: the optional malignant-vs-benign term beside the 7-class cross entropy."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lesion_pl.classes import MALIGNANT_INDICES, NUM_CLASSES
from lesion_pl.config import config_from, load_config
from lesion_pl.errors import LesionPLError
from lesion_pl.losses import malignant_loss
from lesion_pl.module import LesionClassifier

SMALL = ["model.widths=[8,16,32,64]", "loss.label_smoothing=0"]


def _by_hand(logits: torch.Tensor, y_malignant: torch.Tensor) -> torch.Tensor:
    """Binary cross entropy of the summed malignant probability, from the softmax."""
    p = logits.double().softmax(dim=1)[:, list(MALIGNANT_INDICES)].sum(dim=1)
    y = y_malignant.double()
    return -(y * p.log() + (1 - y) * (1 - p).log()).mean()


def test_malignant_loss_is_the_binary_cross_entropy_of_the_summed_malignant_probability():
    torch.manual_seed(0)
    logits = torch.randn(64, NUM_CLASSES) * 3
    target = torch.arange(64) % NUM_CLASSES
    y = torch.tensor([int(t) in MALIGNANT_INDICES for t in target])
    assert torch.allclose(malignant_loss(logits, target).double(), _by_hand(logits, y), atol=1e-5)
    # one-hot and mixed (MixUp/CutMix) targets: the malignant share of the target is the binary label
    one_hot = F.one_hot(target, NUM_CLASSES).float()
    assert torch.allclose(malignant_loss(logits, one_hot), malignant_loss(logits, target), atol=1e-6)
    mixed = 0.7 * one_hot + 0.3 * one_hot.roll(1, dims=0)
    share = 0.7 * y.double() + 0.3 * y.roll(1).double()
    assert torch.allclose(malignant_loss(logits, mixed).double(), _by_hand(logits, share), atol=1e-5)


def test_malignant_loss_sees_only_how_much_probability_each_group_holds():
    torch.manual_seed(1)
    logits = torch.randn(16, NUM_CLASSES)
    target = torch.arange(16) % NUM_CLASSES
    malignant = list(MALIGNANT_INDICES)
    benign = [i for i in range(NUM_CLASSES) if i not in MALIGNANT_INDICES]
    within = logits.clone()  # shuffle the logits inside each group: the groups' sums stay
    within[:, malignant] = logits[:, malignant[::-1]]
    within[:, benign] = logits[:, benign[1:] + benign[:1]]
    assert torch.allclose(malignant_loss(within, target), malignant_loss(logits, target), atol=1e-6)
    across = logits.clone()  # swap a malignant and a benign class: the sums change
    across[:, [malignant[0], benign[0]]] = logits[:, [benign[0], malignant[0]]]
    assert not torch.allclose(malignant_loss(across, target), malignant_loss(logits, target), atol=1e-3)


def test_training_loss_adds_the_weighted_malignant_term():
    cfg = load_config(None, [*SMALL, "loss.malignant_weight=0.5"])
    m = LesionClassifier(cfg, [0.5] * 3, [0.2] * 3).eval()
    m.log = lambda *a, **k: None
    torch.manual_seed(2)
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    target = torch.arange(7)
    with torch.no_grad():
        logits = m(images)
        loss = m._step((images, target), "train")
    expected = F.cross_entropy(logits, target) + 0.5 * _by_hand(logits, torch.tensor(
        [int(t) in MALIGNANT_INDICES for t in target])).float()
    assert torch.allclose(loss, expected, atol=1e-5)
    # the default (0) and an older run's config without the key (as a checkpoint loads it): the plain cross entropy
    older = {**cfg.model_dump(), "loss": {"label_smoothing": 0.0}}  # no malignant_weight key: its default
    for config in (load_config(None, SMALL), config_from(older)):
        plain = LesionClassifier(config, [0.5] * 3, [0.2] * 3).eval()
        plain.load_state_dict(m.state_dict())
        plain.log = lambda *a, **k: None
        with torch.no_grad():
            assert torch.allclose(plain._step((images, target), "train"), F.cross_entropy(logits, target), atol=1e-6)


@pytest.mark.parametrize("value", [-0.5, "yes", True, [1]])
def test_bad_malignant_weight_is_refused(value):
    """Where a config is made (a file, --set, a checkpoint's): one line; set in code: the model refuses it too."""
    import yaml
    from pydantic import ValidationError

    with pytest.raises(LesionPLError, match=r"loss.malignant_weight must be a number >= 0, got "):
        load_config(None, [*SMALL, f"loss.malignant_weight={yaml.safe_dump(value, default_flow_style=True).strip()}"])
    with pytest.raises(ValidationError, match="a number >= 0"):
        load_config(None, SMALL).loss.malignant_weight = value
