"""Hostile clients and hostile files (issue #39): each case refused where it starts, with one line, nothing written,
and the service still answering. The heavy cases run with scaled-down limits; benchmarks/hostile.py sends them at
full size to a real server and measures its memory."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesion_pl.clinical import age_years
from lesion_pl.evaluate.report import text
from lesion_pl.export.limits import Limits
from lesion_pl.export.serve import LOOPBACK, DecodeBudget, create_app
from lesion_pl.io import spreadsheet_safe
from lesion_pl.preprocess import ImageReadError, decoded_bytes, load_rgb

from .conftest import FAST, PROJECT, ServiceThread, invoke, sample_meta

TOKEN = "hostile-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
       b"newpath 0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(served_model):
    from fastapi.testclient import TestClient

    app = create_app(served_model, token=TOKEN, limits=Limits(max_decode_mb=8))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def jpeg(small_ham) -> bytes:
    return sorted((small_ham / "images").glob("*.jpg"))[0].read_bytes()


def _post(client, files, data=None, headers=AUTH):
    return client.post("/predict", files=files, data=data or {}, headers=headers)


def _one_line(r, status: int, detail: str):
    assert r.status_code == status, (r.status_code, r.text)
    reason = r.json()["detail"]
    assert "\n" not in reason and detail in reason, reason


def test_decoding_memory_is_read_from_the_header_and_refused_over_the_limit(client, jpeg):
    """A small 16-bit PNG that decodes to tens of MB is refused before decoding (the limit here: 8 MB); an RGB image
    within it is served; the estimate counts 16-bit and transparent pixels as the conversion really takes them."""
    wide = Image.fromarray(np.full((1500, 1500), 1000, dtype=np.uint16))  # I;16: 2.25 MP, 11 bytes a pixel
    data = _png(wide)
    assert len(data) < 20_000
    r = _post(client, [("images", ("b.png", data, "image/png"))])
    _one_line(r, 413, "b.png: decoding this 1500x1500 I;16 image takes 24 MB, over the limit of 8 MB an image")
    header_only = Image.open(io.BytesIO(data))
    assert decoded_bytes(header_only) == 1500 * 1500 * (2 + 7 + 2) and header_only.tile  # estimated, not decoded
    small = _png(Image.fromarray(np.random.default_rng(1).integers(0, 255, (900, 900, 3), dtype=np.uint8)))
    assert _post(client, [("images", ("ok.png", small, "image/png"))]).status_code == 200  # 0.8 MP x 6 = 4.6 MB
    assert _post(client, [("images", ("a.jpg", jpeg, "image/jpeg"))]).status_code == 200
    rgba = Image.open(io.BytesIO(_png(Image.new("RGBA", (100, 100)))))
    assert decoded_bytes(rgba) == 100 * 100 * (15 + 4) and decoded_bytes(Image.open(io.BytesIO(jpeg))) == 200 * 150 * 3


def test_the_decode_budget_holds_every_decode_to_its_total():
    """Six decodes of 6 units each against a budget of 10: never more than one at a time; small ones pass beside."""
    budget, peak, lock = DecodeBudget(10), [0], threading.Lock()

    def decode(n):
        with budget.hold(n):
            with lock:
                peak[0] = max(peak[0], budget.used)
            time.sleep(0.02)

    threads = [threading.Thread(target=decode, args=(n,)) for n in (6, 6, 6, 6, 3, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads) and peak[0] <= 10 and budget.used == 0


def _raw(url: str, head: str) -> tuple[int, str]:
    """A request's headers alone over a socket, and the whole answer: a status that comes back although the body was
    never sent means the server decided without reading it."""
    host, port = url.split("//")[1].strip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        answer = b""
        while True:  # a refusal closes the connection
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    text_ = answer.decode("latin-1")
    return int(text_.split(" ", 2)[1]), text_.split("\r\n\r\n", 1)[1]


def test_framing_and_the_token_are_judged_before_the_body_is_read(served_model, jpeg):
    """Content-Length with Transfer-Encoding (the limit's bypass) and a missing token on a 200 MB upload are answered
    from the headers alone: no byte of the body is sent before the answer comes back."""
    with ServiceThread(create_app(served_model, token=TOKEN)) as service:
        status, body = _raw(service.url, "POST /predict HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 100\n"
                                         f"Transfer-Encoding: chunked\nAuthorization: Bearer {TOKEN}\n"
                                         "Content-Type: multipart/form-data; boundary=x\n")
        assert status == 400 and "no Transfer-Encoding" in json.loads(body)["detail"]
        status, body = _raw(service.url, f"POST /predict HTTP/1.1\nHost: 127.0.0.1\nContent-Length: {200 * 2**20}\n"
                                         "Content-Type: multipart/form-data; boundary=x\n")
        assert status == 401 and "missing or wrong token" in json.loads(body)["detail"]
        status, body = _raw(service.url, f"POST /predict HTTP/1.1\nHost: 127.0.0.1\nContent-Length: {400 * 2**20}\n"
                                         f"Authorization: Bearer {TOKEN}\nContent-Type: multipart/form-data\n")
        assert status == 413 and "over the limit" in json.loads(body)["detail"]
        status, body = _raw(service.url, "POST /predict HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 10\n"
                                         f"Authorization: Bearer nope\nAuthorization: Bearer {TOKEN}\n")
        assert status == 400 and "the header authorization is given twice" in json.loads(body)["detail"]
        status, _ = _raw(service.url, "POST /predict HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 10\n"
                                      f"Content-Length: 99\nAuthorization: Bearer {TOKEN}\n")
        assert status == 400  # two lengths: the HTTP parser refuses it before lesion-pl sees it
        import httpx  # and a good request is answered at once

        r = httpx.post(service.url + "predict", files=[("images", ("a.jpg", jpeg, "image/jpeg"))], headers=AUTH)
        assert r.status_code == 200


def test_a_busy_server_answers_503_with_retry_after(served_model, jpeg):
    from fastapi.testclient import TestClient

    app = create_app(served_model, limits=Limits(max_active=0))
    with TestClient(app) as c:
        r = c.post("/predict", files=[("images", ("a.jpg", jpeg, "image/jpeg"))])
        _one_line(r, 503, "busy")
        assert r.headers["retry-after"] == "2"


@pytest.mark.parametrize("age", ["inf", "Infinity", "-inf", "1e400", "1e308", "-3", "121"])
def test_an_absurd_age_is_read_as_unknown_and_said_so(client, jpeg, age):
    r = _post(client, [("images", ("a.jpg", jpeg, "image/jpeg"))], {"age": age})
    assert r.status_code == 200, r.text
    row = r.json()["predictions"][0]
    alone = _post(client, [("images", ("a.jpg", jpeg, "image/jpeg"))]).json()["predictions"][0]
    assert row["p_mel"] == alone["p_mel"]  # nothing fused from it
    assert r.json()["notes"] == [f"age value(s) {age!r} are not a number of years from 0 to 120, read as unknown"]
    assert age_years(age) is None and age_years("65") == 65.0


def test_a_metadata_value_over_64_characters_is_refused(client, jpeg):
    r = _post(client, [("images", ("a.jpg", jpeg, "image/jpeg"))], {"age": "9" * 900_000})
    _one_line(r, 422, "age: a value of 900000 characters, over the limit of 64")


def test_predict_and_training_read_absurd_ages_as_unknown(served_model, small_ham, tmp_path):
    images = sorted((small_ham / "images").glob("*.jpg"))[:3]
    meta = tmp_path / "meta.csv"
    meta.write_text("image,age,sex,localization\n" + "".join(
        f"{p.stem},{a},male,back\n" for p, a in zip(images, ("inf", "1e400", "50"), strict=True)))
    out = tmp_path / "p.csv"
    r = invoke("predict", *images, "--model", served_model, "--metadata", meta, "--out", out)
    assert r.exit_code == 0, r.output
    assert "age value(s) '1e400', 'inf' are not a number of years from 0 to 120, read as unknown" in r.output
    assert len(list(csv.DictReader(out.open()))) == 3

    data = tmp_path / "ham"
    shutil.copytree(small_ham, data)
    table = pd.read_csv(data / "HAM10000_metadata.csv", dtype={"age": str})
    table.loc[:4, "age"] = ["inf", "1e308", "-inf", "1e400", "nan"]
    table.to_csv(data / "HAM10000_metadata.csv", index=False)
    run = tmp_path / "run"
    r = invoke("fit", "--data-root", data, "--out", run, "--max-epochs", 1, *FAST)
    assert r.exit_code == 0, r.output
    cal = json.loads((run / "calibration.json").read_text())
    notes = " ".join(cal["clinical_fit"]["read_as_unknown"])
    split = pd.read_csv(run / "splits.csv").set_index("image_id")["split"]
    seen = [a for a, i in zip(table["age"][:5], table["image_id"][:5], strict=True)
            if split[i] in ("train", "val") and a != "nan"]
    assert seen and all(f"'{float(a)}'" in notes for a in seen), notes  # as the reader parsed them: 1e400 is inf


def test_eps_never_reaches_ghostscript(client, tmp_path):
    """Pillow would open this file as EPS (and run Ghostscript on it); lesion-pl decodes only its six formats."""
    assert Image.open(io.BytesIO(EPS)).format == "EPS"
    r = _post(client, [("images", ("x.eps", EPS, "application/postscript"))])
    _one_line(r, 415, "x.eps: not a JPEG, PNG, TIFF, BMP, WebP or GIF image")
    path = tmp_path / "x.jpg"  # whatever its name says
    path.write_bytes(EPS)
    with pytest.raises(ImageReadError, match="not a JPEG, PNG, TIFF, BMP, WebP or GIF image"):
        load_rgb(path)


def test_a_bomb_over_pillows_own_limit_quotes_the_services(client):
    bomb = _png(Image.new("1", (14000, 14000)))  # 196 megapixels: Pillow itself refuses it at open
    _one_line(_post(client, [("images", ("bomb.png", bomb, "image/png"))]), 413,
              "bomb.png: over the limit of 64 megapixels an image")


def test_fit_refuses_a_train_split_without_one_full_batch(small_ham, tmp_path):
    out = tmp_path / "run"
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *FAST, "--set", "data.batch_size=512")
    assert r.exit_code == 2 and "fewer than one batch (data.batch_size 512)" in r.output, r.output
    assert r.output.count("\n") == 1 and not out.exists()


def test_fit_refuses_a_folder_holding_another_runs_log(small_ham, tmp_path):
    out = tmp_path / "run"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "metrics.csv").write_text("epoch,loss\n0,1.0\n")
    r = invoke("fit", "--data-root", small_ham, "--out", out, "--max-epochs", 1, *FAST)
    assert r.exit_code == 2 and "already holds logs/metrics.csv of another run" in r.output, r.output
    assert (out / "logs" / "metrics.csv").read_text() == "epoch,loss\n0,1.0\n"
    assert sorted(p.name for p in out.iterdir()) == ["logs"]


def test_a_class_code_with_markup_is_text_in_the_report(ham_root, ham_meta, tmp_path):
    """A folder named as an HTML tag, with data.classes naming it: the report shows it as text everywhere."""
    hostile = "<img src=x onerror=alert(1)>"
    meta = sample_meta(ham_meta, 12, seed=4)
    root = tmp_path / "clinic"
    for _, row in meta.iterrows():
        folder = root / (hostile if row["dx"] in ("mel", "bcc", "akiec") else "benign")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(ham_root / "images" / f"{row['image_id']}.jpg", folder)
    run = tmp_path / "run"
    classes = f'data.classes={{codes: ["{hostile}", benign], malignant: ["{hostile}"]}}'
    r = invoke("fit", "--data-root", root, "--format", "folder", "--out", run, "--max-epochs", 1, *FAST,
               "--set", classes)
    assert r.exit_code == 0, r.output
    for cmd in (("test", "--run", run, "--quiet"), ("report", "--run", run, "--quiet")):
        r = invoke(*cmd)
        assert r.exit_code == 0, r.output
    page = (run / "report" / "index.html").read_text()
    assert hostile not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "Misclassified" in page
    assert text(hostile) == "&lt;img src=x onerror=alert(1)&gt;"


def test_predicts_csv_cells_never_start_a_formula(served_model, small_ham, tmp_path, monkeypatch):
    """`predict "=1+2.jpg" "@SUM(1+1).jpg" --out p.csv`: the names are kept as text (a leading apostrophe)."""
    image = sorted((small_ham / "images").glob("*.jpg"))[0]
    names = ["=1+2.jpg", "@SUM(1+1).jpg", "+cmd.jpg", "-2.jpg", "plain.jpg"]
    for name in names:
        shutil.copy(image, tmp_path / name)
    (tmp_path / "=bad.jpg").write_bytes(b"not an image")
    monkeypatch.chdir(tmp_path)
    r = invoke("predict", "--model", served_model, "--out", "p.csv", "--", *names, "=bad.jpg")
    assert r.exit_code == 1, r.output  # the bad file fails, and is listed
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [row["file"] for row in rows] == ["'=1+2.jpg", "'@SUM(1+1).jpg", "'+cmd.jpg", "'-2.jpg", "plain.jpg",
                                             "'=bad.jpg"]
    cells = [cell for row in csv.reader((tmp_path / "p.csv").open()) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    assert float(rows[0]["malignancy"]) >= 0  # numbers stay numbers
    assert spreadsheet_safe("=1+2") == "'=1+2" and spreadsheet_safe(-0.5) == -0.5 and spreadsheet_safe("a=b") == "a=b"


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb.write_text("data:\n  drop_labels: *a8\n" + "\n".join(lines) + "\n")
    start = time.time()
    r = invoke("data", "summary", "--config", bomb)
    assert r.exit_code == 2 and "aliases (*name) are not allowed in a config" in r.output, r.output
    assert time.time() - start < 5 and r.output.count("\n") == 1
    r = invoke("data", "summary", "--set", "data.drop_labels=[&x a, *x]")
    assert r.exit_code == 2 and "aliases (*name) are not allowed" in r.output, r.output


@pytest.mark.parametrize("spec, message", [
    ("{codes: [a, b], names: [x, y]}", "data.classes.names must be a mapping {code: name}, got ['x', 'y']"),
    ("{codes: [a, b], source_map: [x]}", "data.classes.source_map must be a mapping {label: code}, got ['x']"),
    ("{codes: [a, b], malignant: [a], melanoma: [a]}", "data.classes.melanoma must be one code (text) or null"),
])
def test_a_label_space_of_the_wrong_shape_is_one_line(spec, message):
    r = invoke("data", "summary", "--set", f"data.classes={spec}")
    assert r.exit_code == 2 and message in r.output and r.output.count("\n") == 1, r.output


def test_an_empty_token_is_refused_and_a_tokenless_public_service_warns(served_model):
    r = invoke("serve", "--model", served_model, "--token", "")
    assert r.exit_code == 2 and "--token (or $LESION_PL_TOKEN) is empty" in r.output, r.output
    with pytest.raises(ValueError, match="empty token"):
        create_app(served_model, token=" ")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "LESION_PL_TOKEN"}
    proc = subprocess.Popen([sys.executable, "cli.py", "serve", "--model", str(served_model), "--host", "0.0.0.0",
                             "--port", str(port)], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(10)
    assert "warning: listening on 0.0.0.0 without a token" in line, line


def test_on_loopback_only_its_own_host_names_are_answered(served_model):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host: evil.example."""
    from fastapi.testclient import TestClient

    app = create_app(served_model, allowed_hosts=LOOPBACK)
    for base, status in (("http://evil.example", 421), ("http://127.0.0.1:8000", 200), ("http://localhost", 200),
                         ("http://[::1]:8000", 200), ("http://127.0.0.1.evil.example", 421)):
        with TestClient(app, base_url=base) as c:
            r = c.get("/health")
            assert r.status_code == status, (base, r.text)
    with TestClient(create_app(served_model), base_url="http://evil.example") as c:  # not on loopback: any name
        assert c.get("/health").status_code == 200


def test_a_plain_export_removes_the_int8_model_it_no_longer_matches(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("report", "export", "evaluations"))
    assert invoke("export", "--run", run, "--int8", "--quiet").exit_code == 0
    assert (run / "export" / "model.int8.onnx").is_file()
    r = invoke("export", "--run", run, "--quiet")
    assert r.exit_code == 0 and f"removed {run / 'export' / 'model.int8.onnx'}" in r.output, r.output
    assert not (run / "export" / "model.int8.onnx").exists()
    assert "int8" not in json.loads((run / "export" / "export.json").read_text())


def test_page_warning_equals_the_runtimes(small_ham, tmp_path):
    """lesion_pl/export/web/lesion.js's imageWarning against preprocess.image_warning: a real image, a blank one, a
    tiny one, a nearly blank one."""
    from lesion_pl.preprocess import image_warning, resize_center_crop

    from .test_web import node

    real = load_rgb(sorted((small_ham / "images").glob("*.jpg"))[0])
    noisy = np.full((150, 200, 3), 128, dtype=np.uint8)
    noisy[::7, ::5] = 131  # a spread just around one grey level
    near = np.full((150, 200, 3), 128, dtype=np.uint8)
    near[:, 150:] = 130  # a quarter two levels up: a spread of about 0.87, just under the blank rule's 1.0
    variants = [real, Image.new("RGB", (200, 150), (90, 60, 40)), real.resize((20, 15)), Image.fromarray(noisy),
                Image.fromarray(near)]
    cases, want = [], []
    for i, img in enumerate(variants):
        for size in (48, 128):
            pixels = resize_center_crop(img, size)
            raw = tmp_path / f"{i}_{size}.rgb"
            pixels.tofile(raw)
            cases.append([str(raw), *img.size, size])
            want.append(image_warning(img, size, pixels) or "")
    got = node("""console.log(JSON.stringify(input.cases.map(([raw, w, h, s]) =>
                    L.imageWarning(w, h, s, new Uint8Array(fs.readFileSync(raw))))));""", {"cases": cases}, tmp_path)
    assert got == want and "" in want and any("single colour" in w for w in want) and any("only" in w for w in want)
    spread = [float(resize_center_crop(variants[-1], s).reshape(-1, 3).std(0).max()) for s in (48, 128)]
    assert all(0.5 < x < 1.0 for x in spread), spread  # the case that tells a threshold of 1.0 from another


def test_the_service_page_shows_a_tiny_or_blank_images_warning(served_model, tmp_path, browser):
    from .test_web import _wait

    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (120, 80, 60)).save(blank)
    with ServiceThread(create_app(served_model)) as service:
        browser.get(service.url)
        _wait(browser, "return document.body.dataset.ready === 'true'")
        from selenium.webdriver.common.by import By

        browser.find_element(By.ID, "files").send_keys(str(blank))
        _wait(browser, "return document.querySelectorAll('.card').length >= 1")
        shown = browser.execute_script("return document.querySelector('.card .warning').textContent")
    assert shown == "Do not trust this prediction: no content: the image is a single colour."


def test_decoded_images_go_back_to_the_system_when_freed(tmp_path):
    """Without it, each thread's glibc arena kept its largest decode: six times the budget under a flood."""
    script = tmp_path / "decodes.py"
    script.write_text(r"""
import re, sys, threading
import numpy as np
from PIL import Image
from lesion_pl.export.serve import release_large_buffers

if sys.argv[1] == "release":
    assert release_large_buffers()


def rss():
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1)) // 1024


def decode():
    im = Image.new("I;16", (4000, 4000), 1000)
    rgb = Image.fromarray((np.asarray(im) // 257).astype(np.uint8)).convert("RGB")
    del im, rgb


base = rss()
for _ in range(8):
    t = threading.Thread(target=decode)
    t.start()
    t.join()
print(rss() - base)
""")
    grew = {}
    for mode in ("release", "default"):
        proc = subprocess.run([sys.executable, str(script), mode], cwd=PROJECT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(PROJECT)})
        assert proc.returncode == 0, proc.stderr
        grew[mode] = int(proc.stdout)
    assert grew["release"] < 20 and grew["default"] > 40, grew  # MB kept after eight decodes in eight threads
