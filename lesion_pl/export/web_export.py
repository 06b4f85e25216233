"""`export --web DIR`: an offline page that runs the model in the browser (onnxruntime-web, WebAssembly).

DIR gets index.html, page.js and lesion.js (lesion_pl/export/web/: the runtime's preprocessing and scoring in
JavaScript), model.onnx, and onnxruntime-web's two files under ort/. Any static server serves it
(`python -m http.server --directory DIR`); images never leave the device.

onnxruntime-web comes from the npm registry at the version pinned below, checked against the registry's
sha512 integrity, and is kept in the cache ($LESION_PL_CACHE, else ~/.cache/lesion_pl). Offline, give the
package's tarball (`npm pack onnxruntime-web@VERSION` on a machine that has the registry) with `--ort-web`.
To move to a newer version: set ORT_WEB_VERSION and ORT_WEB_INTEGRITY (`npm view onnxruntime-web@X
dist.integrity`) and run tests/test_web.py, which drives both pages in headless Chromium.
"""
from __future__ import annotations

import base64
import shutil
import tarfile
from pathlib import Path

from lesion_pl.errors import LesionPLError
from lesion_pl.io import atomic_path

ORT_WEB_VERSION = "1.30.0"
ORT_WEB_INTEGRITY = "sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
ORT_WEB_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz"
# the ES module with its WebAssembly glue bundled in, and the SIMD WebAssembly it loads: the CPU path only
ORT_WEB_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")
PAGE_FILES = ("index.html", "page.js", "lesion.js")
WEB = Path(__file__).resolve().parent / "web"


def integrity_of(path: Path) -> str:
    """npm's integrity string of a file: sha512-BASE64."""
    from lesion_pl.data.download import file_hash

    return "sha512-" + base64.b64encode(file_hash(path, "sha512").digest()).decode()


def ort_web_tarball(source: Path | None = None, progress: bool = True) -> Path:
    """The pinned onnxruntime-web tarball, checked: `source` if given, else the cached copy, else fetched."""
    from lesion_pl.data.cache import default_cache_dir
    from lesion_pl.data.download import fetch

    if source is None:
        source = default_cache_dir() / "onnxruntime-web" / f"onnxruntime-web-{ORT_WEB_VERSION}.tgz"
        hint = (f"Or, on a machine with the npm registry: `npm pack onnxruntime-web@{ORT_WEB_VERSION}`, then "
                f"`cli.py export --run RUN --web DIR --ort-web onnxruntime-web-{ORT_WEB_VERSION}.tgz`.")
        fetch(ORT_WEB_URL, source, md5=None, progress=progress, manual_hint=hint)
    elif not source.is_file():
        raise LesionPLError(f"--ort-web {source} does not exist (it is the tarball `npm pack "
                            f"onnxruntime-web@{ORT_WEB_VERSION}` writes)")
    got = integrity_of(source)
    if got != ORT_WEB_INTEGRITY:
        raise LesionPLError(f"{source} is not onnxruntime-web {ORT_WEB_VERSION} as the npm registry publishes it "
                            f"(integrity {got[:24]}..., expected {ORT_WEB_INTEGRITY[:24]}...)")
    return source


def export_web(model: Path, out: Path, ort_source: Path | None = None, progress: bool = True) -> dict:
    """Write the offline page for `model` (an ONNX file made by `export`) into the folder `out`."""
    from .runtime import LesionOnnxClassifier

    clf = LesionOnnxClassifier(model)  # refuses a file without lesion-pl metadata before anything is written
    tarball = ort_web_tarball(ort_source, progress)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ort").mkdir(exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for name in ORT_WEB_FILES:
            member = tar.extractfile(f"package/dist/{name}")
            with atomic_path(out / "ort" / name) as tmp, open(tmp, "wb") as f:
                shutil.copyfileobj(member, f)
    for name in PAGE_FILES:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(WEB / name, tmp)
    with atomic_path(out / "model.onnx") as tmp:
        shutil.copyfile(model, tmp)
    return {"folder": str(out), "model": str(model), "classes": list(clf.classes), "input_size": clf.size,
            "onnxruntime_web": ORT_WEB_VERSION,
            "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file())}
