"""`serve`: the HTTP service on real images: the JSON equals the runtime's and `predict --out x.json`'s, each
bad input gets its 4xx with a one-line reason while the server keeps serving, the token, offline docs, no
torch, and a real server on 127.0.0.1 under a bounded load with bad requests mixed in."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

from lesion_pl.export.runtime import LesionOnnxClassifier
from lesion_pl.export.serve import Limits, create_app

from .conftest import PROJECT, clinical_metadata, invoke

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(served_model):
    from fastapi.testclient import TestClient

    app = create_app(served_model, token=TOKEN, limits=Limits(max_image_mb=1, max_images=3, max_megapixels=64))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def images(small_ham):
    return sorted((small_ham / "images").glob("*.jpg"))[:3]


def upload(paths):
    return [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def assert_rows_equal(got: list[dict], want: list[dict], skip=("file",)):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for k in w:
            if k in skip:
                continue
            if k == "ood_score":  # hundreds, from float32 features: the same to float32's precision
                assert g[k] == pytest.approx(w[k], rel=1e-5), k
            elif isinstance(w[k], float):
                assert g[k] == pytest.approx(w[k], abs=1e-6), k
            else:
                assert g[k] == w[k], k


def test_predict_returns_the_runtimes_rows_and_predicts_json(client, served_model, images, small_ham, tmp_path):
    meta = clinical_metadata(small_ham, [p.stem for p in images])
    fields = {k: [str(m[k]) for m in meta] for k in ("age", "sex", "site")}
    r = client.post("/predict", files=upload(images), data=fields, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    clf = LesionOnnxClassifier(served_model)
    want = clf.predict([str(p) for p in images], metadata=meta).rows([p.name for p in images])
    assert_rows_equal(body["predictions"], want, skip=())
    assert [row["metadata"] for row in body["predictions"]] == ["yes"] * 3
    assert body["failed"] == []
    ident = body["model"]
    assert ident["sha256"] == hashlib.sha256(served_model.read_bytes()).hexdigest()
    assert ident["classes"] == list(clf.classes) and ident["input_size"] == clf.size

    out = tmp_path / "x.json"  # the same rows as the command line's JSON
    res = invoke("predict", *images, "--model", served_model, "--metadata", small_ham / "HAM10000_metadata.csv",
                 "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert_rows_equal(body["predictions"], json.loads(out.read_text())["predictions"])


def test_one_metadata_value_applies_to_every_image(client, served_model, images):
    r = client.post("/predict", files=upload(images[:2]), data={"age": "55", "site": "back"}, headers=AUTH)
    assert r.status_code == 200, r.text
    want = LesionOnnxClassifier(served_model).predict([str(p) for p in images[:2]],
                                                      metadata=[{"age": "55", "site": "back"}] * 2)
    assert_rows_equal(r.json()["predictions"], want.rows([p.name for p in images[:2]]), skip=())
    image_only = client.post("/predict", files=upload(images[:1]), headers=AUTH).json()["predictions"][0]
    assert "metadata" not in image_only  # none given: the image alone, as the runtime reports it


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_bad_input_gets_a_4xx_with_one_line_and_the_server_keeps_serving(client, images):
    jpeg = images[0].read_bytes()
    noise = _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)))
    bomb = _png(Image.new("1", (12000, 12000)))  # a few kB of PNG, 144 megapixels decoded
    assert len(bomb) < 100_000 and len(noise) > 2**20
    cases = [
        ("not an image", [("images", ("notes.txt", b"hello", "text/plain"))], {}, AUTH, 415,
         "notes.txt: not a JPEG, PNG, TIFF, BMP, WebP or GIF image"),
        ("zero bytes", [("images", ("e.jpg", b"", "image/jpeg"))], {}, AUTH, 400, "e.jpg: the file is empty"),
        ("truncated", [("images", ("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"))], {}, AUTH, 400,
         "cut.jpg: cannot decode"),
        ("decompression bomb", [("images", ("bomb.png", bomb, "image/png"))], {}, AUTH, 413,
         "12000x12000 px (144 megapixels), over the limit of 64"),
        ("file over the size limit", [("images", ("big.png", noise, "image/png"))], {}, AUTH, 413,
         "over the limit of 1 MB an image"),
        ("request over the size limit", [("images", (f"{i}.png", noise, "image/png")) for i in range(3)], {}, AUTH,
         413, "over the limit of 3.1 MB"),
        ("too many images", upload(images) + upload(images[:1]), {}, AUTH, 413, "4 images in one request"),
        ("wrong field name", [("image", ("a.jpg", jpeg, "image/jpeg"))], {}, AUTH, 422, "images: required"),
        ("unknown field", upload(images[:1]), {"agee": "50"}, AUTH, 422, "unknown form field(s) agee"),
        ("metadata per image miscounted", upload(images[:2]), {"age": ["1", "2", "3"]}, AUTH, 422,
         "3 values of age for 2 images"),
        ("no token", upload(images[:1]), {}, {}, 401, "missing or wrong token"),
        ("wrong token", upload(images[:1]), {}, {"Authorization": "Bearer nope"}, 401, "missing or wrong token"),
    ]
    for what, files, data, headers, status, detail in cases:
        r = client.post("/predict", files=files, data=data, headers=headers)
        assert r.status_code == status, (what, r.status_code, r.text)
        reason = r.json()["detail"]
        assert isinstance(reason, str) and "\n" not in reason and detail in reason, (what, reason)
        ok = client.post("/predict", files=upload(images[:1]), headers=AUTH)
        assert ok.status_code == 200, (what, ok.text)  # and the server keeps serving
    r = client.post("/predict", content=b"x" * 10, headers={**AUTH, "Content-Type": "text/plain"})
    assert r.status_code == 422


def test_health_model_docs_and_page(client, served_model):
    assert client.get("/health").status_code == 401 and client.get("/model").status_code == 401
    assert client.get("/health", headers=AUTH).json()["status"] == "ok"
    props = {p.key: p.value for p in onnx.load(str(served_model)).metadata_props}
    assert client.get("/model", headers=AUTH).json()["metadata_props"] == props
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn." not in docs.text  # works without the internet
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        url = next(part.split('"')[0] for part in docs.text.split("'") + docs.text.split('"')
                   if part.endswith(asset))
        assert client.get(url).status_code == 200, url
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and 'content="service"' in page.text
    for script in ("/page.js", "/lesion.js"):
        assert client.get(script).headers["content-type"].startswith("text/javascript")


def test_the_service_imports_no_torch(served_model):
    code = (f"import sys; from lesion_pl.export.serve import create_app; create_app({str(served_model)!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True)


def test_a_real_server_under_load_with_bad_requests_mixed_in(served_model, tmp_path):
    out = tmp_path / "serve.json"
    proc = subprocess.run([sys.executable, "benchmarks/serve.py", "--model", str(served_model), "--requests", "500",
                           "--concurrency", "16", "--images", "8", "--json", str(out)],
                          cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())
    for label in ("batched (--max-batch 32)", "plain (--max-batch 1)"):
        r = figures[label]
        assert r["errors"] == [] and r["good"] + r["bad"] == 500 and r["bad"] > 20
        assert r["p95_ms"] >= r["p50_ms"] > 0
    assert "good requests/s" in proc.stdout and proc.stdout.startswith("machine:")
