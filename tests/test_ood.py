"""The out-of-distribution refusal (lesion_pl.ood): the score against a direct computation of the Mahalanobis
distance, the threshold's share, the graph's score against PyTorch's features on real images, and the refusal
through predict, the service and the offline page (headless Chromium)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lesion_pl import ood
from lesion_pl.export.runtime import LesionOnnxClassifier
from lesion_pl.ood import OUTSIDE

from .conftest import invoke


def test_score_is_the_squared_mahalanobis_distance_to_the_nearest_class_mean():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + labels[:, None] * 2.0
    g = ood.fit_gaussian(features, labels, 4)  # class 3 has no image: the overall mean stands in
    means = np.stack([features[labels == c].mean(0) for c in range(3)] + [features.mean(0)])
    precision = np.linalg.inv(LedoitWolf().fit(features - means[labels]).covariance_)
    new = rng.normal(size=(7, 5)) * 3
    want = np.array([min((x - m) @ precision @ (x - m) for m in means) for x in new])
    assert np.allclose(g.score(new), want, rtol=1e-8)
    views = np.stack([new, new + 1.0], 1)  # [N, views, D]: the mean of the views' scores
    assert np.allclose(g.score(views), (want + g.score(new + 1.0)) / 2)


def test_the_threshold_passes_the_share_of_validation_it_names():
    scores = np.random.default_rng(1).gamma(2.0, 50.0, 1000)
    for share in (0.9, 0.99):
        rule = ood.OodRule.from_record(ood.record(ood.Gaussian(np.zeros((1, 1)), np.eye(1)), scores, share, 10, 1))
        assert (~rule.outside(scores)).mean() >= share
        assert (~rule.outside(scores)).mean() < share + 2 / len(scores)
    assert ood.OodRule.from_record(None) is None


def odd_images(folder, size=200):
    """A flat grey square and uniform noise: nothing like dermoscopy."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    Image.new("RGB", (size, size), (128, 128, 128)).save(folder / "flat.png")
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / "noise.png")
    return [folder / "flat.png", folder / "noise.png"]


def test_calibrate_fits_the_rule_and_the_graph_scores_as_pytorch(trained_run, served_model, small_ham):
    from lesion_pl.checkpoint import load_run_model
    from lesion_pl.evaluate.inference import torch_views
    from lesion_pl.run import RunDir

    record = json.loads((trained_run / "calibration.json").read_text())["ood"]
    assert record["share"] == 0.99 and record["val_pass"] >= 0.99 and record["views"] == 8
    gaussian = ood.load(RunDir(trained_run).ood)
    clf = LesionOnnxClassifier(served_model)
    assert clf.ood.threshold == pytest.approx(record["threshold"])
    paths = sorted((small_ham / "images").glob("*.jpg"))[:6]
    batch = np.stack([clf.preprocess(p) for p in paths])
    model = load_run_model(RunDir(trained_run)).eval()
    with torch.inference_mode():
        views = torch_views(torch.from_numpy(batch).permute(0, 3, 1, 2))
        features = torch.stack([model.features_and_logits(v)[0] for v in views], 1).numpy()
    assert clf.outputs(batch).ood_score == pytest.approx(gaussian.score(features), rel=1e-4)


def test_predict_refuses_an_image_outside_and_keeps_its_probabilities(served_model, small_ham, tmp_path):
    odd = odd_images(tmp_path / "odd")
    real = sorted((small_ham / "images").glob("*.jpg"))[:2]
    out = tmp_path / "p.json"
    r = invoke("predict", "--model", served_model, *odd, *real, "--out", out)
    assert r.exit_code == 0, r.output
    assert "out-of-distribution threshold" in r.output and OUTSIDE in r.output
    rows = {row["file"]: row for row in json.loads(out.read_text())["predictions"]}
    clf = LesionOnnxClassifier(served_model)
    for path in odd:
        row = rows[str(path)]
        assert row["outside"] and row["ood_score"] > clf.ood.threshold
        assert row["top_class"] == "" and row["probability"] is None and row["referral"] == OUTSIDE
        assert sum(row[f"p_{c}"] for c in clf.classes) == pytest.approx(1.0, abs=1e-4)  # kept, marked
    for path in real:  # a real image that passes is scored as before
        row = rows[str(path)]
        if not row["outside"]:
            assert row["top_class"] in clf.classes and row["referral"] != OUTSIDE
    csv_out = tmp_path / "p.csv"
    assert invoke("predict", "--model", served_model, *odd, "--out", csv_out).exit_code == 0
    lines = csv_out.read_text().splitlines()
    assert "ood_score,outside" in lines[0] and all(OUTSIDE in line for line in lines[1:])


def test_the_service_refuses_an_image_outside(served_model, tmp_path):
    from fastapi.testclient import TestClient

    from lesion_pl.export.serve import create_app

    odd = odd_images(tmp_path / "odd")
    with TestClient(create_app(served_model)) as client:
        info = client.get("/model").json()
        r = client.post("/predict", files=[("images", (p.name, p.read_bytes(), "image/png")) for p in odd])
    assert r.status_code == 200, r.text
    assert info["model"]["ood"]["threshold"] == pytest.approx(LesionOnnxClassifier(served_model).ood.threshold)
    for row in r.json()["predictions"]:
        assert row["outside"] and row["top_class"] == "" and row["referral"] == OUTSIDE


def test_the_offline_page_shows_the_refusal(trained_run, small_ham, tmp_path, browser):
    from .test_web import StaticServer, assert_shows_the_runtime, drive_page

    web = tmp_path / "web"
    assert invoke("export", "--run", trained_run, "--web", web, "--quiet").exit_code == 0
    clf = LesionOnnxClassifier(web / "model.onnx")
    paths = odd_images(tmp_path / "odd") + sorted((small_ham / "images").glob("*.jpg"))[:1]
    with StaticServer(web) as site:
        rows = drive_page(browser, site.url, paths, None, "web_outside.png")
        shown = browser.execute_script("return [...document.querySelectorAll('.outside')].map(e => e.textContent)")
    assert_shows_the_runtime(rows, clf, paths, None)
    assert sum(r["outside"] for r in rows) == len(shown) >= 2
    assert all("No diagnosis and no referral" in text and OUTSIDE in text for text in shown)


def test_explain_says_when_an_image_is_outside(trained_run, tmp_path):
    odd = odd_images(tmp_path / "odd")
    r = invoke("explain", *odd, "--run", trained_run, "--out", tmp_path / "ex")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.startswith(str(tmp_path / "odd"))]
    assert len(lines) == 2 and all(f"[{OUTSIDE}: predict gives it no class and no referral]" in x for x in lines)
