"""Shades of Gray colour constancy (`data.color_constancy`): it removes a colour cast from real images,
and the PyTorch path, the ONNX graph and `predict` apply it alike."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from PIL import Image

from lesion_pl.classes import CLASSES
from lesion_pl.data.shifts import apply_shift
from lesion_pl.export.runtime import LesionOnnxClassifier
from lesion_pl.models.factory import Normalize, shades_of_gray

from .conftest import FAST, clinical_metadata, invoke


def nchw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None]


def test_shades_of_gray_undoes_a_colour_cast_on_real_images(ham_root):
    files = sorted((ham_root / "images").rglob("*.jpg"))[:40:4]
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        cast = apply_shift("white_balance_0.15", img, 0, i)
        a, b = nchw(img), nchw(cast)
        before = (a - b).abs().mean()
        after = (shades_of_gray(a, 6, (2, 3), 1) - shades_of_gray(b, 6, (2, 3), 1)).abs().mean()
        assert after < 0.35 * before, f.name
        # the NHWC form (the exported graph's) is the same computation
        nhwc = shades_of_gray(a.permute(0, 2, 3, 1), 6, (1, 2), 3).permute(0, 3, 1, 2)
        torch.testing.assert_close(nhwc, shades_of_gray(a, 6, (2, 3), 1))


def test_normalize_without_it_is_unchanged():
    x = torch.randint(0, 256, (2, 3, 8, 8)).float()
    plain, off = Normalize([0.5] * 3, [0.2] * 3), Normalize([0.5] * 3, [0.2] * 3, None)
    torch.testing.assert_close(plain(x), off(x))
    assert not torch.allclose(Normalize([0.5] * 3, [0.2] * 3, 6)(x), plain(x))


def test_colour_constancy_travels_into_the_onnx_graph_and_predict(small_ham, tmp_path):
    run = tmp_path / "cc"
    r = invoke("fit", "--data-root", small_ham, "--out", run, "--max-epochs", 1, *FAST,
               "--set", "data.color_constancy=6")
    assert r.exit_code == 0, r.output
    assert invoke("test", "--run", run, "--quiet").exit_code == 0
    r = invoke("export", "--run", run, "--int8", "--quiet")  # the int8 graph keeps the colour constancy ops
    assert r.exit_code == 0, r.output
    report = json.loads((run / "export" / "export.json").read_text())
    assert report["parity"]["max_abs_diff"] <= 1e-4
    assert json.loads(LesionOnnxClassifier(run / "export" / "model.int8.onnx").metadata["color_constancy"]) == 6.0
    clf = LesionOnnxClassifier(run / "export" / "model.onnx")
    assert json.loads(clf.metadata["color_constancy"]) == 6.0
    torch_preds = pd.read_csv(run / "test" / "predictions.csv")
    files = [next(small_ham.rglob(f"{i}.jpg")) for i in torch_preds["image_id"]]
    onnx = clf.predict(files, metadata=clinical_metadata(small_ham, torch_preds["image_id"]))
    assert np.abs(onnx.probabilities - torch_preds[[f"p_{c}" for c in CLASSES]].to_numpy()).max() <= 1e-4
