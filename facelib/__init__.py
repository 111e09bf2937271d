"""facelib: multi-angle face verification and retrieval (the Triarchy method), from scratch."""

from facelib.errors import FacelibError

__all__ = ["FacelibError"]
__version__ = "0.1.0"
