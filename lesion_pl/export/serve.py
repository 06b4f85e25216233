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

Hostile clients (benchmarks/hostile.py): before any of a request's body is read, `Gate` refuses a body framed
any other way than by Content-Length, one over the size limit, a missing or wrong token, a Host header that is
not the server's own (where it listens on loopback only: DNS rebinding), and, beyond `max_active` requests or
`max_inflight_mb` of bodies at once, answers 503 with Retry-After; it counts the body as it arrives. Each image's
decoding memory is read from its header and refused over `max_decode_mb`; all decodes together hold at most
`decode_budget_mb` (`DecodeBudget`), the rest wait.
"""
from __future__ import annotations

import asyncio
import hmac
import io
import json
import os
import threading
import warnings
from contextlib import contextmanager, nullcontext

import numpy as np
from fastapi import Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from PIL import Image
from starlette.concurrency import run_in_threadpool

from lesion_pl import __version__, clinical
from lesion_pl.data.download import file_hash
from lesion_pl.preprocess import ImageReadError, decoded_bytes, image_warning, open_image, resize_center_crop, to_rgb

from .limits import Limits
from .metadata import PREFIX
from .runtime import LesionOnnxClassifier, Outputs
from .web_export import WEB

TOKEN_ENV = "LESION_PL_TOKEN"
FIELDS = ("images", "age", "sex", "site")


PROTECTED = ("/predict", "/model", "/health")  # the paths a token guards
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_FIELD_CHARS = 64  # an age, sex or site value


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


def release_large_buffers() -> bool:
    """glibc only: allocations of 1 MB or more get pages of their own, given back to the system when freed.

    Pillow holds an image in 16 MB blocks, which glibc's default (a threshold that rises with what is freed) serves
    from per-thread arenas that keep their peak: with decodes in many threads, the service's memory grew to six
    times the decode budget though the budget held (benchmarks/RESULTS.md, "Hostile clients"). True where set."""
    import ctypes
    import ctypes.util

    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).mallopt(-3, 1 << 20))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError, TypeError):  # not glibc: its own allocator's behaviour stands
        return False


class DecodeBudget:
    """The memory all decodes together may hold: a decode takes its image's share (`decoded_bytes`) and waits
    until it fits, so a few decompression-heavy images run one after another while small ones pass beside them."""

    def __init__(self, total_bytes: int):
        self.total, self.used = total_bytes, 0
        self.cond = threading.Condition()

    @contextmanager
    def hold(self, n: int):
        with self.cond:
            self.cond.wait_for(lambda: self.used + n <= self.total)
            self.used += n
        try:
            yield
        finally:
            with self.cond:
                self.used -= n
                self.cond.notify_all()


def prepare_upload(data: bytes, name: str, limits: Limits, size: int,
                   budget: DecodeBudget | None = None) -> tuple[np.ndarray, str | None]:
    """An uploaded file's bytes -> the model's input [size, size, 3] and any warning about the image, or
    BadUpload naming what is wrong with it. Format, pixels and decoding memory are checked on the header, before
    anything is decoded; the decode holds its share of `budget` until the image is resized."""
    if not data:
        raise BadUpload(400, f"{name}: the file is empty (0 bytes)")
    if len(data) > limits.max_image_mb * 2**20:
        raise BadUpload(413, f"{name}: {len(data) / 2**20:.1f} MB, over the limit of {limits.max_image_mb:g} MB "
                             "an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit applies below
        try:
            img = open_image(io.BytesIO(data), name)
        except ImageReadError as e:
            raise BadUpload(415, str(e)) from None
        except Image.DecompressionBombError:  # Pillow's own limit, far above ours
            raise BadUpload(413, f"{name}: over the limit of {limits.max_megapixels:g} megapixels an image") from None
        except Exception as e:
            raise BadUpload(400, f"{name}: cannot read the image: {str(e)[:160] or type(e).__name__}") from None
        w, h = img.size
        if w * h > limits.max_megapixels * 1e6:
            raise BadUpload(413, f"{name}: {w}x{h} px ({w * h / 1e6:.0f} megapixels), over the limit of "
                                 f"{limits.max_megapixels:g} megapixels an image")
        cost = decoded_bytes(img)
        if cost > limits.max_decode_mb * 2**20:
            raise BadUpload(413, f"{name}: decoding this {w}x{h} {img.mode} image takes {cost / 2**20:.0f} MB, over "
                                 f"the limit of {limits.max_decode_mb:g} MB an image")
        with budget.hold(cost) if budget is not None else nullcontext():
            try:
                img.load()
                rgb = to_rgb(img)
            except Exception as e:  # truncated, corrupt
                raise BadUpload(400, f"{name}: cannot decode the image: {str(e)[:160] or type(e).__name__}") from None
            pixels = resize_center_crop(rgb, size)
            return pixels, image_warning(rgb, size, pixels)


def token_ok(authorization: str | None, token: str | None) -> bool:
    """An `Authorization` header's value carries the server's token (always, where it has none)."""
    if token is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class TooMuchBody(Exception):
    """A body longer than its Content-Length said."""


class Gate:
    """Pure ASGI, in front of everything: what can be refused from the headers is refused before the body is
    read, and the body is counted as it arrives. Refusals are one-line JSON, as everywhere else."""

    def __init__(self, app, limits: Limits, token: str | None, allowed_hosts: tuple[str, ...] | None):
        self.app, self.limits, self.token, self.allowed_hosts = app, limits, token, allowed_hosts
        self.active, self.inflight = 0, 0

    @staticmethod
    async def refuse(send, status: int, detail: str, headers: dict | None = None) -> None:
        body = json.dumps({"detail": detail}).encode()
        extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), *extra]})
        await send({"type": "http.response.body", "body": body})

    def _problem(self, scope, headers: dict) -> tuple[int, str, dict | None] | None:
        if self.allowed_hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1").lower()
            name = host[:host.rindex("]") + 1] if host.startswith("[") else host.rsplit(":", 1)[0]
            if name not in self.allowed_hosts:
                return 421, (f"Host '{host[:80]}' is not this server's ({', '.join(self.allowed_hosts)}): a page on "
                             "another site cannot call a service on this machine"), None
        if scope["path"] in PROTECTED and not token_ok(headers.get(b"authorization", b"").decode("latin-1"),
                                                       self.token):
            return 401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN'", {
                "WWW-Authenticate": "Bearer"}
        if scope["method"] != "POST":
            return None
        if b"transfer-encoding" in headers:
            return 400, "send the body with a Content-Length header and no Transfer-Encoding", None
        length = headers.get(b"content-length", b"").decode("latin-1")
        if not length.isdigit():
            return 411, "send a Content-Length header", None
        limits = self.limits
        if int(length) > limits.max_request_bytes:
            return 413, (f"request of {int(length) / 2**20:.1f} MB, over the limit of "
                         f"{limits.max_request_bytes / 2**20:.1f} MB ({limits.max_images} images of "
                         f"{limits.max_image_mb:g} MB)"), None
        if self.active >= limits.max_active or self.inflight + int(length) > limits.max_inflight_mb * 2**20:
            return 503, "the server is busy with other requests; try again shortly", {"Retry-After": "2"}
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers: dict[bytes, bytes] = {}
        for k, v in scope["headers"]:
            if k in headers:  # two Content-Lengths, two Hosts, two tokens: never guess which one counts
                return await self.refuse(send, 400, f"the header {k.decode('latin-1')} is given twice")
            headers[k] = v
        problem = self._problem(scope, headers)
        if problem is not None:
            return await self.refuse(send, *problem)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length, received, started = int(headers[b"content-length"]), 0, False

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > length:
                    raise TooMuchBody
            return message

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.active += 1
        self.inflight += length
        try:
            await self.app(scope, counted, sending)
        except TooMuchBody:
            if not started:
                await self.refuse(send, 413, f"the body is longer than its Content-Length ({length} bytes)")
        finally:
            self.active -= 1
            self.inflight -= length


class Batcher:
    """Runs the model for every request through one session: the images of requests waiting together go in
    one call of up to `max_batch` images (1: each request on its own, in the thread pool, the plain way)."""

    def __init__(self, clf: LesionOnnxClassifier, max_batch: int):
        self.clf, self.max_batch = clf, max_batch
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None

    async def outputs(self, arrays: np.ndarray) -> Outputs:
        if self.max_batch <= 1:
            return await asyncio.to_thread(self.clf.outputs, arrays)
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
                probs = await asyncio.to_thread(self.clf.outputs, np.concatenate([a for a, _ in items]))
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
            "ood": None if clf.ood is None else {"threshold": clf.ood.threshold, "rule": clf.ood.describe()},
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


def create_app(model: str | os.PathLike, token: str | None = None, limits: Limits | None = None,
               max_batch: int = 1, threads: int | None = None, allowed_hosts: tuple[str, ...] | None = None):
    """The FastAPI app serving one exported model. `allowed_hosts`: the Host header names it answers (the CLI
    passes LOOPBACK where it listens on loopback only); None: any."""
    if token is not None and not token.strip():
        raise ValueError("an empty token would refuse every call: give a token, or none")
    limits = limits or Limits()
    clf = LesionOnnxClassifier(model, threads=threads)
    identity = model_identity(clf)
    batcher = Batcher(clf, max_batch)
    budget = DecodeBudget(int(limits.decode_budget_mb * 2**20))
    release_large_buffers()  # so that the budget bounds the process's memory, not only what is in use
    app = FastAPIOffline(title="lesion-pl", version=__version__,
                         description=f"Skin-lesion classification with {identity['file']} "
                                     f"({', '.join(clf.classes)}). A research tool, not a diagnostic device.")
    bearer = HTTPBearer(auto_error=False, description=f"the server's token (--token or ${TOKEN_ENV}), where set")

    def authorised(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        # the Gate checked it before the body was read; this declares the scheme in the OpenAPI docs
        if not token_ok(request.headers.get("authorization"), token):
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

    app.add_middleware(Gate, limits=limits, token=token, allowed_hosts=allowed_hosts)

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
        fields = {"age": age, "sex": sex, "site": site}
        for field, values in fields.items():
            long = [v for v in values or () if len(v) > MAX_FIELD_CHARS]
            if long:
                raise BadUpload(422, f"{field}: a value of {len(long[0])} characters, over the limit of "
                                     f"{MAX_FIELD_CHARS}")
        records = metadata_records(fields, len(images), clf)
        arrays, cautions = [], {}
        # one file in memory at a time (the form spooled them to disk)
        for upload, name in zip(images, names, strict=True):
            data = await upload.read()
            array, caution = await run_in_threadpool(prepare_upload, data, name, limits, clf.size, budget)
            del data
            arrays.append(array)
            if caution:
                cautions[name] = caution
        preds = clf.score(await batcher.outputs(np.stack(arrays)), records)
        notes = [] if records is None else clinical.unrecognised_notes(clf.clinical_records(records), clf.clinical)
        return {"model": identity, "predictions": preds.rows(names, cautions), "failed": [], "notes": notes}

    return app
