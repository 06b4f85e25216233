"""Export to ONNX and the torch-free runtime: parity with PyTorch on real images, metadata, int8,
image modes, and bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from PIL import Image

from lesion_pl import clinical
from lesion_pl.classes import CLASSES, MALIGNANT
from lesion_pl.errors import LesionPLError
from lesion_pl.export.runtime import LesionOnnxClassifier

from .conftest import PROJECT, clinical_metadata, invoke, named


@pytest.fixture(scope="module")
def exported(trained_run):
    r = invoke("export", "--run", trained_run, "--quiet")
    assert r.exit_code == 0, r.output
    assert "same top class on 64/64" in r.output
    return trained_run / "export" / "model.onnx"


def test_onnx_file_describes_itself(exported):
    assert sorted(p.name for p in exported.parent.iterdir() if p.name.startswith("model")) == ["model.onnx"]
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temp or side files
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["lesion_pl.classes"]) == list(CLASSES)
    assert json.loads(meta["lesion_pl.malignant"]) == list(MALIGNANT)
    assert meta["lesion_pl.input_height"] == meta["lesion_pl.input_width"] == "48"
    assert meta["lesion_pl.input_layout"] == "NHWC"
    assert "centre crop" in meta["lesion_pl.resize_policy"]
    (inp,) = model.graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [48, 48, 3]
    assert [o.name for o in model.graph.output] == ["probabilities", "logits", "ood_score"]
    assert json.loads(meta["lesion_pl.ood"])["share"] == 0.99  # the refusal rule travels with the graph


def test_runtime_matches_the_torch_test_run_on_real_images(exported, trained_run, small_ham):
    """The whole torch path (cache, model, metadata fusion) and the whole ONNX path (runtime
    preprocessing, onnxruntime, the same fusion from the file's metadata)."""
    torch_preds = pd.read_csv(trained_run / "test" / "predictions.csv")
    files = [next(small_ham.rglob(f"{i}.jpg")) for i in torch_preds["image_id"]]
    clf = LesionOnnxClassifier(exported)
    assert clf.clinical_fields == {"age": "age", "sex": "sex", "site": "localization"}
    given = clinical_metadata(small_ham, torch_preds["image_id"])
    result = clf.predict(files, batch_size=16, metadata=given)
    torch_probs = torch_preds[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert len(files) >= 20 and result.with_metadata.all()
    assert np.abs(result.probabilities - torch_probs).max() <= 1e-4
    assert result.top_class == named(torch_preds)
    np.testing.assert_allclose(result.malignancy, torch_preds["malignant_prob"], atol=1e-4)

    image_only = clf.predict(files, batch_size=16)
    assert image_only.with_metadata is None
    np.testing.assert_allclose(clinical.fused(image_only.probabilities, clf.clinical_records(given), clf.clinical)[0],
                               result.probabilities, atol=1e-5)
    assert image_only.referral_threshold == clf.operating_points_image_only["malignant"]["threshold"]
    np.testing.assert_array_equal(result.referral_threshold, clf.operating_points["malignant"]["threshold"])


def test_predict_command_with_a_metadata_csv(exported, trained_run, small_ham, tmp_path):
    torch_preds = pd.read_csv(trained_run / "test" / "predictions.csv").head(3)
    files = [str(next(small_ham.rglob(f"{i}.jpg"))) for i in torch_preds["image_id"]]
    meta = pd.read_csv(small_ham / "HAM10000_metadata.csv").set_index("image_id").loc[torch_preds["image_id"]]
    rows = meta.reset_index()[["image_id", "age", "sex", "localization"]]
    rows.loc[1, ["age", "sex", "localization"]] = [None, None, "palm"]  # nothing usable: image only
    rows.iloc[:2].to_csv(tmp_path / "meta.csv", index=False)  # the third image has no row
    proc = subprocess.run([sys.executable, "cli.py", "predict", *files, "--model", str(exported), "--metadata",
                           str(tmp_path / "meta.csv"), "--out", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, proc.stderr
    assert "2 of 3 image(s) have a row" in proc.stdout and "1 with a usable age/sex/site" in proc.stdout
    assert "site value(s) 'palm' not seen in training, read as unknown" in proc.stderr
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["metadata"].tolist() == ["yes", "no", "no"]
    printed = [line.split() for line in proc.stdout.splitlines() if line.startswith(tuple(files))]
    assert [p[4] for p in printed] == ["yes", "no", "no"]  # file, class, prob, malignancy, metadata
    np.testing.assert_allclose(table.loc[0, [f"p_{c}" for c in CLASSES]].to_numpy(float),
                               torch_preds.loc[0, [f"p_{c}" for c in CLASSES]].to_numpy(float), atol=1e-4)

    (tmp_path / "bad.csv").write_text("name,age\nx,1\n")
    proc = subprocess.run([sys.executable, "cli.py", "predict", files[0], "--model", str(exported), "--metadata",
                           str(tmp_path / "bad.csv")], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode != 0 and "no column naming the image" in proc.stderr and "Traceback" not in proc.stderr


def test_runtime_imports_and_predicts_without_torch(exported, small_ham):
    image = next(small_ham.rglob("*.jpg"))
    code = f"""
import sys, json
sys.modules['torch'] = None  # any 'import torch' now fails
from lesion_pl.export.runtime import LesionOnnxClassifier
r = LesionOnnxClassifier({str(exported)!r}).predict([{str(image)!r}])
assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m] is not None)
print(json.dumps({{'top': r.top_class[0], 'sum': float(r.probabilities.sum())}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["top"] in CLASSES and out["sum"] == pytest.approx(1.0, abs=1e-4)


def test_runtime_accepts_any_image_mode(exported, small_ham, tmp_path):
    clf = LesionOnnxClassifier(exported)
    src = Image.open(next(small_ham.rglob("*.jpg")))
    rgb = np.asarray(src)
    src.convert("CMYK").save(tmp_path / "cmyk.jpg")
    src.convert("RGBA").save(tmp_path / "rgba.png")
    src.convert("L").save(tmp_path / "gray.png")
    Image.fromarray(np.asarray(src.convert("L")).astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    inputs = [tmp_path / "cmyk.jpg", tmp_path / "rgba.png", tmp_path / "gray.png", tmp_path / "gray16.png",
              src, rgb, rgb.astype(np.uint16) * 257]
    result = clf.predict(inputs)
    assert result.probabilities.shape == (len(inputs), 7)
    np.testing.assert_allclose(result.probabilities.sum(1), 1.0, atol=1e-4)
    # the uint8 array, the PIL image, its opaque RGBA copy and its 16-bit copy are the same picture; the 16-bit
    # grey image is the 8-bit grey one
    for same in (5, 6, 1):
        np.testing.assert_allclose(result.probabilities[same], result.probabilities[4], atol=1e-6)
    np.testing.assert_allclose(result.probabilities[3], result.probabilities[2], atol=1e-6)
    assert np.abs(result.probabilities[2] - result.probabilities[4]).max() > 1e-4  # grey is another picture


def test_exif_orientation_is_applied(exported, small_ham, tmp_path):
    clf = LesionOnnxClassifier(exported)
    src = Image.open(next(small_ham.rglob("*.jpg")))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored pixels must be turned 90 degrees clockwise to display
    src.save(tmp_path / "tagged.jpg", exif=exif, quality=95)
    raw = np.asarray(Image.open(tmp_path / "tagged.jpg").convert("RGB"))
    shown = clf.preprocess(tmp_path / "tagged.jpg")
    expected = clf.preprocess(np.rot90(raw, k=-1).copy())
    np.testing.assert_array_equal(shown, expected)


def test_int8_export_reports_accuracy_and_keeps_metadata(trained_run, small_ham):
    r = invoke("export", "--run", trained_run, "--int8", "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((trained_run / "export" / "export.json").read_text())
    q = report["int8"]
    assert q["size_bytes"] < report["size_bytes"]
    # recomputed here on the test split's files, with scikit-learn
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    splits = pd.read_csv(trained_run / "splits.csv")
    test = splits[splits["split"] == "test"]
    files = [next(small_ham.rglob(f"{i}.jpg")) for i in test["image_id"]]
    labels = test["dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    tops = {}
    for name, model in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        tops[name] = LesionOnnxClassifier(trained_run / "export" / model).predict(files).top_index
        assert q[name]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, tops[name]), abs=1e-9)
        assert q[name]["accuracy"] == pytest.approx(accuracy_score(labels, tops[name]), abs=1e-9)
        assert q[name]["images_per_s_batch32"] > 0
    assert abs(q["int8"]["balanced_accuracy"] - q["fp32"]["balanced_accuracy"]) <= 0.1
    assert (tops["int8"] == tops["fp32"]).mean() >= 0.8  # int8 names the class fp32 names, mostly
    clf = LesionOnnxClassifier(trained_run / "export" / "model.int8.onnx")
    assert clf.classes == CLASSES and clf.metadata["quantization"] == "int8 static"
    # the out-of-distribution score stays in float inside the int8 graph (near the float graph's), and its
    # threshold is the int8 graph's own, chosen on validation: 99% of validation's images pass it
    fp32 = LesionOnnxClassifier(trained_run / "export" / "model.onnx")
    val = [next(small_ham.rglob(f"{i}.jpg")) for i in splits.loc[splits["split"] == "val", "image_id"]]
    scores = {name: c.predict(val).ood_score for name, c in (("fp32", fp32), ("int8", clf))}
    assert np.median(np.abs(scores["int8"] / scores["fp32"] - 1)) < 0.2
    assert clf.ood.threshold == pytest.approx(q["ood_threshold"]) and clf.ood.threshold != fp32.ood.threshold
    assert clf.ood.facts["threshold_chosen"] == "on validation again, for this int8 graph"
    assert (scores["int8"] <= clf.ood.threshold).mean() >= 0.99
    r = invoke("export", "--run", trained_run, "--int8", "--per-channel", "--quiet")
    assert r.exit_code == 0 and "static per-channel int8" in r.output, r.output
    assert LesionOnnxClassifier(trained_run / "export" / "model.int8.onnx").metadata["quantization"] == \
        "int8 static per-channel"


def test_predict_command_over_a_folder_with_a_bad_file(exported, small_ham, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted(small_ham.rglob("*.jpg"))[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    proc = subprocess.run([sys.executable, "cli.py", "predict", str(folder), "--model", str(exported),
                           "--out", str(tmp_path / "p.csv")], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 1
    assert "broken.jpg" in proc.stderr and "1 of 4 file(s) could not be predicted" in proc.stderr
    listed = pd.read_csv(tmp_path / "p.csv")
    assert len(listed) == 4 and listed["error"].notna().sum() == 1  # the failed file too, with its reason
    assert listed.loc[listed["error"].notna(), "file"].iloc[0].endswith("broken.jpg")
    table = listed[listed["error"].isna()]
    assert len(table) == 3 and set(table["top_class"]) <= set(CLASSES)
    assert table["file"].str.endswith(".jpg").all()
    # the same as JSON: the predictions and, beside them, the file that failed and why
    subprocess.run([sys.executable, "cli.py", "predict", str(folder), "--model", str(exported),
                    "--out", str(tmp_path / "p.json")], capture_output=True, text=True, cwd=PROJECT)
    out = json.loads((tmp_path / "p.json").read_text())
    assert [r["top_class"] for r in out["predictions"]] == table["top_class"].tolist()
    assert [Path(f["file"]).name for f in out["failed"]] == ["broken.jpg"] and out["failed"][0]["error"]


def test_bad_model_files(exported, tmp_path):
    with pytest.raises(LesionPLError, match="does not exist"):
        LesionOnnxClassifier(tmp_path / "missing.onnx")
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(LesionPLError, match="not an ONNX model"):
        LesionOnnxClassifier(tmp_path / "text.onnx")
    bare = onnx.load(str(exported))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(LesionPLError, match="no lesion-pl metadata"):
        LesionOnnxClassifier(tmp_path / "bare.onnx")


def test_unsupported_opset(trained_run):
    r = invoke("export", "--run", trained_run, "--opset", "11", "--quiet")
    assert r.exit_code == 2 and "--opset 11 is not supported" in r.output


def test_opset_17(trained_run, tmp_path):
    r = invoke("export", "--run", trained_run, "--opset", "17", "--quiet")
    assert r.exit_code == 0 and "same top class on 64/64" in r.output, r.output
    model = onnx.load(str(trained_run / "export" / "model.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]


def test_int8_scales_depthwise_networks_per_channel():
    """Per tensor, EfficientNet-Lite0's int8 named nearly every image naevus: `export --int8` quantises a
    network with depthwise convolutions per channel unless told otherwise (--per-tensor)."""
    from lesion_pl.config import load_config
    from lesion_pl.export.run_export import has_depthwise
    from lesion_pl.models import build_network

    assert not has_depthwise(build_network(load_config(None, ["model.widths=[8,16,32,64]"]).model))
    assert has_depthwise(build_network(load_config(None, ["model.name=efficientnet_lite0"]).model))


def test_the_eight_views_are_one_definition_in_torch_and_numpy(small_ham):
    """Test-time augmentation's views, as PyTorch scores them (NCHW) and as the ONNX runtime does (NHWC): the same
    images in the same order (the page's JavaScript is held to that order in tests/test_web.py)."""
    import torch

    from lesion_pl.evaluate.inference import torch_views
    from lesion_pl.preprocess import numpy_views, preprocess_file

    batch = np.stack([preprocess_file(p, 48) for p in sorted((small_ham / "images").glob("*.jpg"))[:3]])
    by_numpy = numpy_views(batch)
    by_torch = torch_views(torch.from_numpy(batch).permute(0, 3, 1, 2))
    assert len(by_numpy) == len(by_torch) == 8
    for a, b in zip(by_numpy, by_torch, strict=True):
        assert np.array_equal(a, b.permute(0, 2, 3, 1).numpy())
    assert np.array_equal(by_numpy[1][0], np.rot90(batch[0]))  # counter-clockwise
    assert np.array_equal(by_numpy[4][0], batch[0][:, ::-1])  # then the mirrors, the unturned first
