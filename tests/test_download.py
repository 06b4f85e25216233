"""`data download` against a local HTTP server serving small fixture files made from real images:
checksums, resumption after a dropped connection, a corrupted file, and no network at all."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from lesion_pl.data import download as dl
from lesion_pl.data.sources import read_source
from lesion_pl.errors import LesionPLError

from .conftest import invoke, sample_meta


class Server:
    """Serves `files` {path?query: bytes}; paths in `drop_once` send half their body, then hang up."""

    def __init__(self):
        self.files, self.drop_once, self.ranges = {}, set(), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    outer.ranges.append((self.path, start))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in outer.drop_once and not start:
                    outer.drop_once.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def zip_of(ham_root, image_ids) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in image_ids:
            z.write(ham_root / "images" / f"{i}.jpg", f"{i}.jpg")
    return buf.getvalue()


@pytest.fixture()
def dataverse(server, ham_root, ham_meta):
    meta = sample_meta(ham_meta, 1, seed=7)
    half = len(meta) // 2
    files = {101: ("HAM10000_images_part_1.zip", zip_of(ham_root, meta["image_id"][:half])),
             102: ("HAM10000_images_part_2.zip", zip_of(ham_root, meta["image_id"][half:])),
             103: ("HAM10000_metadata.tab", meta.to_csv(index=False).encode())}
    listing = {"status": "OK", "data": {"latestVersion": {"files": [
        {"dataFile": {"id": k, "filename": name, "md5": md5(body),
                      **({"originalFileFormat": "text/csv", "originalFileName": "HAM10000_metadata.csv"}
                         if name.endswith(".tab") else {})}} for k, (name, body) in files.items()]}}}
    server.files[f"/api/datasets/:persistentId/?persistentId={dl.HAM10000_DOI}"] = json.dumps(listing).encode()
    for k, (name, body) in files.items():
        server.files[f"/api/access/datafile/{k}" + ("?format=original" if name.endswith(".tab") else "")] = body
    return meta


def test_ham10000_download_resumes_and_lays_out_for_fit(server, dataverse, tmp_path):
    server.drop_once.add("/api/access/datafile/101")
    r = invoke("data", "download", "ham10000", "--to", tmp_path, "--base-url", server.url, "--quiet")
    assert r.exit_code == 0, r.output
    path, offset = server.ranges[0]  # the dropped file was resumed, not fetched again from the start
    assert path == "/api/access/datafile/101" and offset > 0
    table = read_source("auto", tmp_path / "ham10000")
    assert sorted(table["image_id"]) == sorted(dataverse["image_id"])
    assert {p.split("/")[-2] for p in table["path"]} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert not list((tmp_path / "ham10000").glob("*.part"))


def test_corrupted_file_is_refused_and_removed(server, dataverse, tmp_path):
    body = server.files["/api/access/datafile/102"]
    server.files["/api/access/datafile/102"] = body[:-10] + b"0123456789"
    with pytest.raises(LesionPLError, match="checksum mismatch for HAM10000_images_part_2.zip"):
        dl.download_ham10000(tmp_path, server.url, progress=False)
    assert not (tmp_path / "ham10000" / "HAM10000_images_part_2.zip").exists()
    assert not list((tmp_path / "ham10000").glob("*.part"))


def test_offline_fails_fast_and_says_what_to_do(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    start = time.time()
    r = invoke("data", "download", "ham10000", "--to", tmp_path, "--base-url", closed, "--quiet")
    assert r.exit_code == 2 and "cannot reach" in r.output and "by hand" in r.output
    assert time.time() - start < 10


def test_dermamnist_download(server, ham_root, ham_meta, tmp_path, monkeypatch):
    import medmnist

    from .test_formats import dermamnist_npz

    src, _ = dermamnist_npz(ham_root, ham_meta, tmp_path / "src")
    body = (src / "dermamnist.npz").read_bytes()
    info = dict(medmnist.INFO["dermamnist"], MD5=md5(body))  # the fixture stands in for Zenodo's file
    monkeypatch.setitem(medmnist.INFO, "dermamnist", info)
    server.files["/records/10519652/files/dermamnist.npz?download=1"] = body
    server.drop_once.add("/records/10519652/files/dermamnist.npz?download=1")
    r = invoke("data", "download", "dermamnist", "--to", tmp_path / "d", "--base-url", server.url, "--quiet")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / "dermamnist" / "dermamnist.npz").read_bytes() == body
    table = read_source("auto", tmp_path / "d" / "dermamnist", {"cache_dir": tmp_path / "cache"})
    assert len(table) == sum(len(np.load(src / "dermamnist.npz")[f"{s}_labels"]) for s in ("train", "val", "test"))
