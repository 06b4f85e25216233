"""`explain`: Grad-CAM overlays of a run's model on any images, with the (calibrated) prediction."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import ood
from ..classes import label_space
from ..io import atomic_path
from ..ood import OUTSIDE, OodRule
from ..preprocess import ImageReadError, preprocess_file
from ..run import RunDir
from ..scoring import ScoringPolicy


def explain_images(paths: list[Path], run_path: Path, out_dir: Path | None = None):
    """Writes OUT/<name>_gradcam.png per image; returns ([(path, png, top class, prob, malignancy, outside)],
    [(path, error)]), `outside` True where the run's out-of-distribution rule refuses the image (predict would give
    it no class: the map still shows what the network looked at)."""
    from ..checkpoint import load_run_model
    from .gradcam import gradcam, overlay
    from .inference import batch_features, batch_logits, has_features
    from .report_figures import _plt, _png

    run = RunDir(Path(run_path))
    run.require_fitted()
    cfg = run.load_config()
    size = int(cfg.data.image_size)
    cal_path = run.calibration
    cal = json.loads(cal_path.read_text()) if cal_path.exists() else {}
    policy = ScoringPolicy.from_calibration(cal, label_space(cfg.data))
    classes, space = policy.classes, policy.space
    model = load_run_model(run)
    rule = OodRule.from_record(cal.get("ood"))
    gaussian = ood.load(run.ood) if rule is not None and run.ood.exists() and has_features(model) else None
    out_dir = Path(out_dir) if out_dir else run.explain
    out_dir.mkdir(parents=True, exist_ok=True)
    done, errors = [], []
    plt = _plt()
    for path in paths:
        try:
            img = preprocess_file(path, size)
        except ImageReadError as e:
            errors.append((path, str(e)))
            continue
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].contiguous()
        # the probabilities predict gives (8 views where the run was calibrated on them); the map
        # explains the class they name, on the image as given
        # explain sees the image alone: where the run fused metadata, the image-only threshold applies
        if gaussian is not None:
            features, logits = batch_features(model, x, policy.tta)
            score = float(gaussian.score(features.numpy())[0])
            outside = bool(rule.outside(np.array([score]))[0])
        else:
            logits, outside = batch_logits(model, x, policy.tta), False
        scored = policy(logits.numpy())
        probs, top, mal = scored.probabilities[0], int(scored.top_index[0]), float(scored.scores["malignant"][0])
        refer = scored.refer("malignant")
        cam, _ = gradcam(model, x, target=torch.tensor([top]))
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.1]})
        axes[0].imshow(img)
        axes[0].set_title("model input")
        axes[1].imshow(overlay(img, cam[0].numpy()))
        axes[1].set_title(f"Grad-CAM for {classes[top]}")
        for ax in axes[:2]:
            ax.set_xticks([])
            ax.set_yticks([])
        order = np.argsort(probs)
        axes[2].barh([classes[i] for i in order], probs[order], color="tab:blue")
        axes[2].set(xlim=(0, 1), xlabel="probability (calibrated" + (", 8 views" if policy.tta else "")
                    + (", image only)" if policy.clinical else ")"))
        refer = "" if refer is None else (" - refer" if refer[0] else " - no referral at this threshold")
        refused = f"{OUTSIDE.upper()} (score {score:.0f} > {rule.threshold:.0f}): no diagnosis. " if outside else ""
        fig.suptitle(f"{Path(path).name}: {refused}{space.name(classes[top])} ({probs[top]:.2f}), "
                     f"malignancy {mal:.2f}{'' if outside else refer}", fontsize=10)
        target = out_dir / f"{Path(path).stem}_gradcam.png"
        with atomic_path(target) as tmp:
            tmp.write_bytes(_png(fig))
        done.append((path, target, classes[top], float(probs[top]), mal, outside))
    return done, errors
