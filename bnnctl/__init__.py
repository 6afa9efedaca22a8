"""bnnctl: binarized neural networks from training to a BNN-PYNQ board and back."""

__version__ = "0.1.0"
