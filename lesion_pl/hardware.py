"""What `auto` means on this machine: the training precision and the input size."""
from __future__ import annotations

import copy


def precision_for(cfg: dict) -> str:
    """Lightning's precision for `trainer.precision`.

    "auto": bf16-mixed on CUDA and on CPUs that multiply bf16 in hardware (AVX-512 bf16, AMX), where
    an epoch takes 1.6x less time at no cost on validation (benchmarks/RESULTS.md: "bf16 on a CPU that
    has it"); 32-true on other CPUs, where bf16 autocast is ~12x slower (benchmarks/step_speed.py).
    """
    import torch

    p = cfg["trainer"]["precision"]
    if p != "auto":
        return str(p)
    if torch.cuda.is_available() and cfg["trainer"]["accelerator"] != "cpu":
        return "bf16-mixed"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware."""
    return cpu_supports("_is_avx512_bf16_supported") or cpu_supports("_is_amx_tile_supported")


def cpu_supports(check: str) -> bool:
    """One of torch's own CPU checks, e.g. "_is_vnni_supported": private API, so a torch without it says False."""
    import torch

    return bool(getattr(torch.cpu, check, lambda: False)())


def image_size_for(cfg: dict) -> int:
    """`data.image_size` in pixels; "auto": 128 where training runs in bf16, else 64.

    bf16 makes 128 px affordable in the hour, and 128 px scored higher on validation over three seeds
    (benchmarks/RESULTS.md: "Should the default follow the hardware?").
    """
    size = cfg["data"]["image_size"]  # checked when the config loaded (config_rules)
    if size == "auto":
        return 128 if precision_for(cfg).startswith("bf16") else 64
    return int(size)


def resolve_auto_size(cfg: dict) -> dict:
    """A copy of `cfg` with `data.image_size` as pixels, so that a saved run names the size it used."""
    if cfg["data"]["image_size"] != "auto":
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg["data"]["image_size"] = image_size_for(cfg)
    return cfg
