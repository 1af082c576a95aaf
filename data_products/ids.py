"""Slump identifiers.

A slump's ``rts_id`` is its centroid in EPSG:3413 snapped to :data:`SNAP_M` (10 m) and written
as signed decametres, ``RTS_<x>_<y>`` (e.g. ``RTS_-0224567_-0071234``): stable across reruns,
independent of processing order and of which worker found it, and readable as a position.
Cell ids are :mod:`data_products.grid`'s.
"""

from __future__ import annotations

import re

#: the centroid is snapped to this (m) before it names the slump
SNAP_M = 10.0
#: an id as :func:`rts_id` writes it
PATTERN = re.compile(r"RTS_([+-]\d{7,})_([+-]\d{7,})")


def rts_id(x: float, y: float) -> str:
    """The id of a slump whose centroid is (x, y), EPSG:3413 m."""
    return f"RTS_{int(round(x / SNAP_M)):+08d}_{int(round(y / SNAP_M)):+08d}"


def position(rid: str) -> tuple[float, float]:
    """The snapped centroid (x, y), EPSG:3413 m, an id names; ValueError if it is not one."""
    m = PATTERN.fullmatch(rid or "")
    if not m:
        raise ValueError(f"{rid!r} is not a slump id (RTS_<x>_<y>, signed decametres in EPSG:3413)")
    return int(m.group(1)) * SNAP_M, int(m.group(2)) * SNAP_M
