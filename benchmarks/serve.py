"""Load test of `cli.py serve`: a real server on 127.0.0.1, many concurrent clients, bad requests mixed in.

    python benchmarks/serve.py --model runs/NAME/export/model.onnx [--requests 500] [--concurrency 16]
                               [--bad 0.1] [--json out.json]

Starts `cli.py serve` (with a token) as its own process, once batching the images of concurrent requests
(--max-batch 32, or this script's --max-batch) and once without (--max-batch 1, the default: each request
through the session on its own, the plain way), and sends the same requests to each: single real HAM10000
images, and a share of bad ones (not an image, empty, truncated, a wrong field name, no token) that must
each get their 4xx. Checks that every good request got 200 with the same probabilities for the same image
in both servers, every bad one its 4xx, and that the server still answers /health; prints throughput and
p50/p95 latency of the good requests, and the ratio. Exits 1 on any error.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TOKEN = "load-test-token"
BAD = {  # kind -> (form field, file name, body: None the real image, "half" its first half, or bytes;
         #          send the token, the status it must get)
    "not_an_image": ("images", "notes.txt", b"not an image at all", True, 415),
    "empty": ("images", "empty.jpg", b"", True, 400),
    "truncated": ("images", "cut.jpg", "half", True, 400),
    "wrong_field": ("image", "a.jpg", None, True, 422),
    "no_token": ("images", "a.jpg", None, False, 401),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`cli.py serve` in its own process, until the block ends."""

    def __init__(self, model: Path, max_batch: int, *options: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, str(ROOT / "cli.py"), "serve", "--model", str(model), "--port", str(self.port),
                    "--max-batch", str(max_batch), *options]

    def __enter__(self):
        import httpx

        self.proc = subprocess.Popen(self.cmd, env={**os.environ, "LESION_PL_TOKEN": TOKEN}, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/health", headers=auth(), timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("the server did not answer /health within 60 s")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def plan(n: int, bad_share: float, n_images: int, seed: int = 0) -> list[tuple[str, int]]:
    """The requests, in order: ("good", image index) or (bad kind, image index), seeded."""
    rng = np.random.default_rng(seed)
    kinds = list(BAD)
    out = []
    for _i in range(n):
        kind = kinds[int(rng.integers(len(kinds)))] if rng.random() < bad_share else "good"
        out.append((kind, int(rng.integers(n_images))))
    return out


def send(client, url: str, kind: str, image: tuple[str, bytes]) -> tuple[int, float, dict | None]:
    field, name, body, token, _ = BAD.get(kind, ("images", image[0], None, True, 200))
    data = image[1] if body is None else image[1][: len(image[1]) // 2] if body == "half" else body
    start = time.perf_counter()
    r = client.post(url + "/predict", files=[(field, (name, data, "image/jpeg"))], headers=auth() if token else {})
    return r.status_code, time.perf_counter() - start, r.json()


def load(url: str, images: list[tuple[str, bytes]], requests: list[tuple[str, int]], concurrency: int) -> dict:
    """Send the requests from `concurrency` clients at once; what each got back, and the good ones' timing."""
    import httpx

    clients = [httpx.Client(timeout=120) for _ in range(concurrency)]
    try:
        def one(i):
            kind, idx = requests[i]
            return send(clients[i % concurrency], url, kind, images[idx])

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, range(len(requests))))
        wall = time.perf_counter() - start
    finally:
        for c in clients:
            c.close()
    errors, probs = [], {}
    for (kind, idx), (status, _, body) in zip(requests, results, strict=True):
        want = 200 if kind == "good" else BAD[kind][4]
        if status != want:
            errors.append(f"{kind} request for {images[idx][0]}: HTTP {status} (expected {want}): {body}")
        elif kind == "good":
            row = body["predictions"][0]
            p = np.array([v for k, v in row.items() if k.startswith("p_")])
            if idx in probs and np.abs(probs[idx] - p).max() > 1e-5:
                errors.append(f"{images[idx][0]}: probabilities differ between two requests of it")
            probs.setdefault(idx, p)
    times = np.array([t for (kind, _), (_, t, _) in zip(requests, results, strict=True) if kind == "good"])
    return {"requests": len(requests), "good": int(len(times)), "bad": len(requests) - int(len(times)),
            "wall_s": wall, "good_per_s": len(times) / wall, "p50_ms": float(np.percentile(times, 50) * 1e3),
            "p95_ms": float(np.percentile(times, 95) * 1e3), "errors": errors, "probabilities": probs}


def real_images(n: int) -> list[tuple[str, bytes]]:
    from lesion_pl.config import default_data_root

    root = default_data_root()
    files = sorted(root.rglob("ISIC_*.jpg"))[:n]
    if not files:
        raise SystemExit(f"no HAM10000 images under {root} (set $LESION_PL_DATA)")
    return [(f.name, f.read_bytes()) for f in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "runs" / "ham10000" / "export" / "model.onnx")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bad", type=float, default=0.1, help="share of bad requests mixed in")
    ap.add_argument("--images", type=int, default=64, help="distinct real images sent")
    ap.add_argument("--max-batch", type=int, default=32, help="the batched server's --max-batch")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    import httpx
    from machine import describe

    images = real_images(args.images)
    requests = plan(args.requests, args.bad, len(images))
    print(describe())
    print(f"model {args.model}; {args.requests} requests of one image each from {args.concurrency} concurrent "
          f"clients, {sum(k != 'good' for k, _ in requests)} of them bad; `cli.py serve` on 127.0.0.1")
    figures, errors = {}, []
    for label, batch in ((f"batched (--max-batch {args.max_batch})", args.max_batch), ("plain (--max-batch 1)", 1)):
        with Server(args.model, batch) as server:
            r = load(server.url, images, requests, args.concurrency)
            if httpx.get(server.url + "/health", headers=auth()).status_code != 200:
                r["errors"].append("the server stopped answering /health after the load")
        figures[label] = r
        errors += r["errors"]
        print(f"{label:<26} {r['good_per_s']:7.1f} good requests/s, p50 {r['p50_ms']:7.1f} ms, "
              f"p95 {r['p95_ms']:7.1f} ms, {len(r['errors'])} errors ({r['wall_s']:.1f} s)")
    (a, b) = figures.values()
    for idx in set(a["probabilities"]) & set(b["probabilities"]):
        if np.abs(a["probabilities"][idx] - b["probabilities"][idx]).max() > 1e-5:
            errors.append(f"{images[idx][0]}: batched and plain servers disagree")
    print(f"batching: x{a['good_per_s'] / b['good_per_s']:.2f} throughput, p95 x{a['p95_ms'] / b['p95_ms']:.2f}")
    for e in errors[:20]:
        print("ERROR", e)
    if args.json:
        out = {k: {kk: vv for kk, vv in v.items() if kk != "probabilities"} for k, v in figures.items()}
        args.json.write_text(json.dumps({"machine": describe(), "model": str(args.model), **out}, indent=1))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
