"""The synthetic ArcticDEM-like sample region (``rts synth``): the project's truth source."""

from .sample import SITES, generate_sample

__all__ = ["SITES", "generate_sample"]
