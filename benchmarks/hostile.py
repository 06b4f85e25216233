"""Hostile clients against a real `cli.py serve` on 127.0.0.1 (issue #39): every case once, then a flood of the
worst accepted image while a good client keeps asking, with the server's peak memory.

    python benchmarks/hostile.py --model runs/NAME/export/model.onnx [--clients 16] [--side 7990] [--good 40]
                                 [--json out.json]

Starts `cli.py serve` with a token as its own process. Each case is sent once and must get its status: not an
image, EPS (Pillow would run Ghostscript on it), empty, truncated, a decompression bomb over Pillow's own limit, a
transparent PNG under the pixel limit whose decoding exceeds --max-decode-mb, a body framed by both Content-Length
and Transfer-Encoding, a 200 MB upload without the token (headers only: the answer must come before the body), an
infinite age, an age of 900,000 digits, an unknown field, a foreign Host header (DNS rebinding). Then --clients
clients each send the worst image the server accepts (a --side x --side 16-bit PNG of ~140 KB that decodes to ~9
bytes a pixel) at once, while one good client sends --good real images one after another; prints each case's
status, the peak RSS of the server (VmHWM) before and during the flood, and the good requests' p50/p95 latency
during it. Bounded in count and time; exits 1 where a case gets another status or a good request fails.
"""
from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
from machine import describe
from PIL import Image
from serve import ROOT, Server, auth, real_images

sys.path.insert(0, str(ROOT))
from lesion_pl.export.limits import Limits  # noqa: E402

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
       b"newpath 0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n")


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (Linux: VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raw(url: str, head: str, body: bytes = b"") -> int:
    """A request written by hand (headers, then `body`), and its status; the answer is read before the body is sent
    where the server answers from the headers alone."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        s.settimeout(2)
        try:
            answer = s.recv(65536)
        except TimeoutError:  # still reading: send the body
            s.settimeout(30)
            s.sendall(body)
            answer = s.recv(65536)
    return int(answer.split(b" ", 2)[1])


def cases(url: str, jpeg: bytes, max_decode_mb: float) -> list[tuple[str, int, int]]:
    """(case, status wanted, status got) for each hostile request."""
    import httpx

    def post(files, data=None, headers=None):
        return httpx.post(url + "/predict", files=files, data=data or {}, headers=auth() if headers is None else
                          headers, timeout=120).status_code

    # under the pixel limit, but transparent: 15 bytes a pixel to decode and convert, a tenth over --max-decode-mb
    over = int((1.1 * max_decode_mb * 2**20 / 15) ** 0.5)
    heavy = png(Image.new("RGBA", (over, over), (10, 20, 30, 128)))
    chunked = b"".join(b"%x\r\n%s\r\n" % (2**20, b"x" * 2**20) for _ in range(20)) + b"0\r\n\r\n"
    out = [
        ("not an image", 415, post([("images", ("notes.txt", b"hello", "text/plain"))])),
        ("EPS (PostScript)", 415, post([("images", ("x.eps", EPS, "application/postscript"))])),
        ("empty file", 400, post([("images", ("e.jpg", b"", "image/jpeg"))])),
        ("truncated JPEG", 400, post([("images", ("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"))])),
        ("196-megapixel bomb", 413, post([("images", ("bomb.png", png(Image.new("1", (14000, 14000))), "image/png"))])),
        ("RGBA whose decoding is over the limit", 413, post([("images", ("b.png", heavy, "image/png"))])),
        ("Content-Length + chunked 20 MB", 400, raw(
            url, "POST /predict HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 100\nTransfer-Encoding: chunked\n"
                 f"Authorization: {auth()['Authorization']}\nContent-Type: multipart/form-data; boundary=x\n",
            chunked)),
        ("200 MB upload, no token", 401, raw(
            url, f"POST /predict HTTP/1.1\nHost: 127.0.0.1\nContent-Length: {200 * 2**20}\n"
                 "Content-Type: multipart/form-data; boundary=x\n", b"x" * 2**20)),
        ("age inf", 200, post([("images", ("a.jpg", jpeg, "image/jpeg"))], {"age": "inf"})),
        ("age of 900,000 digits", 422, post([("images", ("a.jpg", jpeg, "image/jpeg"))], {"age": "9" * 900_000})),
        ("unknown field", 422, post([("images", ("a.jpg", jpeg, "image/jpeg"))], {"agee": "50"})),
        ("foreign Host (DNS rebinding)", 421, httpx.get(url + "/health", headers={**auth(), "Host": "evil.example"},
                                                        timeout=30).status_code),
    ]
    return out


def flood(url: str, pid: int, clients: int, side: int, good: list[tuple[str, bytes]]) -> dict:
    """`clients` senders of the worst accepted image at once, and one good client meanwhile."""
    import httpx

    worst = png(Image.new("I;16", (side, side), 1000))
    statuses, latencies, errors = [], [], []

    def bomb():
        r = httpx.post(url + "/predict", files=[("images", ("worst.png", worst, "image/png"))], headers=auth(),
                       timeout=600)
        statuses.append(r.status_code)

    before = peak_rss_mb(pid)
    threads = [threading.Thread(target=bomb) for _ in range(clients)]
    start = time.time()
    for t in threads:
        t.start()
    for name, data in good:
        t0 = time.perf_counter()
        r = httpx.post(url + "/predict", files=[("images", (name, data, "image/jpeg"))], headers=auth(), timeout=120)
        latencies.append(time.perf_counter() - t0)
        if r.status_code != 200:
            errors.append(f"{name}: {r.status_code} {r.text[:200]}")
    for t in threads:
        t.join()
    return {"worst_png_bytes": len(worst), "side": side, "clients": clients, "bomb_statuses": sorted(set(statuses)),
            "bombs_answered": len(statuses), "flood_s": round(time.time() - start, 1),
            "peak_rss_mb_before": round(before, 1), "peak_rss_mb": round(peak_rss_mb(pid), 1),
            "good": len(latencies), "good_p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 1),
            "good_p95_ms": round(float(np.percentile(latencies, 95)) * 1e3, 1), "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--side", type=int, default=7990, help="the worst image's side: 16-bit, side x side pixels")
    ap.add_argument("--good", type=int, default=40, help="good requests sent during the flood")
    ap.add_argument("--max-decode-mb", type=float, default=None, help="the server's (default: its own)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    print(describe())
    max_decode = Limits().max_decode_mb if args.max_decode_mb is None else args.max_decode_mb
    options = ["--max-decode-mb", str(max_decode)]
    images = real_images(args.good)
    with Server(args.model, 1, *options) as server:
        print(f"server: cli.py serve --model {args.model} {' '.join(options)} (pid {server.proc.pid}), token set")
        got = cases(server.url, images[0][1], max_decode)
        for name, want, status in got:
            print(f"  {name:<34} {status}  {'ok' if status == want else f'WANTED {want}'}")
        f = flood(server.url, server.proc.pid, args.clients, args.side, images)
    print(f"flood: {f['clients']} clients x a {f['side']}x{f['side']} 16-bit PNG of {f['worst_png_bytes'] / 1e3:.0f} "
          f"KB at once (statuses {f['bomb_statuses']}, all answered in {f['flood_s']} s); meanwhile {f['good']} good "
          f"requests: p50 {f['good_p50_ms']:.0f} ms, p95 {f['good_p95_ms']:.0f} ms")
    print(f"server peak RSS: {f['peak_rss_mb_before']:.0f} MB before the flood, {f['peak_rss_mb']:.0f} MB with it")
    if args.json:
        args.json.write_text(json.dumps({"cases": got, "flood": f}, indent=2))
    wrong = [c for c in got if c[1] != c[2]]
    if wrong or f["errors"] or f["bomb_statuses"] != [200]:
        print(f"FAILED: {wrong or ''} {f['errors'] or ''} {f['bomb_statuses']}")
        sys.exit(1)


if __name__ == "__main__":
    main()
