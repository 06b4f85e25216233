"""The losses against HAM10000's shortcut: group DRO over a column's value x class (`loss.group_dro`) and the
malignant-vs-confirmed-benign term (`loss.confirmed_weight`): the losses, what the data module hands over with
each training image for them, and fits on real images that train with them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lesion_pl.classes import HAM10000
from lesion_pl.config import load_config
from lesion_pl.errors import LesionPLError
from lesion_pl.losses import GroupDRO, malignant_loss, training_loss
from lesion_pl.module import LesionClassifier

from .conftest import FAST, invoke, make_dataset, sample_meta


def test_group_dro_weights_the_groups_by_their_losses_so_far():
    """Two batches through Sagawa et al.'s update, checked against the same arithmetic in numpy."""
    dro = GroupDRO(3, step=0.5)
    batches = [(np.array([1.0, 3.0, 2.0, 0.5]), np.array([0, 0, 1, 1])),  # group 2 absent
               (np.array([4.0, 1.0, 1.0]), np.array([2, 2, 0]))]  # group 1 absent
    q = np.full(3, 1 / 3)
    for losses, groups in batches:
        means = np.array([losses[groups == g].mean() if (groups == g).any() else 0.0 for g in range(3)])
        q = q * np.exp(0.5 * means)
        q /= q.sum()
        got = dro(torch.tensor(losses, dtype=torch.float32), torch.tensor(groups))
        assert float(got) == pytest.approx(float(q @ means), rel=1e-5)
        assert np.allclose(dro.q.numpy(), q, atol=1e-6)
    assert dro.q.argmax() == 0  # the most weight: the highest loss summed over batches (2 + 1, against 0 + 2.5)
    # the gradient reaches each image as its group's weight over the group's size
    losses = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    groups = torch.tensor([0, 0, 1])
    dro(losses, groups).backward()
    q = dro.q
    assert torch.allclose(losses.grad, torch.stack([q[0] / 2, q[0] / 2, q[1]]), atol=1e-6)


def test_a_training_step_under_group_dro_is_its_weighted_mean_and_validation_the_plain_one():
    cfg = load_config(None, ["model.widths=[8,16,32,64]", "loss.label_smoothing=0", "loss.group_dro=dx_type",
                             "loss.group_dro_step=0.1"])
    m = LesionClassifier(cfg, [0.5] * 3, [0.2] * 3, groups=["a/mel", "b/nv"]).eval()
    m.log = lambda *a, **k: None
    torch.manual_seed(3)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    target = torch.tensor([4, 4, 5, 5, 5, 5])
    groups = torch.tensor([0, 0, 1, 1, 1, 1])
    with torch.no_grad():
        each = F.cross_entropy(m(images), target, reduction="none")
        means = torch.stack([each[:2].mean(), each[2:].mean()])
        q = torch.full((2,), 0.5) * torch.exp(0.1 * means)
        q = q / q.sum()
        assert torch.allclose(m._step((images, target, {"group": groups}), "train"), (q * means).sum(), atol=1e-5)
        assert torch.allclose(m._step((images, target), "val"), each.mean(), atol=1e-5)


def _datamodule(root, *sets):
    from lesion_pl.data.datamodule import LesionDataModule

    cfg = load_config(None, [f"data.root={root}", "data.image_size=32", "data.batch_size=16", *sets])
    return LesionDataModule(cfg.data, cfg.seed, progress=False, loss=cfg.loss).build()


def test_training_batches_carry_each_images_group_and_the_others_do_not(small_ham):
    dm = _datamodule(small_ham, "loss.group_dro=dx_type")
    rows = dm.table.iloc[dm.indices("train")]
    expected = rows["dx_type"].astype(str) + "/" + rows["dx"]
    groups = dm.groups()
    assert list(groups.categories) == sorted(set(expected))  # only the pairs train holds, e.g. follow_up/nv
    assert "follow_up/nv" in groups.categories and "follow_up/mel" not in groups.categories
    loader = dm.train_dataloader()
    seen = 0
    for images, labels, tags in loader:
        g = tags["group"]
        assert set(tags) == {"group"} and images.dtype == torch.uint8 and len(images) == len(labels) == len(g)
        for label, code in zip(labels.tolist(), g.tolist(), strict=True):
            assert HAM10000.index[groups.categories[code].split("/")[1]] == label
        seen += len(g)
    assert seen > 0
    # each dataset item's group is its own row's pair (by position, not only consistent with the label)
    ds = loader.dataset
    for i in range(0, len(ds), 7):
        assert groups.categories[ds[i][2]["group"]] == expected.iloc[i]
    assert all(len(batch) == 2 for batch in dm.val_dataloader())  # validation has no groups
    assert all(len(batch) == 2 for batch in _datamodule(small_ham).train_dataloader())  # nor does training without


def test_group_dro_on_a_column_the_data_lacks_fails_before_anything_is_written(small_ham, tmp_path):
    with pytest.raises(LesionPLError, match="loss.group_dro names column 'scanner', which the data in .* does not "
                                            "have \\(it has: .*dx_type"):
        _datamodule(small_ham, "loss.group_dro=scanner")
    out = tmp_path / "run"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *FAST,
               "--set", "loss.group_dro=scanner")
    assert r.exit_code != 0 and "loss.group_dro names column 'scanner'" in r.output
    assert not out.exists()


def test_a_fit_under_group_dro_logs_where_the_weights_went(small_ham, tmp_path):
    out = tmp_path / "dro"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 2, *FAST,
               "--set", "loss.group_dro=dx_type", "--set", "loss.group_dro_step=0.05")
    assert r.exit_code == 0, r.output
    log = pd.read_csv(out / "logs" / "metrics.csv")
    weights = log.filter(like="train/dro_weight/").dropna(how="all")
    assert len(weights) == 2  # one row per epoch
    assert "train/dro_weight/follow_up/nv" in weights and "train/dro_weight/histo/mel" in weights
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert weights.iloc[-1].max() > 1.0 / weights.shape[1]  # moved from uniform
    # the weights are training state: the last checkpoint keeps them, and a resumed fit starts from them
    from lesion_pl.checkpoint import load_classifier
    from lesion_pl.run import RunDir
    from lesion_pl.safe_load import torch_load

    ckpt = torch_load(RunDir(out).last, "checkpoint")
    kept = ckpt["group_dro_q"]
    model = load_classifier(RunDir(out).last)
    assert sorted(model.group_names) == sorted(c.removeprefix("train/dro_weight/") for c in weights.columns)
    logged = weights.iloc[-1][[f"train/dro_weight/{name}" for name in model.group_names]]
    assert np.allclose(kept.numpy(), logged.to_numpy(), atol=1e-6)  # the last epoch's, group by group
    assert torch.allclose(model.dro.q, torch.full_like(kept, 1 / len(kept)))  # a model built anew starts uniform
    model.on_load_checkpoint(ckpt)
    assert torch.equal(model.dro.q, kept)
    r = invoke("fit", "--out", out, "--resume", "--max-epochs", 3, "--quiet")
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(out / "logs" / "metrics.csv").filter(like="train/dro_weight/").dropna(how="all")) == 3


def test_the_confirmed_term_is_malignant_against_benign_over_the_malignant_and_the_confirmed_images():
    cfg = load_config(None, ["loss.label_smoothing=0", "loss.confirmed_weight=0.7"])
    torch.manual_seed(4)
    logits = torch.randn(8, 7)
    target = torch.tensor([5, 5, 4, 4, 2, 1, 0, 3])  # nv, nv, mel, mel, bkl, bcc, akiec, df
    confirmed = torch.tensor([True, False, True, False, False, False, True, True])
    term = training_loss(logits, target, None, cfg.loss, target=target, tags={"confirmed": confirmed})
    plain = F.cross_entropy(logits, target)
    # the confirmed nevus and df (rows 0, 7) and every malignant image (mel, bcc, akiec: rows 2, 3, 5, 6); not the
    # unconfirmed nevus (1) or keratosis (4)
    rows = torch.tensor([0, 2, 3, 5, 6, 7])
    p = logits.double().softmax(1)[:, [0, 1, 4]].sum(1)[rows]  # akiec, bcc, mel
    y = torch.tensor([0, 1, 1, 1, 1, 0], dtype=torch.float64)
    by_hand = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert float(term) == pytest.approx(float(plain + 0.7 * by_hand), rel=1e-5)
    # validation (no tags) and the default (weight 0): the plain cross entropy; no image in the term: nothing added
    assert torch.allclose(training_loss(logits, target, None, cfg.loss, target=target), plain)
    off = load_config(None, ["loss.label_smoothing=0"]).loss
    assert torch.allclose(training_loss(logits, target, None, off, target=target, tags={"confirmed": confirmed}), plain)
    benign = torch.tensor([5, 5, 2, 3])
    none = training_loss(logits[:4], benign, None, cfg.loss, target=benign, tags={"confirmed": torch.zeros(4).bool()})
    assert torch.allclose(none, F.cross_entropy(logits[:4], benign))
    assert float(malignant_loss(logits, target, rows=torch.ones(8).bool())) == pytest.approx(
        float(malignant_loss(logits, target)))


def test_training_images_carry_whether_histopathology_confirmed_them(small_ham):
    dm = _datamodule(small_ham, "loss.confirmed_weight=1.0", "loss.group_dro=dx_type")
    rows = dm.table.iloc[dm.indices("train")]
    confirmed = dm.tags()["confirmed"]
    assert confirmed == (rows["dx_type"] == "histo").tolist() and 0 < sum(confirmed) < len(confirmed)
    images, labels, tags = next(iter(dm.train_dataloader()))
    assert set(tags) == {"group", "confirmed"} and tags["confirmed"].dtype == torch.bool


def test_the_confirmed_term_on_data_without_dx_type_fails_before_anything_is_written(ham_root, ham_meta, tmp_path):
    root = make_dataset(ham_root, sample_meta(ham_meta, 30).drop(columns="dx_type"), tmp_path / "no_dx_type")
    out = tmp_path / "run"
    r = invoke("fit", "--data-root", root, "--out", out, "--max-epochs", 1, *FAST, "--set", "loss.confirmed_weight=1")
    assert r.exit_code != 0 and "loss.confirmed_weight names column 'dx_type', which the data in" in r.output
    assert not out.exists()


def test_a_fit_with_the_confirmed_term_trains_and_records_it(small_ham, tmp_path):
    out = tmp_path / "confirmed"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *FAST,
               "--set", "loss.confirmed_weight=1.0")
    assert r.exit_code == 0, r.output
    log = pd.read_csv(out / "logs" / "metrics.csv")
    assert np.isfinite(log["train/loss_epoch"].dropna()).all()
    assert "confirmed_weight: 1.0" in (out / "config.yaml").read_text()
