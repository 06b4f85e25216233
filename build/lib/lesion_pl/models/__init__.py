"""Networks: LesionCNN and a factory that also builds any timm model by name."""
from .factory import build_network

__all__ = ["build_network"]
