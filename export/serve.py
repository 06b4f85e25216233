"""`serve`: the exported model over HTTP (FastAPI, uvicorn), torch-free, for a clinic's viewer or a web app.

    POST /predict   multipart: images=@a.jpg [images=@b.jpg ...] [age=..] [sex=..] [site=..] -> the JSON
                    `predict --out x.json` writes, with the model's identity
    GET  /model     the model's identity and its lesion-pl metadata
    GET  /health    liveness
    GET  /          a page: drop an image, see the probabilities and the referral (the offline page's code)
    GET  /docs      OpenAPI docs (served from the installed package, no CDN)

With a token (`--token` or $LESION_PL_TOKEN) every call of /predict, /model and /health must carry
`Authorization: Bearer TOKEN`; the page, the docs and the schema hold no data and stay open (the page asks
for the token). Bad input is a 4xx with a one-line `detail`; nothing from a request is written anywhere or
used as a path. One onnxruntime session serves every request; with `max_batch` > 1 the images of requests
that arrive together run as one batch (benchmarks/serve.py measures what that buys: on a 2-core CPU with an
8-view model, nothing, so it is off by default).
"""
from __future__ import annotations

import asyncio
import hmac
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from fastapi import Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from lesion_pl import __version__
from lesion_pl.data.download import file_hash
from lesion_pl.preprocess import image_warning, resize_center_crop, to_rgb

from .metadata import PREFIX
from .runtime import LesionOnnxClassifier
from .web_export import WEB

TOKEN_ENV = "LESION_PL_TOKEN"
FIELDS = ("images", "age", "sex", "site")


@dataclass(frozen=True)
class Limits:
    max_image_mb: float = 20.0      # one uploaded file
    max_images: int = 16            # files in one request
    max_megapixels: float = 64.0    # decoded size of one image (a decompression bomb is refused before decoding)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_images * self.max_image_mb * 2**20) + 2**16  # + the form's own fields


class BadUpload(Exception):
    """An upload refused: the HTTP status and a one-line reason."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def upload_name(filename: str | None, index: int) -> str:
    """The name an upload is reported under: its file name's last part, printable, at most 120 characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:120]
    return name or f"image {index + 1}"


def decode_upload(data: bytes, name: str, limits: Limits) -> Image.Image:
    """An uploaded file's bytes -> RGB image, fully decoded, or BadUpload naming what is wrong with it."""
    if not data:
        raise BadUpload(400, f"{name}: the file is empty (0 bytes)")
    if len(data) > limits.max_image_mb * 2**20:
        raise BadUpload(413, f"{name}: {len(data) / 2**20:.1f} MB, over the limit of {limits.max_image_mb:g} MB "
                             "an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit applies below
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise BadUpload(415, f"{name}: not an image Pillow can read (JPEG, PNG, TIFF, BMP, WebP ...)") from None
        except Image.DecompressionBombError as e:
            raise BadUpload(413, f"{name}: {e}") from None
        except Exception as e:
            raise BadUpload(400, f"{name}: cannot read the image: {str(e)[:160] or type(e).__name__}") from None
        w, h = img.size
        if w * h > limits.max_megapixels * 1e6:
            raise BadUpload(413, f"{name}: {w}x{h} px ({w * h / 1e6:.0f} megapixels), over the limit of "
                                 f"{limits.max_megapixels:g} megapixels an image")
        try:
            img.load()
            return to_rgb(img)
        except Exception as e:  # truncated, corrupt
            raise BadUpload(400, f"{name}: cannot decode the image: {str(e)[:160] or type(e).__name__}") from None


class Batcher:
    """Runs the model for every request through one session: the images of requests waiting together go in
    one call of up to `max_batch` images (1: each request on its own, in the thread pool, the plain way)."""

    def __init__(self, clf: LesionOnnxClassifier, max_batch: int):
        self.clf, self.max_batch = clf, max_batch
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None

    async def probabilities(self, arrays: np.ndarray) -> np.ndarray:
        if self.max_batch <= 1:
            return await asyncio.to_thread(self.clf.probabilities, arrays)
        if self.worker is None or self.worker.done():
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self._work())
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((arrays, done))
        return await done

    async def _work(self) -> None:
        while True:
            items = [await self.queue.get()]
            count = len(items[0][0])
            while not self.queue.empty() and count < self.max_batch:
                items.append(self.queue.get_nowait())
                count += len(items[-1][0])
            try:
                probs = await asyncio.to_thread(self.clf.probabilities, np.concatenate([a for a, _ in items]))
            except Exception as e:  # reported to each waiting request, and the worker keeps serving
                for _, done in items:
                    if not done.done():
                        done.set_exception(e)
                continue
            start = 0
            for arrays, done in items:
                if not done.done():
                    done.set_result(probs[start:start + len(arrays)])
                start += len(arrays)


def model_identity(clf: LesionOnnxClassifier) -> dict:
    """What names the model a response came from: its file's hash, classes, input size and versions."""
    digest = file_hash(clf.path, "sha256").hexdigest()
    return {"file": clf.path.name, "sha256": digest, "classes": list(clf.classes),
            "display_names": list(clf.display_names), "input_size": clf.size, "tta": clf.tta,
            "clinical_fields": list(clf.clinical_fields), "exported_with": clf.metadata.get("version"),
            "served_by": f"lesion-pl {__version__}"}


def metadata_records(values: dict[str, list[str] | None], n: int, clf: LesionOnnxClassifier) -> list[dict] | None:
    """The age/sex/site form fields -> one dict per image (a field given once applies to every image), or None."""
    given = {k: v for k, v in values.items() if v}
    if not given:
        return None
    if not clf.clinical:
        raise BadUpload(422, f"the model {clf.path.name} was exported without a clinical-metadata model: send images "
                             f"only, without {', '.join(given)}")
    for k, v in given.items():
        if len(v) not in (1, n):
            raise BadUpload(422, f"{len(v)} values of {k} for {n} images: give it once (for every image) or once "
                                 "per image")
    return [{k: (v[0] if len(v) == 1 else v[i]) for k, v in given.items()} for i in range(n)]


def page(mode: str) -> str:
    """The page, told whether it talks to this service or runs the model itself."""
    html = (WEB / "index.html").read_text(encoding="utf-8")
    return html.replace('content="offline"', f'content="{mode}"', 1)


def _script(text: str):
    """A route answering with this JavaScript."""
    async def script():
        return Response(text, media_type="text/javascript")
    return script


def create_app(model: str | os.PathLike, token: str | None = None, limits: Limits = Limits(),
               max_batch: int = 1, threads: int | None = None):
    """The FastAPI app serving one exported model."""
    clf = LesionOnnxClassifier(model, threads=threads)
    identity = model_identity(clf)
    batcher = Batcher(clf, max_batch)
    app = FastAPIOffline(title="lesion-pl", version=__version__,
                         description=f"Skin-lesion classification with {identity['file']} "
                                     f"({', '.join(clf.classes)}). A research tool, not a diagnostic device.")
    bearer = HTTPBearer(auto_error=False, description=f"the server's token (--token or ${TOKEN_ENV}), where set")

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
            problems.append(f"{where}: {err.get('msg', 'invalid')}".replace("Field required", "required"))
        return JSONResponse({"detail": "; ".join(problems) + " (multipart form: images=@FILE, repeated for more "
                             "images; optional age, sex, site)"}, status_code=422)

    @app.exception_handler(BadUpload)
    async def bad_upload(request: Request, exc: BadUpload):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.middleware("http")
    async def request_size(request: Request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "send a Content-Length header"}, status_code=411)
            if int(length) > limits.max_request_bytes:
                return JSONResponse({"detail": f"request of {int(length) / 2**20:.1f} MB, over the limit of "
                                               f"{limits.max_request_bytes / 2**20:.1f} MB ({limits.max_images} "
                                               f"images of {limits.max_image_mb:g} MB)"}, status_code=413)
        return await call_next(request)

    index_html = page("service")  # read once, as the scripts below

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return index_html

    for name in ("page.js", "lesion.js"):  # the page's two scripts, by fixed names: no path from a client
        app.get(f"/{name}", include_in_schema=False)(_script((WEB / name).read_text(encoding="utf-8")))

    @app.get("/health", dependencies=[Depends(authorised)])
    async def health():
        return {"status": "ok", "model": identity["sha256"][:12]}

    @app.get("/model", dependencies=[Depends(authorised)])
    async def model_info():
        """The model's identity and its metadata_props as the ONNX file holds them (JSON in strings)."""
        return {"model": identity, "metadata_props": {PREFIX + k: v for k, v in clf.metadata.items()}}

    @app.post("/predict", dependencies=[Depends(authorised)])
    async def predict(request: Request,
                      images: list[UploadFile] = File(..., description="one or more image files"),
                      age: list[str] | None = Form(None, description="years; once for every image, or per image"),
                      sex: list[str] | None = Form(None, description="e.g. male, female"),
                      site: list[str] | None = Form(None, description="body site, e.g. back, face")):
        """Per image: the probability of each class, the class named, the malignancy probability and the
        referral at the run's threshold (the JSON of `cli.py predict --out x.json`)."""
        unknown = sorted(set((await request.form()).keys()) - set(FIELDS))
        if unknown:
            raise BadUpload(422, f"unknown form field(s) {', '.join(unknown)}: the fields are {', '.join(FIELDS)}")
        if len(images) > limits.max_images:
            raise BadUpload(413, f"{len(images)} images in one request, over the limit of {limits.max_images}")
        names = [upload_name(f.filename, i) for i, f in enumerate(images)]
        records = metadata_records({"age": age, "sex": sex, "site": site}, len(images), clf)
        datas = [await f.read() for f in images]

        def prepare():
            arrays, cautions = [], {}
            for data, name in zip(datas, names):
                img = decode_upload(data, name, limits)
                arrays.append(resize_center_crop(img, clf.size))
                caution = image_warning(img, clf.size)
                if caution:
                    cautions[name] = caution
            return np.stack(arrays), cautions

        arrays, cautions = await run_in_threadpool(prepare)
        preds = clf.score(await batcher.probabilities(arrays), records)
        return {"model": identity, "predictions": preds.rows(names, cautions), "failed": []}

    return app
