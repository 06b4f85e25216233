"""Training throughput of one model on one GPU, through `fit`'s own loop, with GPU utilisation.

    python benchmarks/gpu_speed.py --model resnet18 [--size 224] [--batch 256] [--steps 60] [--set key=value ...]

The real HAM10000 images (cached once at --size), the uint8 cache kept on the GPU and augmented
there (data.cache_on_device), bf16 autocast and channels_last (the CUDA defaults). GPU
utilisation is sampled with nvidia-smi during the timed steps only. benchmarks/gpu_speed.sh runs
it for LesionCNN and resnet18.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class Utilisation:
    """Samples `nvidia-smi`'s GPU utilisation (%) every 0.2 s from `start()` until `stop()`."""

    def __init__(self):
        self.samples: list[float] = []
        self._proc = None
        self._thread = None

    def start(self) -> None:
        if not shutil.which("nvidia-smi"):
            return
        self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                       "-i", "0", "-lms", "200"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.strip()))

    def stop(self) -> str:
        if self._proc is None:
            return "n/a (no nvidia-smi)"
        self._proc.terminate()
        self._thread.join(timeout=2)
        return f"{sum(self.samples) / max(1, len(self.samples)):.0f}% mean over {len(self.samples)} samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18", help="lesion_cnn or a timm model name")
    ap.add_argument("--size", type=int, default=224, help="input size in pixels")
    ap.add_argument("--batch", type=int, default=256, help="batch size")
    ap.add_argument("--steps", type=int, default=60, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=15, help="untimed steps first")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = ap.parse_args()

    import torch
    from train_speed import lesion_pl

    from lesion_pl.config import load_config
    from lesion_pl.hardware import resolve_auto

    cfg = load_config(None, [f"model.name={args.model}", f"data.image_size={args.size}",
                             f"data.batch_size={args.batch}", "data.cache_on_device=true", *args.overrides])
    if cfg.trainer.accelerator == "auto":
        cfg.trainer.accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    cfg = resolve_auto(cfg)  # the precision fit would train in here
    device = torch.cuda.get_device_name() if cfg.trainer.accelerator == "gpu" else "CPU (no GPU: a smoke run)"
    util = Utilisation()
    rate = lesion_pl(cfg, args.steps, args.warmup, on_timed_start=util.start)
    print(f"{args.model:<12} {args.size} px, batch {args.batch}, {device}, torch {torch.__version__}: "
          f"{rate:8.0f} images/s, GPU utilisation {util.stop()}", flush=True)


if __name__ == "__main__":
    main()
