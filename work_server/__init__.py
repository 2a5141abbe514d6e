"""YADML work server: BOINC-style scheduling of deep-learning work units over volunteers."""

__version__ = "0.1.0"
