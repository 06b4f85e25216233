"""Training throughput: the plain way vs lesion-pl's pipeline, same network, same images, one run.

    python benchmarks/train_speed.py [--steps 20] [--warmup 4] [--big 384] [--set key=value ...]

Variants, each in its own process (so each gets a clean memory peak and thread state):
  plain      the default network in fp32 NCHW, fed by an ImageFolder-style DataLoader (2 workers)
             that decodes and augments every JPEG every epoch with torchvision transforms on PIL images
  lesion-pl  `fit`'s own path: the uint8 image cache, batched augmentation on the device,
             channels_last, Lightning's training loop in fit's precision (`auto`: bf16 where it is the faster
             here, so the ratio mixes precisions there; --set trainer.precision=32-true for fp32 on both sides)
             with fit's per-step EMA; validation and checkpoints (once an epoch) are not timed
  synthetic  the same LightningModule fed one in-memory batch, no loading and no augmentation:
             the floor the data pipeline is judged against
on the 200x150 images of $LESION_PL_DATA/ham10000 and on stand-ins for the original 600x450 images
(`--big` of them upscaled into a temp folder). Prints images/s, seconds per epoch (train split
size / rate), the peak memory (PSS of the process tree) of each, and the ratios; "data ready" is the
time lesion-pl takes to read the table, the split and the cache (building what is missing) before
its first step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
TRAIN_IMAGES = 7010  # HAM10000's train split at the default 70/15/15


def plain(cfg, files: list[str], labels: list[int], steps: int, warmup: int) -> float:
    from PIL import Image
    from torchvision.transforms import v2

    from lesion_pl.models import build_network

    size, aug, d = int(cfg.data.image_size), cfg.data.augment, cfg.data
    tf = v2.Compose([v2.RandomResizedCrop(size, scale=tuple(aug.scale), ratio=tuple(aug.ratio)),
                     v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(aug.rotation),
                     v2.ColorJitter(**aug.color_jitter.model_dump()), v2.ToImage(),
                     v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize([0.76, 0.55, 0.57], [0.14, 0.15, 0.17])])

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return tf(Image.open(files[i]).convert("RGB")), labels[i]

    loader = torch.utils.data.DataLoader(Folder(), batch_size=int(d.batch_size), shuffle=True, num_workers=2,
                                         drop_last=True, persistent_workers=True)
    net = build_network(cfg.model).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    seen, start = 0, None
    for _epoch in range(100):
        for x, y in loader:
            if seen == warmup:
                start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += 1
            if seen == warmup + steps:
                return steps * len(x) / (time.perf_counter() - start)
    raise RuntimeError("not enough images for the steps asked")


class StepTimer(pl.Callback):
    """Times training batches `warmup` .. `warmup + steps` (across epochs), then stops the fit."""

    def __init__(self, warmup: int, steps: int, on_start=None):
        self.warmup, self.steps, self.on_start = warmup, steps, on_start
        self.seen, self.start, self.rate = 0, 0.0, None

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.seen == self.warmup:
            self._sync()
            self.start = time.perf_counter()
            if self.on_start:
                self.on_start()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seen += 1
        if self.seen == self.warmup + self.steps:
            self._sync()
            self.rate = self.steps * len(batch[1]) / (time.perf_counter() - self.start)
            trainer.should_stop = True


def lesion_pl(cfg: dict, steps: int, warmup: int, synthetic: bool = False, on_timed_start=None, dm=None) -> float:
    """Images/s of `fit`'s own training steps for `cfg`: its accelerator, precision and per-step EMA
    (`training.step_callbacks`); validation and checkpoints, once an epoch, are not timed."""
    from lesion_pl.data.datamodule import LesionDataModule
    from lesion_pl.module import LesionClassifier
    from lesion_pl.training import step_callbacks

    dm = dm or LesionDataModule(cfg.data, cfg.seed, progress=False).build()
    model = LesionClassifier(cfg, *dm.train_stats())
    timer = StepTimer(warmup, steps, on_timed_start)
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                         max_epochs=1000, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer, *step_callbacks(cfg.trainer)])
    if synthetic:
        n, size = int(cfg.data.batch_size), int(cfg.data.image_size)
        batch = (torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8), torch.randint(0, 7, (n,)))

        class Same(torch.utils.data.Dataset):  # the one batch, again and again, no collation
            def __len__(self):
                return warmup + steps

            def __getitem__(self, i):
                return batch

        trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(Same(), batch_size=None))
    else:
        trainer.fit(model, datamodule=dm)
    return timer.rate


def stand_ins(ham: Path, n: int, dest: Path) -> Path:
    """`n` HAM10000 images upscaled to 600x450 JPEGs (the original resolution) with their metadata rows."""
    import pandas as pd
    from PIL import Image

    meta = pd.read_csv(ham / "HAM10000_metadata.csv").sample(n, random_state=0)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    for image_id in meta["image_id"]:
        Image.open(ham / "images" / f"{image_id}.jpg").resize((600, 450), Image.BICUBIC).save(
            dest / "images" / f"{image_id}.jpg", quality=90)
    meta.to_csv(dest / "HAM10000_metadata.csv", index=False)
    return dest


def child(args) -> None:
    """One variant, in this process; prints one JSON line."""
    import pandas as pd

    from lesion_pl.classes import CLASS_TO_INDEX
    from lesion_pl.config import load_config
    from lesion_pl.hardware import resolve_auto

    cfg = resolve_auto(load_config(None, args.overrides + [f"data.root={args.root}"]))
    if args.variant == "plain":
        meta = pd.read_csv(Path(args.root) / "HAM10000_metadata.csv")
        files = [str(Path(args.root) / "images" / f"{i}.jpg") for i in meta["image_id"]]
        rate = plain(cfg, files, [CLASS_TO_INDEX[d] for d in meta["dx"]], args.steps, args.warmup)
        print(json.dumps({"rate": rate}))
        return
    from lesion_pl.data.datamodule import LesionDataModule

    start = time.perf_counter()
    dm = LesionDataModule(cfg.data, cfg.seed, progress=False).build()  # table, split, cache: timed apart from the steps
    ready_s = time.perf_counter() - start
    cfg.trainer.accelerator = "cpu"
    rate = lesion_pl(cfg, args.steps, args.warmup, args.variant == "synthetic", dm=dm)
    print(json.dumps({"rate": rate, "ready_s": ready_s}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per variant")
    ap.add_argument("--warmup", type=int, default=4, help="untimed steps first")
    ap.add_argument("--big", type=int, default=384, help="how many 600x450 stand-in images to make")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return child(args)

    from machine import describe
    from memory import run_measured

    from lesion_pl.config import load_config
    from lesion_pl.hardware import resolve_auto

    cfg = resolve_auto(load_config(None, args.overrides))
    ham = Path(os.environ.get("LESION_PL_DATA", ROOT.parent / "shared" / "data")) / "ham10000"
    print(f"{describe()}; lesion-pl's precision: {cfg.trainer.precision}")
    print(f"config: configs/ham10000.yaml {' '.join('--set ' + o for o in args.overrides)} "
          f"(model {cfg.model.name}, {cfg.data.image_size} px, batch {cfg.data.batch_size}); "
          f"{args.steps} timed steps after {args.warmup}")
    with tempfile.TemporaryDirectory() as tmp:
        big = stand_ins(ham, args.big, Path(tmp) / "big")
        rows = []
        for source, root, cache in (("200x150", ham, None), ("600x450", big, Path(tmp) / "cache")):
            for variant in ("plain", "lesion-pl", "synthetic"):
                if variant == "synthetic" and source != "200x150":
                    continue  # no images involved: the same figure for both sources
                env = dict(os.environ, **({"LESION_PL_CACHE": str(cache)} if cache else {}))
                out = Path(tmp) / "out.json"
                cmd = [sys.executable, __file__, "--variant", variant, "--root", str(root),
                       "--steps", str(args.steps), "--warmup", str(args.warmup)]
                for o in args.overrides:
                    cmd += ["--set", o]
                with open(out, "w") as f:
                    code, peak = run_measured(cmd, env=env, stdout=f, stderr=subprocess.DEVNULL)
                if code:
                    sys.exit(f"{variant} on {source} failed (exit {code}); run it alone: {' '.join(cmd)}")
                result = json.loads(out.read_text().strip().splitlines()[-1])
                rows.append((source, variant, result["rate"], peak, result.get("ready_s")))
                print(f"  {source} {variant}: {result['rate']:.1f} images/s", flush=True)
    synthetic = next(r[2] for r in rows if r[1] == "synthetic")
    print(f"\n{'images':<9}{'pipeline':<11}{'images/s':>9}{'s/epoch':>9}{'peak GB':>9}{'vs plain':>10}"
          f"{'vs synthetic':>14}{'data ready':>12}")
    for source, variant, rate, peak, ready_s in rows:
        base = next(r[2] for r in rows if r[0] == source and r[1] == "plain")
        ready = f"{ready_s:.1f} s" if ready_s is not None and variant == "lesion-pl" else ""
        print(f"{source:<9}{variant:<11}{rate:9.1f}{TRAIN_IMAGES / rate:9.0f}{peak:9.2f}{rate / base:9.2f}x"
              f"{rate / synthetic:13.2f}x{ready:>12}")


if __name__ == "__main__":
    main()
