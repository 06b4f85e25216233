"""The pages: the JavaScript runtime (lesion_pl/export/web/lesion.js) against Python's on real images (Pillow's resize
pixel for pixel, the ONNX metadata, the scoring with and without clinical metadata), then the offline page
(`export --web`, onnxruntime-web) and the service's page driven in headless Chromium: the probabilities they
show equal the Python runtime's to 1e-4. Screenshots go to runs/screenshots/ for a person to look at."""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnx
import pytest
from PIL import Image

from lesion_pl.export.runtime import LesionOnnxClassifier
from lesion_pl.export.web_export import ORT_WEB_FILES
from lesion_pl.preprocess import load_rgb, resize_center_crop

from .conftest import PROJECT, ServiceThread, invoke

LESION_JS = (PROJECT / "lesion_pl" / "export" / "web" / "lesion.js").as_uri()
SHOTS = PROJECT / "runs" / "screenshots"


def node(script: str, payload: dict, tmp_path):
    """Run an ES module under Node with `payload` (JSON) as `input`; returns what it prints (JSON)."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed (.ci/run installs it): the page's JavaScript cannot be checked")
    (tmp_path / "input.json").write_text(json.dumps(payload))
    (tmp_path / "check.mjs").write_text(
        f'import * as L from "{LESION_JS}";\nimport fs from "fs";\n'
        f'const input = JSON.parse(fs.readFileSync("{tmp_path / "input.json"}"));\n{script}\n')
    proc = subprocess.run(["node", str(tmp_path / "check.mjs")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_javascript_resize_is_pillows_pixel_for_pixel(small_ham, tmp_path):
    cases, want = [], []
    for _i, path in enumerate(sorted((small_ham / "images").glob("*.jpg"))[:3]):
        img = load_rgb(path)
        # the data set's 200x150, the originals' 600x450 (Kaggle/Dataverse), and an odd portrait size
        for variant in (img, img.resize((600, 450), Image.BICUBIC), img.resize((233, 317), Image.BICUBIC)):
            raw = tmp_path / f"{len(cases)}.rgb"
            np.asarray(variant, dtype=np.uint8).tofile(raw)
            for size in (48, 128, 192, 224):
                cases.append([str(raw), *variant.size, size])
                want.append(resize_center_crop(variant, size).ravel().tolist())
    got = node("""const out = input.cases.map(([raw, w, h, s]) =>
                    Array.from(L.resizeCenterCrop(new Uint8Array(fs.readFileSync(raw)), w, h, s)));
               console.log(JSON.stringify(out));""", {"cases": cases}, tmp_path)
    for case, g, w in zip(cases, got, want, strict=True):
        assert g == w, f"{case}: {sum(a != b for a, b in zip(g, w, strict=True))} pixels differ"


def test_javascript_reads_the_metadata_and_scores_as_the_runtime(served_model, small_ham, tmp_path):
    clf = LesionOnnxClassifier(served_model)
    assert clf.tta and clf.clinical  # the default run: 8 views, metadata fused
    paths = sorted((small_ham / "images").glob("*.jpg"))[:4]
    batch = np.stack([clf.preprocess(p) for p in paths])
    views = [np.rot90(batch, k, axes=(1, 2)) for k in range(4)]
    views += [v[:, :, ::-1] for v in views]
    assert clf.ood is not None  # the default run carries an out-of-distribution rule
    out, ood = clf.session.run(["probabilities", "ood_score"], {"images": np.ascontiguousarray(np.concatenate(views))})
    view_probs = out.reshape(8, len(paths), -1).transpose(1, 0, 2)  # [image, view, class]
    view_ood = ood.reshape(8, len(paths)).T.tolist()
    sites = clf.clinical["sites"]
    records = [None, {"age": 67, "sex": "male", "site": sites[0]}, {"age": "45"},  # full, only the age,
               {"sex": "unknown", "localization": "nowhere"}]                       # nothing usable
    got = node("""const policy = new L.Policy(L.onnxMetadata(new Uint8Array(fs.readFileSync(input.model))));
                  const rows = input.views.map((v, i) => policy.apply(v, input.records[i], input.files[i],
                                                                      input.ood[i]));
                  console.log(JSON.stringify({meta: L.onnxMetadata(new Uint8Array(fs.readFileSync(input.model))),
                                              rows}));""",
               {"model": str(served_model), "views": view_probs.tolist(), "ood": view_ood, "records": records,
                "files": [p.name for p in paths]}, tmp_path)
    assert got["meta"] == {p.key: p.value for p in onnx.load(str(served_model)).metadata_props}
    for i, path in enumerate(paths):  # each alone: the runtime takes metadata for all images or none
        want = clf.predict([str(path)], metadata=None if records[i] is None else [records[i]]).rows([path.name])[0]
        row = got["rows"][i]
        assert set(row) == set(want)
        for k, v in want.items():
            near = pytest.approx(v, rel=1e-5) if k == "ood_score" else pytest.approx(v, abs=1e-6)  # a float32 sum
            assert row[k] == (near if isinstance(v, float) else v), (path.name, k)
    assert [r.get("metadata") for r in got["rows"]] == [None, "yes", "yes", "no"]


class StaticServer:
    """A folder on http://127.0.0.1:PORT/ (Python's http.server), until the block ends."""

    def __init__(self, folder):
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()


def _wait(browser, script: str, timeout: float = 90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    status = browser.execute_script("return document.getElementById('status').textContent")
    raise AssertionError(f"timed out waiting for {script!r}; the page says: {status!r}")


def drive_page(browser, url: str, paths, metadata: dict | None, shot: str, token: str | None = None) -> list[dict]:
    """Open the page, upload `paths` (once without metadata, once with it where given); the rows it shows."""
    from selenium.webdriver.common.by import By

    browser.get(url)
    if token:
        _wait(browser, "return !document.getElementById('tokenbox').hidden")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "tokenok").click()
    _wait(browser, "return document.body.dataset.ready === 'true'")
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    _wait(browser, f"return document.querySelectorAll('.card').length >= {len(paths)}")
    if metadata:
        browser.execute_script("for (const [k, v] of Object.entries(arguments[0])) "
                               "document.getElementById(k).value = v;", metadata)
        browser.execute_script("document.getElementById('files').value = '';")
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
        _wait(browser, f"return document.querySelectorAll('.card').length >= {2 * len(paths)}")
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / shot))
    assert (SHOTS / shot).stat().st_size > 20_000
    assert "A research tool, not a diagnostic device" in browser.page_source
    assert browser.execute_script("return document.getElementById('status').className") != "error"
    return [json.loads(r) for r in browser.execute_script(
        "return [...document.querySelectorAll('.card')].map(c => c.dataset.row)")]


def assert_shows_the_runtime(rows: list[dict], clf: LesionOnnxClassifier, paths, metadata: dict | None):
    for meta in ([None, metadata] if metadata else [None]):
        want = clf.predict([str(p) for p in paths], metadata=None if meta is None else [meta] * len(paths))
        for path, w in zip(paths, want.rows([p.name for p in paths]), strict=True):
            shown = [r for r in rows if r["file"] == path.name and r.get("metadata") == w.get("metadata")]
            assert len(shown) == 1, (path.name, meta)
            row = shown[0]
            assert row["top_class"] == w["top_class"] and row["referral"] == w["referral"]
            assert row["outside"] == w["outside"]  # onnxruntime-web's score against onnxruntime's
            assert row["ood_score"] == pytest.approx(w["ood_score"], rel=1e-4), path.name
            for c in clf.classes:
                assert abs(row[f"p_{c}"] - w[f"p_{c}"]) <= 1e-4, (path.name, c, row[f"p_{c}"], w[f"p_{c}"])
            assert abs(row["malignancy"] - w["malignancy"]) <= 1e-4


def test_offline_page_in_chromium_shows_the_runtimes_probabilities(trained_run, small_ham, tmp_path, browser):
    web = tmp_path / "web"
    r = invoke("export", "--run", trained_run, "--web", web, "--quiet")
    assert r.exit_code == 0, r.output
    assert "offline page:" in r.output and "http.server" in r.output
    assert sorted(p.name for p in (web / "ort").iterdir()) == sorted(ORT_WEB_FILES)
    clf = LesionOnnxClassifier(web / "model.onnx")
    paths = sorted((small_ham / "images").glob("*.jpg"))[:3]
    metadata = {"age": "60", "sex": clf.clinical["sexes"][0], "site": clf.clinical["sites"][0]}
    with StaticServer(web) as site:
        rows = drive_page(browser, site.url, paths, metadata, "web_offline.png")
    assert_shows_the_runtime(rows, clf, paths, metadata)


def test_service_page_in_chromium_shows_the_runtimes_probabilities(served_model, small_ham, browser):
    from lesion_pl.export.serve import create_app

    clf = LesionOnnxClassifier(served_model)
    paths = sorted((small_ham / "images").glob("*.jpg"))[3:5]
    metadata = {"age": "35", "sex": clf.clinical["sexes"][-1], "site": clf.clinical["sites"][-1]}
    with ServiceThread(create_app(served_model, token="page-token")) as service:
        rows = drive_page(browser, service.url, paths, metadata, "web_service.png", token="page-token")
    assert_shows_the_runtime(rows, clf, paths, metadata)


def test_javascript_states_the_referral_promise_as_python_does(served_model, tmp_path):
    from lesion_pl.calibration import promise_text

    op = dict(LesionOnnxClassifier(served_model).operating_points_image_only["malignant"])
    ops = [op, {**op, "confidence": None}, {**op, "val_lower_bound": op["target_sensitivity"] - 0.1},
           {**op, "val_lower_bound": op["target_sensitivity"] + 0.01, "val_positive_lesions": 0}]
    got = node("console.log(JSON.stringify(input.ops.map(L.promiseText)));", {"ops": ops}, tmp_path)
    assert got == [promise_text(o) for o in ops]


def test_a_tarball_that_is_not_the_pinned_onnxruntime_web_is_refused(served_model, tmp_path):
    from lesion_pl.errors import LesionPLError
    from lesion_pl.export.web_export import ORT_WEB_VERSION, export_web

    fake = tmp_path / f"onnxruntime-web-{ORT_WEB_VERSION}.tgz"
    fake.write_bytes(b"not the package")
    with pytest.raises(LesionPLError, match=f"is not onnxruntime-web {ORT_WEB_VERSION} as the npm registry"):
        export_web(served_model, tmp_path / "web", fake, progress=False)
    with pytest.raises(LesionPLError, match="does not exist"):
        export_web(served_model, tmp_path / "web", tmp_path / "missing.tgz", progress=False)
    assert not (tmp_path / "web").exists()  # refused before anything is written


def test_offline_page_runs_the_int8_model(trained_run, small_ham, tmp_path, browser):
    web = tmp_path / "web8"
    r = invoke("export", "--run", trained_run, "--web", web, "--web-int8", "--quiet")
    assert r.exit_code == 0, r.output
    assert (web / "model.onnx").read_bytes() == (trained_run / "export" / "model.int8.onnx").read_bytes()
    clf = LesionOnnxClassifier(web / "model.onnx")
    paths = sorted((small_ham / "images").glob("*.jpg"))[5:7]
    with StaticServer(web) as site:
        rows = drive_page(browser, site.url, paths, None, "web_offline_int8.png")
    assert_shows_the_runtime(rows, clf, paths, None)
