"""What the service accepts: one request, one image, and all requests at once. A module of its own, without the
service's imports, so that `cli.py serve --help` shows these defaults without loading FastAPI or onnxruntime."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request, one image and all requests together may take; the defaults are the CLI's (`serve`)."""
    max_image_mb: float = 20.0      # one uploaded file
    max_images: int = 16            # files in one request
    max_megapixels: float = 64.0    # decoded size of one image (a decompression bomb is refused before decoding)
    max_decode_mb: float = 768.0    # memory decoding one image and converting it to RGB takes (from its header)
    decode_budget_mb: float = 1024.0  # memory all decodes at once may hold; the others wait
    max_active: int = 32            # requests being received or answered at once; beyond: 503
    max_inflight_mb: float = 1024.0  # their bodies together; beyond: 503

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_images * self.max_image_mb * 2**20) + 2**16  # + the form's own fields
