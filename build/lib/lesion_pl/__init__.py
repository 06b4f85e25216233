"""lesion-pl: train, evaluate and export CNN classifiers for dermoscopic skin-lesion images.

Importing the package is cheap: torch, Lightning and matplotlib load only in the modules that use them.
"""
__version__ = "0.1.0"
