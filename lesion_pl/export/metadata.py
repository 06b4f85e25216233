"""The metadata keys a lesion-pl ONNX file carries, shared by the exporter and the runtime (no torch)."""
from __future__ import annotations

PREFIX = "lesion_pl."
REQUIRED = ("classes", "display_names", "malignant", "input_height", "input_width", "input_layout",
            "input_dtype", "resize_policy", "version")
