"""Code shared by the YADML work server and volunteer client (wire models, model registry)."""

__version__ = "0.1.0"
