"""ArcticDEM strip names, and a strip: its DEM, its mask siblings and its parsed name.

Strip names
-----------
An ArcticDEM strip is a DEM GeoTIFF plus sibling rasters sharing its name stem. Three
naming schemes are in circulation and all are parsed by :func:`parse_strip_name`:

* release 4.1 (``s2s041``; other ``s2sNNN`` versions are read the same way)::

      SETSM_s2s041_WV01_20170714_10200100612345A0_1020010061234500_2m_lsf_seg1_dem.tif
      SETSM_s2s041_WV01_20170714_10200100612345A0_1020010061234500_2m_seg1_dem.tif

* release 3 (the segment, when present, comes before the resolution)::

      SETSM_WV02_20150628_1030010044B6A600_1030010044CC4F00_seg1_2m_v3.0_dem.tif

* release 3 cross-track pairs, named by the two sensors of the pair
  (``W1W2``, ``W2W3``, ``W3W3``, ``G1W1`` ...)::

      W1W2_20160715_1020010052F1E400_10300100575B5A00_seg2_2m_v3.0_dem.tif

The parts are: sensor (``WV01``, ``WV02``, ``WV03``, ``GE01`` or a cross-track pair
code), acquisition date ``YYYYMMDD``, the two Maxar catalog ids of the stereo pair,
the strip segment ``seg<k>`` and the resolution ``2m``. ``lsf`` marks the
light-smoothing filter of release 4.1.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass, field


class StripNameError(ValueError):
    """A file name that is not an ArcticDEM strip name."""


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class StripName:
    name: str  # file stem without the trailing "_dem"
    version: str  # "v4.1", "v3" or "cross-track"
    sensor: str  # "WV01", "WV02", "WV03", "GE01", "W1W2" ...
    date: _dt.date
    catid1: str
    catid2: str
    segment: int | None
    resolution_m: float
    #: acquisition time (UTC) from the strip's metadata file, when one was read (pipeline.strips.meta)
    acquired: _dt.datetime | None = None


_CAT = r"[0-9A-Za-z]+"
_RES = r"(?P<res>\d+(?:\.\d+)?)m"
_V4_RE = re.compile(
    rf"^SETSM_s2s(?P<s2s>\d{{3}})_(?P<sensor>[A-Z0-9]{{4}})_(?P<date>\d{{8}})_(?P<cat1>{_CAT})_(?P<cat2>{_CAT})"
    rf"_{_RES}(?:_lsf)?(?:_seg(?P<seg>\d+))?$"
)
_V3_RE = re.compile(
    rf"^SETSM_(?P<sensor>[A-Z0-9]{{4}})_(?P<date>\d{{8}})_(?P<cat1>{_CAT})_(?P<cat2>{_CAT})"
    rf"(?:_seg(?P<seg>\d+))?_{_RES}(?:_lsf)?(?:_seg(?P<seg2>\d+))?(?:_v(?P<ver>\d+(?:\.\d+)*))?$"
)
_XTRACK_RE = re.compile(
    rf"^(?P<sensor>[A-Z][0-9][A-Z][0-9])_(?P<date>\d{{8}})_(?P<cat1>{_CAT})_(?P<cat2>{_CAT})"
    rf"(?:_seg(?P<seg>\d+))?_{_RES}(?:_lsf)?(?:_seg(?P<seg2>\d+))?(?:_v(?P<ver>\d+(?:\.\d+)*))?$"
)
_SUFFIXES = ("_dem", "_bitmask", "_matchtag")


def _stem(path_or_name: str | os.PathLike) -> str:
    base = os.path.basename(str(os.fspath(path_or_name)).rstrip("/"))
    base = base.split("?", 1)[0]  # URL query strings
    for ext in (".tif", ".tiff", ".TIF", ".TIFF"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def parse_strip_name(path_or_name: str | os.PathLike) -> StripName:
    """The parts of an ArcticDEM strip name (v4.1, v3 or cross-track); StripNameError if none."""
    stem = _stem(path_or_name)
    for version, rx in (("v4.1", _V4_RE), ("v3", _V3_RE), ("cross-track", _XTRACK_RE)):  # noqa: B007 - used below
        m = rx.match(stem)
        if m:
            break
    else:
        raise StripNameError(
            f"{os.fspath(path_or_name)}: not an ArcticDEM strip name (expected e.g. "
            "SETSM_s2s041_WV01_20170714_<catid1>_<catid2>_2m_lsf_seg1_dem.tif, "
            "SETSM_WV01_20170714_<catid1>_<catid2>_seg1_2m_v3.0_dem.tif or "
            "W1W2_20170714_<catid1>_<catid2>_seg1_2m_v3.0_dem.tif)"
        )
    g = m.groupdict()
    if version == "v4.1":
        digits = g["s2s"]
        version = f"v{int(digits[:-1])}.{digits[-1]}"  # s2s041 -> v4.1
    try:
        date = _dt.datetime.strptime(g["date"], "%Y%m%d").date()
    except ValueError:
        raise StripNameError(f"{os.fspath(path_or_name)}: invalid acquisition date {g['date']!r}") from None
    seg = g.get("seg") or g.get("seg2")
    return StripName(
        name=stem,
        version=version,
        sensor=g["sensor"],
        date=date,
        catid1=g["cat1"],
        catid2=g["cat2"],
        segment=int(seg) if seg else None,
        resolution_m=float(g["res"]),
    )


@dataclass(frozen=True)
class Strip:
    dem: str  # path or href of the DEM
    bitmask: str | None  # sibling _bitmask.tif (None when missing)
    matchtag: str | None  # sibling _matchtag.tif (None when missing)
    meta: StripName
    bounds: tuple[float, float, float, float] | None = None  # EPSG:3413 bbox if known
    #: the strip's data footprint (shapely geometry, EPSG:3413) when the source gives one
    #: (PGC's strip index): planning uses it instead of the bounding box
    footprint: object | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def date(self) -> _dt.date:
        return self.meta.date
