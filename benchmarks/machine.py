"""The machine line every benchmark prints first: CPU or GPU, cores, torch, and the CPU features that
decide the speed figures (AVX2 or AVX-512; bf16 and VNNI dot products), so figures from two machines
are never compared unknowingly."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root, for lesion_pl
from lesion_pl.hardware import cpu_supports  # noqa: E402


def cpu_features() -> str:
    """e.g. "CPU AVX512 with bf16, VNNI" or "CPU AVX2 without bf16, VNNI"."""
    import torch

    found = [name for name, check in (("bf16", "_is_avx512_bf16_supported"), ("VNNI", "_is_vnni_supported"),
                                       ("AMX", "_is_amx_tile_supported")) if cpu_supports(check)]
    return f"CPU {torch.backends.cpu.get_cpu_capability()} " + (
        f"with {', '.join(found)}" if found else "without bf16, VNNI")


def describe() -> str:
    import torch  # here, so that a script importing this module starts without torch

    device = f"GPU {torch.cuda.get_device_name()}, " if torch.cuda.is_available() else ""
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {device}{cpu_features()}")
