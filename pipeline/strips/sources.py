"""ArcticDEM strip sources: discovery, name parsing and masked windowed reads of one cell.

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

Masks
-----
* ``<stem>_bitmask.tif`` (uint8): 0 = good; bit 0 (1) = strip edge, bit 1 (2) = water,
  bit 2 (4) = cloud. Pixels with ``bitmask & drop_bits != 0`` are dropped (NaN).
* ``<stem>_matchtag.tif`` (uint8): 1 = elevation from stereo matching, 0 = interpolated.
  It is reported, not applied: interpolated pixels stay in ``z`` and are flagged in
  :attr:`StripWindow.matched` so that later stages can weight them down.
* DEM nodata is the file's nodata (ArcticDEM: -9999); any value <= -9000 is also nodata.

A missing sibling is tolerated (with one warning): without a bitmask nothing is dropped,
without a matchtag every pixel counts as matched.

Sources
-------
:func:`discover_strips` accepts a local folder (searched recursively for ``*_dem.tif``),
a static STAC catalog (a ``catalog.json``/``collection.json`` file, or a folder holding
one at its top level — e.g. the sample region's catalog written by
:func:`write_stac_catalog`), or the URL of a STAC API such as PGC's. STAC items carry
the DEM in asset ``dem``, the bitmask in asset ``mask`` (PGC's key; ``bitmask`` is
accepted too) and the matchtag in asset ``matchtag``.

Reading
-------
:func:`read_cell` reads the 2 km work cell of :mod:`data_products.grid` (optionally with a
halo) from one strip. Strips in EPSG:3413 on the 2 m grid aligned with the work grid
(the usual case) are read by integer pixel window and pasted into a NaN-filled array;
anything else (another CRS, resolution or grid offset) is reprojected on the fly into
the cell grid (bilinear for elevations, nearest for the masks).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import rasterio
import rasterio.errors
from pyproj import Transformer
from rasterio.crs import CRS as _RioCRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from data_products import grid

try:  # the GDAL error classes rasterio raises (not exported publicly)
    from rasterio._err import CPLE_BaseError as _CPLE_BaseError
except Exception:  # pragma: no cover
    _CPLE_BaseError = rasterio.errors.RasterioError

log = logging.getLogger(__name__)

#: GDAL settings for strips read over HTTP(S) or S3 (``/vsicurl/``, ``/vsis3/``), applied
#: unless the environment sets them: a server that hangs or drops connections costs that
#: strip (an error naming the URL) after bounded retries, instead of hanging the cell; no
#: directory listing per file; a block cache so headers are fetched once.
GDAL_REMOTE_DEFAULTS = {
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "2",
    "VSI_CACHE": "TRUE",
}
for _k, _v in GDAL_REMOTE_DEFAULTS.items():
    os.environ.setdefault(_k, _v)
_REMOTE_PREFIXES = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "http://", "https://", "s3://")

WarnFn = Callable[[str], None]

#: errors raised by GDAL/rasterio on unreadable, corrupt or truncated files
_RASTER_ERRORS = (rasterio.errors.RasterioError, _CPLE_BaseError, OSError, ValueError, MemoryError)

#: DEM values at or below this are nodata whatever the file says
NODATA_FLOOR_M = -9000.0
DEFAULT_NODATA = -9999.0

STAC_COLLECTION_ID = "arcticdem-strips"
STAC_DEM_KEYS = ("dem",)
STAC_BITMASK_KEYS = ("mask", "bitmask")
STAC_MATCHTAG_KEYS = ("matchtag",)
STAC_CATALOG_FILES = ("catalog.json", "collection.json")

_CRS_3413 = _RioCRS.from_epsg(3413)


class StripNameError(ValueError):
    """A file name that is not an ArcticDEM strip name."""


class StripReadError(RuntimeError):
    """A strip (or a sibling) that cannot be read: corrupt, truncated, no CRS, wrong shape."""


class NoStripsError(FileNotFoundError):
    """A folder or catalog holding no ArcticDEM strip."""


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
    for version, rx in (("v4.1", _V4_RE), ("v3", _V3_RE), ("cross-track", _XTRACK_RE)):
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


# --------------------------------------------------------------------------- discovery


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


def _is_url(s: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s))


def _local(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())


def discover_strips(
    source: str | os.PathLike,
    *,
    warn: WarnFn | None = None,
    collections: Sequence[str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    datetime: str | None = None,
    max_items: int | None = None,
) -> list[Strip]:
    """Every strip in a folder (recursive), a static STAC catalog, or a STAC API.

    ``collections``, ``bbox`` (lon/lat), ``datetime`` and ``max_items`` are passed to a
    STAC API search and ignored for local sources. Unparsable names and missing
    siblings are warned about (once each) through ``warn`` (default: this module's
    logger). The result is sorted by (date, name) and has one entry per DEM.
    """
    warn = warn or log.warning
    src = os.fspath(source)
    if _is_url(src) and not src.endswith(".json"):
        strips = _discover_stac_api(src, collections, bbox, datetime, max_items, warn)
        where = src
    else:
        p = Path(src)
        if _is_url(src):
            strips = _discover_stac_file(src, warn)
        elif p.is_file():
            if p.suffix.lower() != ".json":
                raise NoStripsError(f"{p}: neither a folder of strips nor a STAC catalog JSON")
            strips = _discover_stac_file(str(p), warn)
        elif p.is_dir():
            top = next((p / f for f in STAC_CATALOG_FILES if (p / f).is_file()), None)
            strips = _discover_stac_file(str(top), warn) if top else _discover_folder(p, warn)
        else:
            raise NoStripsError(f"{p}: no such folder or catalog")
        where = str(p)
    unique: dict[str, Strip] = {}
    for s in strips:
        unique.setdefault(s.dem, s)
    if not unique:
        raise NoStripsError(f"{where}: no ArcticDEM strips (*_dem.tif) found")
    return sorted(unique.values(), key=lambda s: (s.meta.date, s.meta.name))


def _discover_folder(folder: Path, warn: WarnFn) -> list[Strip]:
    out = []
    for dem in sorted(folder.rglob("*_dem.tif")):
        if not dem.is_file():
            continue
        try:
            meta = parse_strip_name(dem)
        except StripNameError as exc:
            warn(f"skipping {dem}: {exc}")
            continue
        stem = dem.name[: -len("_dem.tif")]
        siblings = {}
        for kind in ("bitmask", "matchtag"):
            sib = dem.with_name(f"{stem}_{kind}.tif")
            if sib.is_file():
                siblings[kind] = _local(sib)
            else:
                siblings[kind] = None
                warn(f"{dem} has no _{kind}.tif; reading without it")
        out.append(Strip(_local(dem), siblings["bitmask"], siblings["matchtag"], meta))
    return out


def _asset_href(item, keys: Iterable[str]) -> str | None:
    for k in keys:
        asset = item.assets.get(k)
        if asset is not None:
            href = asset.get_absolute_href() or asset.href
            return href if _is_url(href) else os.path.normpath(href)
    return None


def _item_bounds_3413(item) -> tuple[float, float, float, float] | None:
    props = item.properties
    code = props.get("proj:code")
    epsg = props.get("proj:epsg")
    pb = props.get("proj:bbox")
    if pb is not None and (code == "EPSG:3413" or epsg == 3413):
        if len(pb) == 6:  # 3-D bbox
            pb = [pb[0], pb[1], pb[3], pb[4]]
        return tuple(float(v) for v in pb)  # type: ignore[return-value]
    if item.bbox:
        b = item.bbox
        if len(b) == 6:
            b = [b[0], b[1], b[3], b[4]]
        t = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)
        return tuple(float(v) for v in t.transform_bounds(*b, densify_pts=21))  # type: ignore[return-value]
    return None


def _strip_from_item(item, warn: WarnFn) -> Strip | None:
    dem = _asset_href(item, STAC_DEM_KEYS)
    if dem is None:
        warn(f"STAC item {item.id}: no 'dem' asset; skipped")
        return None
    try:
        meta = parse_strip_name(dem)
    except StripNameError:
        try:
            meta = parse_strip_name(item.id)
        except StripNameError as exc:
            warn(f"skipping STAC item {item.id}: {exc}")
            return None
    bitmask = _asset_href(item, STAC_BITMASK_KEYS)
    matchtag = _asset_href(item, STAC_MATCHTAG_KEYS)
    if bitmask is None:
        warn(f"{dem} has no _bitmask.tif (no 'mask' asset); reading without it")
    if matchtag is None:
        warn(f"{dem} has no _matchtag.tif (no 'matchtag' asset); reading without it")
    try:
        bounds = _item_bounds_3413(item)
    except Exception:  # bounds are an optimisation; the header gives them too
        bounds = None
    return Strip(dem, bitmask, matchtag, meta, bounds)


def _discover_stac_file(path: str, warn: WarnFn) -> list[Strip]:
    import pystac

    try:
        obj = pystac.read_file(path)
    except Exception as exc:
        raise StripReadError(f"{path}: not a readable STAC catalog ({_describe(exc)})") from exc
    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.Catalog):
        items = _catalog_items(obj, warn)
    else:
        raise StripReadError(f"{path}: a STAC {type(obj).__name__}, not a catalog or collection")
    out = []
    for item in items:
        s = _safe_strip_from_item(item, warn)
        if s is not None:
            out.append(s)
    return out


def _catalog_items(catalog, warn: WarnFn, depth: int = 0):
    """The items of a static catalog and its children, one link at a time: an item or
    child that is missing or malformed is skipped with a warning naming its file, never
    aborting the others (``Catalog.get_items`` stops at the first bad one)."""
    root = catalog.get_root()
    for link in catalog.get_links("item"):
        try:
            yield link.resolve_stac_object(root=root).target
        except Exception as exc:  # JSON, schema or I/O errors vary
            warn(f"skipping STAC item {link.get_absolute_href() or link.href}: {_describe(exc)}")
    if depth > 20:
        return
    for link in catalog.get_links("child"):
        try:
            child = link.resolve_stac_object(root=root).target
        except Exception as exc:
            warn(f"skipping STAC catalog {link.get_absolute_href() or link.href}: {_describe(exc)}")
            continue
        yield from _catalog_items(child, warn, depth + 1)


def _safe_strip_from_item(item, warn: WarnFn) -> Strip | None:
    try:
        return _strip_from_item(item, warn)
    except Exception as exc:  # a malformed item costs that item only
        warn(f"skipping STAC item {getattr(item, 'id', '?')}: {_describe(exc)}")
        return None


STAC_API_TIMEOUT_S = (10.0, 60.0)


def _discover_stac_api(url, collections, bbox, datetime, max_items, warn: WarnFn) -> list[Strip]:
    from pystac_client import Client

    try:  # a hung API must not hang the run: every request has a timeout (connect, read; s)
        client = Client.open(url, timeout=STAC_API_TIMEOUT_S)
    except Exception as exc:
        raise StripReadError(f"{url}: STAC API not reachable ({_describe(exc)})") from exc
    search = client.search(
        collections=list(collections) if collections else None,
        bbox=list(bbox) if bbox else None,
        datetime=datetime,
        max_items=max_items,
    )
    out = []
    try:
        for item in search.items():
            s = _safe_strip_from_item(item, warn)
            if s is not None:
                out.append(s)
    except Exception as exc:  # timeouts and HTTP errors while paging
        raise StripReadError(f"{url}: STAC API search failed after {len(out)} items ({_describe(exc)})") from exc
    return out


# --------------------------------------------------------------------------- headers


def _describe(exc: BaseException) -> str:
    """The exception's message with the GDAL messages chained under it (deduplicated)."""
    parts: list[str] = []
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        msg = str(e).strip()
        if msg and msg not in parts:
            parts.append(msg)
        e = e.__cause__ or e.__context__
    return "; ".join(parts) or type(exc).__name__


def _open(path: str, what: str = "strip"):
    try:
        if str(path).startswith(_REMOTE_PREFIXES):  # no directory listing per remote file
            with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN=os.environ.get("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")):
                return rasterio.open(path)
        return rasterio.open(path)
    except _RASTER_ERRORS as exc:
        raise StripReadError(f"{path}: cannot open {what} ({_describe(exc)})") from exc


#: the largest footprint side a strip may have (m): ArcticDEM strips are ~17 km wide and at
#: most a few hundred km long; anything larger is a broken header or STAC item
MAX_STRIP_EXTENT_M = 500_000.0
#: |x|, |y| of EPSG:3413 coordinates north of ~40 deg N (m)
MAX_POLAR_COORD_M = 6_000_000.0


class StripFootprintError(StripReadError):
    """A strip's footprint (header or STAC item) is not finite, not ordered, or not a strip's size."""


def check_bounds(b, where: str) -> tuple[float, float, float, float]:
    """``b`` (xmin, ymin, xmax, ymax, EPSG:3413 m) if it can be a strip's footprint, else
    :class:`StripFootprintError` naming ``where`` and the problem."""
    try:
        x0, y0, x1, y1 = (float(v) for v in b)
    except (TypeError, ValueError):
        raise StripFootprintError(f"{where}: footprint {b!r} is not four numbers") from None
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise StripFootprintError(f"{where}: footprint {b} is not finite")
    if not (x0 < x1 and y0 < y1):
        raise StripFootprintError(f"{where}: footprint {b} is empty or inverted (need xmin < xmax, ymin < ymax)")
    if max(x1 - x0, y1 - y0) > MAX_STRIP_EXTENT_M:
        raise StripFootprintError(f"{where}: footprint {x1 - x0:.0f} x {y1 - y0:.0f} m is larger than any strip "
                                  f"({MAX_STRIP_EXTENT_M:.0f} m); broken header or STAC item")
    if max(abs(x0), abs(x1), abs(y0), abs(y1)) > MAX_POLAR_COORD_M:
        raise StripFootprintError(f"{where}: footprint {b} lies outside the Arctic in EPSG:3413")
    return x0, y0, x1, y1


def strip_bounds(strip: Strip) -> tuple[float, float, float, float]:
    """The strip's EPSG:3413 bounding box (from its metadata, else from the DEM header),
    checked with :func:`check_bounds`."""
    if strip.bounds is not None:
        return check_bounds(strip.bounds, f"{strip.dem} (STAC item or index footprint)")
    with _open(strip.dem) as src:
        if src.crs is None:
            raise StripReadError(f"{strip.dem}: DEM has no CRS")
        b = tuple(src.bounds)
        if src.crs == _CRS_3413:
            return check_bounds(b, f"{strip.dem} (header)")
        from rasterio.warp import transform_bounds

        try:
            b = tuple(transform_bounds(src.crs, _CRS_3413, *b, densify_pts=21))
        except _RASTER_ERRORS as exc:
            raise StripReadError(f"{strip.dem}: cannot transform bounds to EPSG:3413 ({_describe(exc)})") from exc
        return check_bounds(b, f"{strip.dem} (header)")


def strip_cell_coverage(strip: Strip, bounds: tuple[float, float, float, float] | None = None
                        ) -> tuple[list[grid.Cell], np.ndarray]:
    """The work cells a strip meets and the fraction of each it covers: by its footprint
    polygon where the source gave one (PGC's index), else by its bounding box (``bounds``,
    default :func:`strip_bounds`)."""
    import shapely

    b = bounds or strip_bounds(strip)
    cells = grid.cells_in_bounds(b)
    if not cells:
        return [], np.zeros(0)
    cb = np.array([c.bounds for c in cells], dtype=float)
    area = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
    if strip.footprint is not None:
        boxes = shapely.box(cb[:, 0], cb[:, 1], cb[:, 2], cb[:, 3])
        frac = shapely.area(shapely.intersection(boxes, strip.footprint)) / area
    else:
        w = np.clip(np.minimum(cb[:, 2], b[2]) - np.maximum(cb[:, 0], b[0]), 0, None)
        h = np.clip(np.minimum(cb[:, 3], b[3]) - np.maximum(cb[:, 1], b[1]), 0, None)
        frac = w * h / area
    keep = frac > 0
    return [c for c, k in zip(cells, keep) if k], frac[keep]


def cells_for_strips(strips: Iterable[Strip], *, warn: WarnFn | None = None,
                     min_coverage: float = 0.0) -> list[grid.Cell]:
    """Sorted unique work cells some strip covers more than ``min_coverage`` of (its
    footprint where known, else its bounding box; 0 = every cell it meets).

    Strips whose header cannot be read are skipped with a warning.
    """
    warn = warn or log.warning
    cells: set[grid.Cell] = set()
    for s in strips:
        try:
            cs, frac = strip_cell_coverage(s)
        except StripReadError as exc:
            warn(f"skipping {s.dem}: {exc}")
            continue
        cells.update(c for c, f in zip(cs, frac) if f >= min_coverage)
    return sorted(cells)


def strip_meets(strip: Strip, cell: grid.Cell) -> bool:
    """True when the strip's footprint (else its bounding box; unknown: True) meets the cell."""
    if strip.bounds is None:
        return True
    xmin, ymin, xmax, ymax = cell.bounds
    b = strip.bounds
    if not (b[0] < xmax and b[2] > xmin and b[1] < ymax and b[3] > ymin):
        return False
    if strip.footprint is None:
        return True
    import shapely

    return bool(shapely.intersects(strip.footprint, shapely.box(xmin, ymin, xmax, ymax)))


# --------------------------------------------------------------------------- reading


@dataclass
class StripWindow:
    strip: Strip
    z: np.ndarray  # float32 (H, W), NaN where nodata or dropped by the bitmask
    matched: np.ndarray  # bool (H, W): matchtag 1 (True where the matchtag is missing)
    valid: np.ndarray  # bool (H, W): ~isnan(z)
    transform: Affine  # of the window (the cell grid)


def _aligned_offsets(src, win_t: Affine, res: float) -> tuple[int, int] | None:
    """(row_off, col_off) of the window in the raster if both share one grid, else None."""
    t = src.transform
    if src.crs != _CRS_3413:
        return None
    if abs(t.b) > 1e-9 or abs(t.d) > 1e-9:
        return None
    if not (math.isclose(t.a, res, rel_tol=1e-9) and math.isclose(-t.e, res, rel_tol=1e-9)):
        return None
    fc = (win_t.c - t.c) / res
    fr = (t.f - win_t.f) / res
    if abs(fc - round(fc)) > 1e-6 or abs(fr - round(fr)) > 1e-6:
        return None
    return int(round(fr)), int(round(fc))


def _check_sibling(sib, dem_src, path: str, kind: str) -> None:
    if (sib.height, sib.width) != (dem_src.height, dem_src.width):
        raise StripReadError(
            f"{path}: {kind} shape {sib.height}x{sib.width} differs from the DEM's "
            f"{dem_src.height}x{dem_src.width} ({dem_src.name})"
        )


def read_cell(
    strip: Strip,
    cell: grid.Cell,
    *,
    halo_m: float = 0.0,
    drop_bits: int = 0b111,
    resolution_m: float = 2.0,
) -> StripWindow | None:
    """The strip's elevations on the cell's grid (plus halo), masked; None if nothing valid.

    Raises StripReadError (naming the file) when the DEM or a sibling cannot be read,
    has no CRS, or a sibling's shape differs from the DEM's.
    """
    win_t = cell.transform(resolution_m, halo_m)
    h, w = cell.shape(resolution_m, halo_m)
    xmin, ymax = win_t.c, win_t.f
    xmax, ymin = xmin + w * resolution_m, ymax - h * resolution_m

    # cheap rejection from known bounds
    if strip.bounds is not None:
        bx0, by0, bx1, by1 = strip.bounds
        if bx1 <= xmin or bx0 >= xmax or by1 <= ymin or by0 >= ymax:
            return None

    path = strip.dem
    z = np.full((h, w), np.nan, dtype=np.float32)
    bm = np.zeros((h, w), dtype=np.uint8)
    mt = np.ones((h, w), dtype=bool)
    current = path
    try:
        with _open(path) as src:
            if src.crs is None:
                raise StripReadError(f"{path}: DEM has no CRS (expected EPSG:3413)")
            nodata = src.nodata if src.nodata is not None else DEFAULT_NODATA
            offs = _aligned_offsets(src, win_t, resolution_m)
            if offs is not None:
                row_off, col_off = offs
                r0, r1 = max(0, row_off), min(src.height, row_off + h)
                c0, c1 = max(0, col_off), min(src.width, col_off + w)
                if r0 >= r1 or c0 >= c1:
                    return None
                rw = Window(c0, r0, c1 - c0, r1 - r0)
                dst = (slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off))
                z[dst] = src.read(1, window=rw, out_dtype=np.float32)
                z[z == np.float32(nodata)] = np.nan
                if strip.bitmask:
                    current = strip.bitmask
                    with _open(strip.bitmask, "bitmask") as sib:
                        _check_sibling(sib, src, strip.bitmask, "bitmask")
                        bm[dst] = sib.read(1, window=rw)
                if strip.matchtag:
                    current = strip.matchtag
                    with _open(strip.matchtag, "matchtag") as sib:
                        _check_sibling(sib, src, strip.matchtag, "matchtag")
                        mt[dst] = sib.read(1, window=rw) != 0
            else:
                if not _overlaps(src, (xmin, ymin, xmax, ymax)):
                    return None
                vrt_kw = dict(crs=_CRS_3413, transform=win_t, width=w, height=h)
                with WarpedVRT(
                    src,
                    resampling=Resampling.bilinear,
                    src_nodata=nodata,
                    nodata=np.nan,
                    dtype="float32",
                    **vrt_kw,
                ) as vrt:
                    z = vrt.read(1).astype(np.float32, copy=False)
                for kind, sib_path in (("bitmask", strip.bitmask), ("matchtag", strip.matchtag)):
                    if not sib_path:
                        continue
                    current = sib_path
                    with _open(sib_path, kind) as sib:
                        _check_sibling(sib, src, sib_path, kind)
                        # outside the sibling: bitmask 0 (nothing to drop), matchtag 0
                        with WarpedVRT(
                            sib,
                            src_crs=src.crs,
                            src_transform=src.transform,
                            resampling=Resampling.nearest,
                            **vrt_kw,
                        ) as vrt:
                            arr = vrt.read(1)
                    if kind == "bitmask":
                        bm = arr.astype(np.uint8, copy=False)
                    else:
                        mt = arr != 0
    except StripReadError:
        raise
    except _RASTER_ERRORS as exc:
        raise StripReadError(f"{current}: read failed ({_describe(exc)})") from exc

    z[~np.isfinite(z) | (z <= NODATA_FLOOR_M)] = np.nan
    if drop_bits:
        z[(bm & np.uint8(drop_bits)) != 0] = np.nan
    valid = ~np.isnan(z)
    if not valid.any():
        return None
    return StripWindow(strip=strip, z=z, matched=mt, valid=valid, transform=win_t)


def _overlaps(src, bounds: tuple[float, float, float, float]) -> bool:
    from rasterio.warp import transform_bounds

    try:
        sb = transform_bounds(src.crs, _CRS_3413, *src.bounds, densify_pts=21)
    except _RASTER_ERRORS as exc:
        raise StripReadError(f"{src.name}: cannot transform bounds to EPSG:3413 ({_describe(exc)})") from exc
    xmin, ymin, xmax, ymax = bounds
    return not (sb[2] <= xmin or sb[0] >= xmax or sb[3] <= ymin or sb[1] >= ymax)


def read_cell_stack(
    strips: Iterable[Strip],
    cell: grid.Cell,
    *,
    halo_m: float = 0.0,
    drop_bits: int = 0b111,
    resolution_m: float = 2.0,
    warn: WarnFn | None = None,
) -> list[StripWindow]:
    """:func:`read_cell` for every strip; unreadable strips are skipped with a warning."""
    warn = warn or log.warning
    out = []
    for s in strips:
        try:
            sw = read_cell(s, cell, halo_m=halo_m, drop_bits=drop_bits, resolution_m=resolution_m)
        except StripReadError as exc:
            warn(f"skipping strip {s.meta.name} in cell {cell.id}: {exc}")
            continue
        if sw is not None:
            out.append(sw)
    return out


# --------------------------------------------------------------------------- STAC writing

_PLATFORMS = {"WV01": "worldview-1", "WV02": "worldview-2", "WV03": "worldview-3", "GE01": "geoeye-1"}


def _footprint_lonlat(crs, bounds, n: int = 11) -> list[tuple[float, float]]:
    """A densified closed ring of the bounds, in lon/lat."""
    x0, y0, x1, y1 = bounds
    xs = np.linspace(x0, x1, n)
    ys = np.linspace(y0, y1, n)
    ring = (
        [(x, y0) for x in xs]
        + [(x1, y) for y in ys[1:]]
        + [(x, y1) for x in xs[::-1][1:]]
        + [(x0, y) for y in ys[::-1][1:]]
    )
    t = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    lon, lat = t.transform([p[0] for p in ring], [p[1] for p in ring])
    return [(float(a), float(b)) for a, b in zip(lon, lat)]


def write_stac_catalog(
    strips: list[Strip],
    out_dir: str | os.PathLike,
    *,
    catalog_id: str,
    description: str,
) -> Path:
    """A self-contained static STAC catalog of ``strips`` at ``out_dir/catalog.json``.

    One collection ``arcticdem-strips``, one item per strip (id = strip name, datetime =
    acquisition date at noon UTC, footprint from the DEM header, projection fields),
    assets ``dem``, ``mask`` (bitmask) and ``matchtag`` with hrefs relative to the item.
    """
    import pystac
    from pystac.extensions.projection import ProjectionExtension

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for s in strips:
        with _open(s.dem) as src:
            if src.crs is None:
                raise StripReadError(f"{s.dem}: DEM has no CRS")
            crs, b, t = src.crs, tuple(src.bounds), src.transform
            shape = [src.height, src.width]
        ring = _footprint_lonlat(crs, b)
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
        bbox = [min(lons), min(lats), max(lons), max(lats)]
        geometry = {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}
        m = s.meta
        props = {
            "gsd": m.resolution_m,
            "pgc:sensor": m.sensor,
            "pgc:version": m.version,
            "pgc:catalog_id1": m.catid1,
            "pgc:catalog_id2": m.catid2,
            "pgc:segment": m.segment,
        }
        if m.sensor in _PLATFORMS:
            props["platform"] = _PLATFORMS[m.sensor]
        props["instruments"] = [m.sensor]
        item = pystac.Item(
            id=m.name,
            geometry=geometry,
            bbox=bbox,
            datetime=_dt.datetime.combine(m.date, _dt.time(12), tzinfo=_dt.timezone.utc),
            properties=props,
        )
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        epsg = crs.to_epsg()
        if epsg:
            proj.code = f"EPSG:{epsg}"
        else:
            proj.wkt2 = crs.to_wkt()
        proj.bbox = list(b)
        proj.shape = shape
        proj.transform = list(t)[:6]
        media = pystac.MediaType.GEOTIFF
        for key, href, title in (
            ("dem", s.dem, "DEM (m)"),
            ("mask", s.bitmask, "bitmask (0 good; bit 0 edge, bit 1 water, bit 2 cloud)"),
            ("matchtag", s.matchtag, "matchtag (1 matched, 0 interpolated)"),
        ):
            if href:
                item.add_asset(
                    key,
                    pystac.Asset(
                        href=href if _is_url(href) else _local(href),
                        media_type=media,
                        title=title,
                        roles=["data"] if key == "dem" else ["metadata"],
                    ),
                )
        items.append(item)

    if items:
        lon0 = min(i.bbox[0] for i in items)
        lat0 = min(i.bbox[1] for i in items)
        lon1 = max(i.bbox[2] for i in items)
        lat1 = max(i.bbox[3] for i in items)
        spatial = [lon0, lat0, lon1, lat1]
        times = [i.datetime for i in items]
        temporal = [[min(times), max(times)]]
    else:
        spatial = [-180.0, 50.0, 180.0, 90.0]
        temporal = [[None, None]]
    collection = pystac.Collection(
        id=STAC_COLLECTION_ID,
        description="ArcticDEM 2 m strip DEMs with bitmask and matchtag",
        extent=pystac.Extent(pystac.SpatialExtent([spatial]), pystac.TemporalExtent(temporal)),
        license="CC-BY-4.0",
        title="ArcticDEM strips",
    )
    for item in items:
        collection.add_item(item)
    catalog = pystac.Catalog(id=catalog_id, description=description)
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(out_dir.resolve()))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return out_dir / "catalog.json"
