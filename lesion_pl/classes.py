"""The label space: HAM10000 diagnosis codes, display names, and which are malignant.

Every reader maps its labels into these codes; the order here is the order of the model's outputs.
"""
from __future__ import annotations

CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

DISPLAY_NAMES: dict[str, str] = {
    "akiec": "Actinic keratosis / Bowen's disease",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}

MALIGNANT: tuple[str, ...] = ("akiec", "bcc", "mel")

NUM_CLASSES = len(CLASSES)
CLASS_TO_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}
MALIGNANT_INDICES: tuple[int, ...] = tuple(CLASS_TO_INDEX[c] for c in MALIGNANT)
