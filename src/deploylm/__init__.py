"""deploylm: from a pretrained transformer to a fast, small, served, measured API.

Importing the package is free: heavy libraries (torch, transformers, onnxruntime) are
imported inside the functions that need them.
"""

__version__ = "0.1.0"
