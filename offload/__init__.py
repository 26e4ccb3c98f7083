"""offload: run PyTorch training on your own GPU box from a laptop."""
__version__ = "0.1.0"
