"""Training-step throughput of the default network on synthetic input, per CPU/GPU setting.

    python benchmarks/step_speed.py [--size 96] [--batch 64] [--steps 6] [--set key=value ...]

Forward, backward and AdamW step on an in-memory batch, so it measures the network and the
hardware path alone: fp32 NCHW (the plain way), channels_last, channels_last with a fused AdamW,
with torch.compile (after two warm-up steps, so compile time is not counted), with bf16 autocast,
and with both.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import describe  # noqa: E402  (the script's own folder is on sys.path)


def images_per_s(net, x, y, channels_last: bool, bf16: bool, steps: int, fused: bool = False,
                 compile_: bool = False) -> float:
    device = x.device.type
    opt = torch.optim.AdamW(net.parameters(), 1e-3, fused=fused or None)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile_:
        net = torch.compile(net)
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return len(x) * steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=None, help="input size (default: the config's)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = ap.parse_args()

    from lesion_pl.config import load_config
    from lesion_pl.hardware import resolve_auto
    from lesion_pl.models import build_network

    cfg = resolve_auto(load_config(None, args.overrides))
    size = args.size or int(cfg.data.image_size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, size, size, device=device)
    y = torch.randint(0, 7, (args.batch,), device=device)
    print(f"{describe()}; model {cfg.model.name}, {size} px, batch {args.batch}")
    base = None
    for name, cl, bf16, fused, comp in (("fp32 NCHW", False, False, False, False),
                                        ("fp32 channels_last", True, False, False, False),
                                        ("+ fused AdamW", True, False, True, False),
                                        ("+ torch.compile", True, False, False, True),
                                        ("bf16 channels_last", True, True, False, False),
                                        ("bf16 + fused AdamW", True, True, True, False),
                                        ("bf16 + torch.compile", True, True, False, True)):
        rate = images_per_s(build_network(cfg.model).to(device).train(), x, y, cl, bf16, args.steps, fused, comp)
        base = base or rate
        print(f"{name:<20} {rate:8.1f} images/s  x{rate / base:.2f}", flush=True)


if __name__ == "__main__":
    main()
