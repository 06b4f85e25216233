"""What a run's out-of-distribution refusal (lesion_pl.ood) catches, through its exported model.onnx and the
torch-free runtime (the path predict, the service and the page take):

    python benchmarks/ood.py --run runs/NAME [--model runs/NAME/export/model.int8.onnx] [--isic DIR] [--json out.json]

Writes RUN/ood_benchmark.json too (for the run's own model.onnx), which the run's model card (`report`) cites.

In distribution, which must pass: the run's HAM10000 test split, and ISIC 2017 ($LESION_PL_DATA/isic2017, its
train and val images). Out of distribution, which must be refused: the images scikit-image and scikit-learn ship
(natural photos, a retina, histology, cells, faces, text), generated ones (noise, flat colour, gradients, rendered
text, a screen-like grid) and HAM10000 test images degraded past use (heavy blur, 8x down and up). Per group: the
AUROC of the score against the HAM test images and the share passing (in distribution) or refused (out) at the
run's own threshold.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from machine import describe
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lesion_pl.evaluate.metrics import binary_auroc  # noqa: E402
from lesion_pl.export.runtime import LesionOnnxClassifier  # noqa: E402
from lesion_pl.preprocess import load_rgb, resize_center_crop  # noqa: E402
from lesion_pl.run import RunDir  # noqa: E402

DEGRADED = 200  # HAM test images per degradation
NATURAL = ["astronaut", "camera", "chelsea", "coffee", "horse", "rocket", "moon", "coins", "brick", "grass",
           "gravel", "clock", "hubble_deep_field", "logo", "colorwheel", "checkerboard"]


def skimage_groups() -> dict[str, list[np.ndarray]]:
    import skimage.data as sd
    from sklearn.datasets import load_sample_images

    def rgb(a):
        a = a.astype(np.uint8) * 255 if a.dtype == bool else a
        return np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
    faces = (sd.lfw_subset()[:20] * 255).astype(np.uint8)
    return {"natural photos": [rgb(getattr(sd, n)()) for n in NATURAL] + list(load_sample_images().images),
            "retina": [rgb(sd.retina()), rgb(sd.microaneurysms())],
            "histology and cells": [rgb(sd.immunohistochemistry()), rgb(sd.cell())],
            "faces": [rgb(f) for f in faces],
            "text": [rgb(sd.page()), rgb(sd.text())]}


def generated_groups(size: int, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    noise = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(10)]
    flat = [np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8) for _ in range(10)]
    ramp = np.linspace(0, 1, size)
    gradients = [(np.stack([np.outer(ramp if i % 2 else np.ones(size), np.ones(size) if i % 2 else ramp)] * 3, -1)
                  * rng.integers(64, 256, 3)).astype(np.uint8) for i in range(10)]
    text = []
    for i in range(5):
        im = Image.new("RGB", (300, 300), "white")
        draw = ImageDraw.Draw(im)
        for line in range(12):
            draw.text((10, 10 + 24 * line), f"Patient {i} visit {line}: lesion measured 4.{line} mm", fill="black")
        text.append(np.asarray(im))
    grids = []
    for i in range(5):  # a photo of a screen: pixel rows and columns, a colour cast, some blur
        a = np.zeros((300, 300, 3), np.uint8)
        a[:, :] = rng.integers(80, 200, 3)
        a[:: 3 + i, :] //= 3
        a[:, :: 3 + i] //= 3
        grids.append(np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(0.7))))
    return {"noise": noise, "flat colour": flat, "gradients": gradients, "rendered text": text,
            "screen-like grid": grids}


def degraded_groups(test_images: np.ndarray, size: int) -> dict[str, list[np.ndarray]]:
    pick = test_images[:DEGRADED]
    blur = [np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(6))) for a in pick]
    small = max(size // 8, 1)
    down = [np.asarray(Image.fromarray(a).resize((small, small), Image.BILINEAR).resize((size, size), Image.BILINEAR))
            for a in pick]
    return {"HAM blurred (radius 6)": blur, "HAM 8x down and up": down}


def scores(clf: LesionOnnxClassifier, images: list[np.ndarray] | np.ndarray, preprocessed: bool = False) -> np.ndarray:
    batch = np.asarray(images) if preprocessed else np.stack([clf.preprocess(a) for a in images])
    return np.concatenate([clf.outputs(batch[i:i + 64]).ood_score for i in range(0, len(batch), 64)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--model", type=Path, help="another export of the run (default RUN/export/model.onnx)")
    ap.add_argument("--isic", type=Path, help="ISIC 2017's folder (default: $LESION_PL_DATA/isic2017)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    print(describe(), flush=True)
    run = RunDir(args.run)
    model = args.model or run.onnx
    clf = LesionOnnxClassifier(model)
    if clf.ood is None:
        sys.exit(f"{model} carries no out-of-distribution rule: calibrate and export the run again")
    cfg = run.load_config()  # the run's own data: its test split
    dm = run.datamodule(cfg, progress=False)
    test = np.asarray(dm.cache[dm.indices("test")])
    isic_root = args.isic or Path(os.environ.get("LESION_PL_DATA") or ROOT / "data") / "isic2017"
    isic = sorted((isic_root / "images").glob("*.jpg"))
    if not isic:
        sys.exit(f"no ISIC 2017 images under {isic_root / 'images'}: give --isic")
    size, rng = clf.size, np.random.default_rng(0)
    print(f"{model}: {clf.ood.describe()}, {'8 views' if clf.tta else 'one view'} per image", flush=True)
    inside = {"HAM10000 test split": scores(clf, test, preprocessed=True),
              "ISIC 2017 (train and val)": scores(clf, [np.asarray(load_rgb(p)) for p in isic])}
    outside_sets = {**skimage_groups(), **generated_groups(size, rng), **degraded_groups(test, size)}
    outside = {name: scores(clf, [resize_center_crop(Image.fromarray(a), size) for a in images], preprocessed=True)
               for name, images in outside_sets.items()}
    ham = inside["HAM10000 test split"]
    rows = {}
    print(f"\n{'group':<28}{'images':>7}{'AUROC vs HAM test':>19}{'at the threshold':>22}")
    for name, s in {**inside, **outside}.items():
        refused = clf.ood.outside(s)
        is_in = name in inside
        auroc = None if name == "HAM10000 test split" else binary_auroc(np.r_[ham, s],
                                                                          np.r_[np.zeros(len(ham)), np.ones(len(s))])
        rate = float((~refused).mean() if is_in else refused.mean())
        rows[name] = {"images": int(len(s)), "in_distribution": is_in, "auroc_vs_ham_test": auroc,
                      ("pass" if is_in else "refused"): rate}
        print(f"{name:<28}{len(s):>7}{'' if auroc is None else f'{auroc:.3f}':>19}"
              f"{rate:>15.1%} {'pass' if is_in else 'refused'}")
    non_derm = [n for n in outside if not n.startswith("HAM")]
    all_out = np.concatenate([outside[n] for n in non_derm])
    total = {"non_dermoscopic_refused": float(clf.ood.outside(all_out).mean()), "non_dermoscopic_images": len(all_out),
             "degraded_refused": float(np.mean([clf.ood.outside(outside[n]).mean() for n in outside
                                                if n.startswith("HAM")]))}
    print(f"\nnon-dermoscopic images refused: {total['non_dermoscopic_refused']:.1%} of {len(all_out)} (goal 99%); "
          f"HAM test passing {rows['HAM10000 test split']['pass']:.1%} (goal 98%); ISIC 2017 passing "
          f"{rows['ISIC 2017 (train and val)']['pass']:.1%} (goal 95%); degraded HAM refused "
          f"{total['degraded_refused']:.1%}")
    passed = [n for n in non_derm for s in outside[n] if not clf.ood.outside(np.array([s]))[0]]
    if passed:
        print("non-dermoscopic images passing, by group: "
              + ", ".join(f"{n} {passed.count(n)}" for n in dict.fromkeys(passed)))
    result = json.dumps({"run": str(run.path), "rule": clf.ood.facts, "groups": rows, **total}, indent=1)
    if args.model is None:
        run.ood_benchmark.write_text(result)  # the run's model card cites it (`report` writes the card)
    if args.json:
        args.json.write_text(result)


if __name__ == "__main__":
    main()
