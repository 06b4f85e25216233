"""Class imbalance: what the samplers draw, the loss weights, and the logit-adjusted loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lesion_pl.classes import HAM10000
from lesion_pl.config import load_config
from lesion_pl.module import LesionClassifier


def _datamodule(root, *sets):
    from lesion_pl.data.datamodule import LesionDataModule

    cfg = load_config(None, [f"data.root={root}", "data.image_size=32", "data.batch_size=16", *sets])
    return LesionDataModule(cfg.data, cfg.seed, progress=False).build()


@pytest.mark.parametrize("sampler, power", [("shuffle", 0.0), ("sqrt", 0.5), ("balanced", 1.0), (0.75, 0.75)])
def test_training_batches_follow_the_sampled_class_prior(small_ham, sampler, power):
    dm = _datamodule(small_ham, f"data.sampler={sampler}", "data.sampler_start=null")  # no ramp
    counts = dm.class_counts().astype(float)
    prior = np.array(dm.sampled_class_prior())
    assert np.allclose(prior, counts ** (1 - power) / (counts ** (1 - power)).sum())
    drawn, loader = np.zeros(len(prior)), dm.train_dataloader()
    for _ in range(30):  # epochs: Lightning asks for the loader once
        for _, y in loader:
            drawn += np.bincount(y.numpy(), minlength=len(prior))
    assert np.abs(drawn / drawn.sum() - prior).max() < 0.02


@pytest.mark.parametrize("sampler, power", [("balanced", 1.0), ("sqrt", 0.5), ("shuffle", 0.0)])
def test_sample_weights_draw_follow_up_nevi_less_and_the_prior_follows(small_ham, sampler, power):
    """data.sample_weights {dx_type: {follow_up: 0.25}}: within the nevi, a follow-up image is drawn a quarter as
    often as another; the classes are balanced on those weighted counts, and the batches follow the prior the
    calibration is told (counted over 200 epochs of the real loader's sampler)."""
    dm = _datamodule(small_ham, f"data.sampler={sampler}", "data.sampler_start=null",
                     "data.sample_weights={dx_type: {follow_up: 0.25}}")
    rows = dm.table.iloc[dm.indices("train")]
    follow = (rows["dx_type"] == "follow_up").to_numpy()
    assert follow.sum() >= 5  # the sample has follow-up nevi to weigh
    counts = np.bincount(rows["label"], weights=np.where(follow, 0.25, 1.0), minlength=7)
    prior = np.array(dm.sampled_class_prior())
    assert np.allclose(prior, counts ** (1 - power) / (counts ** (1 - power)).sum())
    nv = HAM10000.index["nv"]
    share = 0.25 * follow.sum() / (0.25 * follow.sum() + ((rows["label"] == nv).to_numpy() & ~follow).sum())
    loader = dm.train_dataloader()
    positions = np.asarray(loader.dataset.indices)
    is_follow = dict(zip(dm.indices("train"), follow, strict=True))
    drawn, follow_drawn, nv_drawn = np.zeros(7), 0, 0
    for _ in range(200):
        picks = list(loader.sampler)
        labels = dm.table["label"].to_numpy()[positions[picks]]
        drawn += np.bincount(labels, minlength=7)
        nv_drawn += (labels == nv).sum()
        follow_drawn += sum(is_follow[positions[i]] for i in picks)
    assert np.abs(drawn / drawn.sum() - prior).max() < 0.01
    assert follow_drawn / nv_drawn == pytest.approx(share, abs=0.02)


def test_sample_weights_on_a_column_the_data_lacks_is_one_line(small_ham):
    from lesion_pl.errors import LesionPLError

    with pytest.raises(LesionPLError, match="data.sample_weights names column 'scanner', which the data in"):
        _datamodule(small_ham, "data.sample_weights={scanner: {x: 0.5}}").train_dataloader()
    with pytest.raises(LesionPLError, match=r"data.sample_weights must be a mapping \{column: \{value: weight"):
        _datamodule(small_ham, "data.sample_weights={dx_type: {follow_up: 0}}")


@pytest.mark.parametrize("sets, message", [
    (["data.sampler=1.5"], r"data.sampler must be one of .* or a power in \[0, 1\], got 1.5"),
    (["data.sampler_start=uniform"],
     r"data.sampler_start must be one of .* or a power in \[0, 1\], or null, got 'uniform'"),
    (["data.sampler_start=balanced", "data.sampler_ramp_epochs=0"],
     r"data.sampler_ramp_epochs must be a whole number >= 1, got 0"),
])
def test_bad_sampler_settings_are_refused(small_ham, sets, message):
    from lesion_pl.errors import LesionPLError

    with pytest.raises(LesionPLError, match=message):
        _datamodule(small_ham, *sets).train_dataloader()


def test_balanced_class_weights_equalise_the_classes(small_ham):
    dm = _datamodule(small_ham, "loss.class_weights=balanced")
    counts, w = dm.class_counts(), np.array(dm.class_weights(load_config(None, ["loss.class_weights=balanced"]).loss))
    assert np.allclose(counts * w, (counts * w)[0])      # every class weighs the same in the loss
    assert np.isclose((counts * w).sum() / counts.sum(), 1.0)
    assert _datamodule(small_ham).class_weights(load_config().loss) is None  # default: none


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


def _val_balanced_accuracy(model, images, target) -> float:
    model.log = model.log_dict = lambda *a, **k: None
    model._step((images, target), "val")
    value = float(model.val_metrics.compute()["val/balanced_accuracy"])
    model.val_metrics.reset()
    return value


def test_validation_scores_the_balanced_rule_where_the_sampler_is_not_balanced(small_ham):
    from sklearn.metrics import balanced_accuracy_score

    dm = _datamodule(small_ham, "data.sampler=sqrt")
    prior = np.array(dm.sampled_class_prior())
    cfg = load_config(None, ["model.widths=[8,16,32,64]", "data.sampler=sqrt"])
    m = LesionClassifier(cfg, [0.5] * 3, [0.2] * 3, None, prior.tolist()).eval()
    # logits of a network that learned these batches: the sampled prior plus what each image shows
    gen = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor(prior)) + torch.randn(40, 7, generator=gen, dtype=torch.float64)
    m.forward = lambda images: logits.float()
    images, target = torch.zeros(40, 3, 32, 32, dtype=torch.uint8), torch.arange(40) % 7
    balanced = (logits - torch.log(torch.tensor(prior))).argmax(1)
    assert not torch.equal(balanced, logits.argmax(1))  # the rule names other classes here
    with torch.no_grad():
        got = _val_balanced_accuracy(m, images, target)
    assert got == pytest.approx(balanced_accuracy_score(target, balanced), abs=1e-6)

    # the balanced sampler's prior is uniform; the accuracy rule names argmax p: both score plain argmax
    for sets, p in ((["data.sampler=balanced"], [1 / 7] * 7), (["calibration.decision=accuracy"], prior.tolist())):
        plain = LesionClassifier(load_config(None, ["model.widths=[8,16,32,64]", *sets]), [0.5] * 3, [0.2] * 3,
                                 None, p)
        assert plain.eval_shift is None


def test_balanced_rule_shift_follows_class_weights_and_logit_adjustment():
    prior = np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])
    weights = (1 / prior).tolist()  # weights that undo the prior: the loss sees balanced classes
    base = ["model.widths=[8,16,32,64]"]
    assert LesionClassifier(load_config(None, base), [0.5] * 3, [0.2] * 3, weights, prior.tolist()).eval_shift is None
    adjusted = LesionClassifier(load_config(None, [*base, "loss.logit_adjustment=1.0"]), [0.5] * 3, [0.2] * 3,
                                None, prior.tolist())
    assert adjusted.eval_shift is None  # tau 1 already trains the balanced posterior
    half = LesionClassifier(load_config(None, [*base, "loss.logit_adjustment=0.5"]), [0.5] * 3, [0.2] * 3,
                            None, prior.tolist()).eval_shift.double()
    expected = -0.5 * np.log(prior)
    assert np.allclose(half.numpy(), expected - expected.mean(), atol=1e-6)


def test_sampler_ramp_moves_the_batches_and_the_validation_rule_with_the_epoch(small_ham, tmp_path):
    import pytorch_lightning as pl

    sets = ["data.sampler=shuffle", "data.sampler_start=balanced", "data.sampler_ramp_epochs=2"]
    dm = _datamodule(small_ham, *sets)
    assert [dm.sampler_power(e) for e in (0, 1, 2, 7, None)] == [1.0, 0.5, 0.0, 0.0, 0.0]
    counts = dm.class_counts().astype(float)
    loader = dm.train_dataloader()
    for epoch, power in ((0, 1.0), (1, 0.5), (2, 0.0)):
        loader.sampler.set_epoch(epoch)  # as Lightning does before each epoch
        drawn = np.zeros(len(counts))
        for _ in range(30):
            for _, y in loader:
                drawn += np.bincount(y.numpy(), minlength=len(counts))
        expected = counts ** (1 - power) / (counts ** (1 - power)).sum()
        assert np.abs(drawn / drawn.sum() - expected).max() < 0.02, epoch

    # in a real fit, validation after each epoch divides out that epoch's prior
    seen = {}

    class Record(pl.Callback):
        def on_validation_epoch_start(self, trainer, module):
            shift = module.eval_shift
            seen[trainer.current_epoch] = None if shift is None else shift.numpy().copy()

    cfg = load_config(None, [f"data.root={small_ham}", "data.image_size=32", "data.batch_size=16",
                             "model.widths=[8,16,32,64]", *sets])
    from lesion_pl.data.datamodule import LesionDataModule

    dm = LesionDataModule(cfg.data, cfg.seed, progress=False).build()
    model = LesionClassifier(cfg, *dm.train_stats(), None, dm.sampled_class_prior())
    ema = pl.callbacks.EMAWeightAveraging(decay=0.99)  # as fit has: it pairs the model's buffers with its own
    pl.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, callbacks=[Record(), ema], logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               num_sanity_val_steps=0, default_root_dir=tmp_path).fit(model, datamodule=dm)
    assert seen[0] is None  # the balanced start: a uniform prior
    for epoch in (1, 2):
        log_prior = np.log(dm.sampled_class_prior(epoch))
        assert np.allclose(seen[epoch], -(log_prior - log_prior.mean()), atol=1e-5), epoch
