"""The HTML report (rendered in a real headless Chromium), Grad-CAM, `explain`, and their errors."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from lesion_pl.config import load_config
from lesion_pl.evaluate.gradcam import gradcam, mass_inside
from lesion_pl.export.runtime import LesionOnnxClassifier
from lesion_pl.module import LesionClassifier

from .conftest import invoke


@pytest.fixture(scope="module")
def report(trained_run):
    r = invoke("report", "--run", trained_run, "--quiet")
    assert r.exit_code == 0, r.output
    return trained_run / "report" / "index.html"


def test_report_is_one_self_contained_page(report):
    page = report.read_text()
    for section in ("Findings", "Run", "Training", "Test metrics", "ROC and precision-recall", "Calibration",
                    "Prediction gallery", "Misclassified", "Error rate by subgroup", "Grad-CAM mass inside the lesion",
                    "Config"):
        assert section in page, section
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) >= 9 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|src)="(http|file|/)', page)  # nothing outside the file
    for png in ("gallery.png", "roc.png", "precision_recall.png", "training_curves.png", "subgroup_errors.png"):
        assert (report.parent / png).stat().st_size > 5_000


def test_findings_are_computed_from_the_predictions(report, trained_run):
    preds = pd.read_csv(trained_run / "test" / "predictions.csv")
    wrong = preds[preds["dx"] != preds["pred"]]
    (t, p), count = next(iter(wrong.groupby(["dx", "pred"]).size().sort_values(ascending=False).items()))
    n = int((preds["dx"] == t).sum())
    assert f"{count} of {n} {t} test images ({count / n:.1%}) were predicted as {p}." in report.read_text()
    assert re.search(r"of the Grad-CAM mass lies inside the lesion mask", report.read_text())
    assert re.search(r"malignancy probability from [\d.]+ to [\d.]+ \(a perfectly calibrated model would show [\d.]+ "
                     r"and [\d.]+ on this many images\); classes are named by the (&#x27;|')balanced",
                     report.read_text())
    m = json.loads((trained_run / "test" / "metrics.json").read_text())
    assert (f"The image alone: balanced accuracy {m['clinical']['image_only']['balanced_accuracy']:.3f} (fused "
            f"{m['balanced_accuracy']:.3f})") in report.read_text()


def test_report_renders_in_headless_chromium(report, browser):
    browser.get(report.as_uri())
    assert browser.title.startswith("lesion-pl report")
    counts = browser.execute_script(
        "const imgs = [...document.images];"
        "return [imgs.length, imgs.filter(i => !i.complete || i.naturalWidth === 0).length];")
    assert counts[0] >= 9 and counts[1] == 0, f"{counts[1]} of {counts[0]} images broken"
    shot = report.parent / "screenshot.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000


def test_explain_writes_overlays_and_names_bad_files(trained_run, small_ham, tmp_path):
    images = sorted(small_ham.glob("images/*.jpg"))[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"nope")
    r = invoke("explain", *images, bad, "--run", trained_run, "--out", tmp_path / "ex")
    assert r.exit_code == 1
    assert "broken.jpg" in r.output
    model = trained_run / "export" / "model.onnx"
    if not model.exists():
        assert invoke("export", "--run", trained_run, "--quiet").exit_code == 0
    onnx = LesionOnnxClassifier(model).predict(images)  # the image alone, scored as the run was calibrated
    named_by_rule = [onnx.classes[i] for i in onnx.top_index]  # explain names a class even for an image outside
    for img, top, p, mal in zip(images, named_by_rule, onnx.top_probability, onnx.malignancy, strict=True):
        assert (tmp_path / "ex" / f"{img.stem}_gradcam.png").stat().st_size > 10_000
        line = next(line for line in r.output.splitlines() if line.startswith(str(img)))
        shown = re.search(r": (\w+) ([\d.]+), malignancy ([\d.]+) ->", line)
        assert shown[1] == top  # explain names and shows what predict gives
        assert float(shown[2]) == pytest.approx(p, abs=1e-3) and float(shown[3]) == pytest.approx(mal, abs=1e-3)


def test_gradcam_on_a_timm_cnn_and_mass_inside():
    """Against Grad-CAM written out here on resnet18's stages: its 1/16 map (layer3) kept with its gradient, the
    gradient's spatial mean as each channel's weight, ReLU of the weighted sum, bilinear to the input, max 1."""
    torch.manual_seed(0)
    cfg = load_config(None, ["model.name=resnet18"])
    model = LesionClassifier(cfg, [0.5] * 3, [0.2] * 3).eval()
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    cams, logits = gradcam(model, images)
    assert cams.shape == (2, 64, 64) and logits.shape == (2, 7)
    net = model.net
    x = net.maxpool(net.act1(net.bn1(net.conv1(model.normalize(images)))))
    a = net.layer3(net.layer2(net.layer1(x)))
    a.retain_grad()
    out = net.fc(net.global_pool(net.layer4(a)))
    out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    cam = torch.relu((a.grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    cam = (cam / cam.flatten(1).max(1).values[:, None, None]).detach()
    assert torch.allclose(out.detach(), logits, atol=1e-5) and a.shape[-1] == 4  # 64 px / 16
    assert torch.allclose(cams, cam, atol=1e-5)
    cam = np.ones((1, 4, 4))
    mask = np.zeros((1, 4, 4), bool)
    mask[:, :2] = True
    assert mass_inside(cam, mask)[0] == pytest.approx(0.5)


def test_gradcam_weighs_the_deepest_map_at_a_sixteenth_of_the_input():
    """EfficientNet-Lite0's last map is 4x4 at 128 px; Grad-CAM uses its 8x8 one (blocks.4), LesionCNN its own
    final map, which is at 1/16 already."""
    from lesion_pl.evaluate.gradcam import target_layer

    cfg = load_config(None, ["model.name=efficientnet_lite0"])
    model = LesionClassifier(cfg, [0.5] * 3, [0.5] * 3).eval()
    assert target_layer(model.net) is model.net.blocks[4]
    seen = []
    hook = target_layer(model.net).register_forward_hook(lambda m, a, out: seen.append(out.shape[-2:]))
    cams, _ = gradcam(model, torch.randint(0, 255, (2, 3, 128, 128), dtype=torch.uint8))
    hook.remove()
    assert tuple(seen[0]) == (8, 8) and cams.shape == (2, 128, 128)
    plain = LesionClassifier(load_config(None, ["model.widths=[8,16,32,64]"]), [0.5] * 3, [0.2] * 3)
    assert target_layer(plain.net) is plain.net.features


def test_report_needs_a_finished_test(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("test", "report"))
    r = invoke("report", "--run", copy)
    assert r.exit_code == 2 and "metrics.json does not exist" in r.output and "cli.py test --run" in r.output
    (copy / "checkpoints" / "best.ckpt").unlink()
    r = invoke("report", "--run", copy)
    assert r.exit_code == 2 and "best.ckpt does not exist" in r.output


def test_report_when_the_images_moved(trained_run, small_ham, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(small_ham, moved)
    shutil.rmtree(moved / "images")
    r = invoke("report", "--run", trained_run, "--data-root", moved)
    assert r.exit_code == 2 and "not found" in r.output and "--data-root" in r.output


def test_report_gives_the_histopathology_confirmed_figures_beside_all_lesions(report, trained_run):
    """The section's cells are test's metrics.json figures with their CIs; the finding names the confirmed AUROC."""
    m = json.loads((trained_run / "test" / "metrics.json").read_text())
    h = m["histo_confirmed"]
    page = report.read_text()
    assert "Where the shortcut is gone: histopathology-confirmed lesions" in page
    lo, hi = h["ci95"]["auroc_malignant"]
    assert f"<td>{h['auroc_malignant']:.3f} [{lo:.3f}, {hi:.3f}]</td>" in page
    spec = h["operating_points"]["malignant"]["specificity"]
    assert re.search(rf"malignant referral specificity</th>\s*<td>[^<]+</td>\s*<td>{spec:.3f} \[", page)
    for row in m["by_dx_type"]:
        assert f"<th>{row['dx_type']}</th>" in page
    assert (f"On the {h['images']} histopathology-confirmed images alone, the malignant AUROC is "
            f"{h['auroc_malignant']:.3f} (all lesions {m['auroc_malignant']:.3f})") in page
