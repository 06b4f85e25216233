"""Inference speed of one run's model: PyTorch eager vs onnxruntime fp32 vs onnxruntime int8.

    python benchmarks/inference.py --run runs/NAME      (after `cli.py export --run runs/NAME --int8`)

On the same real test images in one process: throughput at batch 32 and latency (p50, p95) at
batch 1, with ratios, plus test accuracy and balanced accuracy of each. `--profile` adds where each
onnxruntime model spends its time at batch 32 (onnxruntime's own profiler, share of node time per
operator type).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import describe  # noqa: E402  (the script's own folder is on sys.path)


def timed(fn, batches, repeats: int) -> list[float]:
    fn(batches[0])  # warm-up
    out = []
    for _ in range(repeats):
        for b in batches:
            t = time.perf_counter()
            fn(b)
            out.append(time.perf_counter() - t)
    return out


def op_shares(model: Path, batch: np.ndarray, runs: int = 20) -> list[tuple[str, float]]:
    """Share of onnxruntime's node time per operator type over `runs` calls, largest first."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(["probabilities"], {"images": batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    return [(op, t / total) for op, t in per_op.most_common()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--images", type=int, default=512, help="test images to time on")
    ap.add_argument("--latency-images", type=int, default=200)
    ap.add_argument("--profile", action="store_true", help="also print onnxruntime's time per operator type")
    args = ap.parse_args()

    from lesion_pl.checkpoint import load_run_model
    from lesion_pl.config import load_config
    from lesion_pl.data.datamodule import LesionDataModule
    from lesion_pl.export.onnx_export import OnnxWrapper
    from lesion_pl.export.runtime import LesionOnnxClassifier
    from lesion_pl.run import RunDir

    run = args.run
    cfg = load_config(run / "config.yaml")
    dm = LesionDataModule(cfg.data, cfg.seed, splits_file=run / "splits.csv", progress=False).build()
    idx = dm.indices("test")
    images = np.asarray(dm.cache[idx])
    labels = dm.table["label"].to_numpy()[idx]

    calibration = json.loads((run / "calibration.json").read_text())
    torch_model = OnnxWrapper(load_run_model(RunDir(run)), calibration).eval()
    torch_model.classifier.channels_last = bool(cfg.trainer.channels_last)

    @torch.inference_mode()
    def torch_fn(b):
        return torch_model(torch.from_numpy(b))[0].numpy()

    engines, files = {"pytorch eager": torch_fn}, {}
    for name, file in (("onnxruntime fp32", "model.onnx"), ("onnxruntime int8", "model.int8.onnx")):
        path = run / "export" / file
        if path.exists():
            clf = LesionOnnxClassifier(path)
            engines[name] = lambda b, clf=clf: clf.predict_arrays(b, tta=False).probabilities  # as eager: one view
            files[name] = path

    from lesion_pl.evaluate.metrics import balanced_accuracy
    from lesion_pl.scoring import ScoringPolicy

    policy = ScoringPolicy.from_calibration(calibration)
    sub = images[:args.images]
    rows = {}
    for name, fn in engines.items():
        b32 = [sub[i:i + 32] for i in range(0, len(sub), 32)]
        thr = len(sub) * 2 / sum(timed(fn, b32, 2))
        lat = np.array(timed(fn, [images[i:i + 1] for i in range(args.latency_images)], 1)) * 1000
        probs = np.concatenate([fn(images[i:i + 64]) for i in range(0, len(images), 64)])
        pred = policy.decide(probs)  # the run's decision rule, as `cli.py test` names classes
        rows[name] = {"images_per_s_b32": thr, "p50_ms": float(np.percentile(lat, 50)),
                      "p95_ms": float(np.percentile(lat, 95)), "accuracy": float((pred == labels).mean()),
                      "balanced_accuracy": balanced_accuracy(labels, pred)}

    print(f"{describe()} "
          f"({torch.get_num_threads()} threads); run {run} ({cfg.model.name}, {cfg.data.image_size} px); "
          f"{len(sub)} test images for throughput, {args.latency_images} for latency, {len(images)} for accuracy")
    base = rows["pytorch eager"]
    print(f"{'engine':<18} {'img/s b32':>10} {'x eager':>8} {'p50 ms':>8} {'p95 ms':>8} {'x eager p50':>12} "
          f"{'acc':>7} {'bal acc':>8}")
    for name, r in rows.items():
        print(f"{name:<18} {r['images_per_s_b32']:>10.1f} {r['images_per_s_b32'] / base['images_per_s_b32']:>8.2f} "
              f"{r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {base['p50_ms'] / r['p50_ms']:>12.2f} "
              f"{r['accuracy']:>7.4f} {r['balanced_accuracy']:>8.4f}")
    if "onnxruntime int8" in rows and "onnxruntime fp32" in rows:
        f, q = rows["onnxruntime fp32"], rows["onnxruntime int8"]
        print(f"int8 vs fp32: throughput x{q['images_per_s_b32'] / f['images_per_s_b32']:.2f}, "
              f"balanced accuracy {100 * (q['balanced_accuracy'] - f['balanced_accuracy']):+.2f} points")
    if args.profile:
        for name, path in files.items():
            shares = op_shares(path, np.ascontiguousarray(sub[:32]))
            print(f"{name}, batch 32, time per operator: " + ", ".join(f"{op} {100 * f:.1f}%" for op, f in shares[:8]))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
