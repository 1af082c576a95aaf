"""Batch pipeline: ArcticDEM strips -> coregistration -> change -> terrain -> products."""

__version__ = "0.1.0"
