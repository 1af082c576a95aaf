"""Masked windowed reads of one work cell from a strip (local files or COGs by URL), and strip headers.

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

Reading
-------
:func:`read_cell` reads the 2 km work cell of :mod:`data_products.grid` (optionally with a
halo) from one strip. Strips in EPSG:3413 on the 2 m grid aligned with the work grid
(the usual case) are read by integer pixel window and pasted into a NaN-filled array;
anything else (another CRS, resolution or grid offset) is reprojected on the fly into
the cell grid (bilinear for elevations, nearest for the masks).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numba
import numpy as np
import rasterio
import rasterio.errors
from rasterio.crs import CRS as _RioCRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from data_products import grid

from pipeline.strips.names import Strip

try:  # the GDAL error classes rasterio raises (not exported publicly)
    from rasterio._err import CPLE_BaseError as _CPLE_BaseError
except ImportError:  # pragma: no cover
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

_CRS_3413 = _RioCRS.from_epsg(3413)


def is_url(s: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s))


def local_path(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())


class StripReadError(RuntimeError):
    """A strip (or a sibling) that cannot be read: corrupt, truncated, no CRS, wrong shape."""


# --------------------------------------------------------------------------- headers


def describe_error(exc: BaseException) -> str:
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


def open_raster(path: str, what: str = "strip"):
    try:
        if str(path).startswith(_REMOTE_PREFIXES):  # no directory listing per remote file
            with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN=os.environ.get("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")):
                return rasterio.open(path)
        return rasterio.open(path)
    except _RASTER_ERRORS as exc:
        raise StripReadError(f"{path}: cannot open {what} ({describe_error(exc)})") from exc


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
    with open_raster(strip.dem) as src:
        if src.crs is None:
            raise StripReadError(f"{strip.dem}: DEM has no CRS")
        b = tuple(src.bounds)
        if src.crs == _CRS_3413:
            return check_bounds(b, f"{strip.dem} (header)")
        from rasterio.warp import transform_bounds

        try:
            b = tuple(transform_bounds(src.crs, _CRS_3413, *b, densify_pts=21))
        except _RASTER_ERRORS as exc:
            raise StripReadError(f"{strip.dem}: cannot transform bounds to EPSG:3413 ({describe_error(exc)})") from exc
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
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> StripWindow | None:
    """The strip's elevations on the cell's grid (plus halo), masked; None if nothing valid.

    With ``out`` = (z, matched), float32 and bool arrays of the window's shape, the window is
    written into them (a slot of a stack) instead of new arrays.

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
    if out is None:
        z, mt = np.empty((h, w), dtype=np.float32), np.empty((h, w), dtype=bool)
    else:
        z, mt = out
        if (z.shape != (h, w) or mt.shape != (h, w) or z.dtype != np.float32 or mt.dtype != bool
                or not (z.flags.c_contiguous and mt.flags.c_contiguous)):
            raise ValueError(f"read_cell: out arrays must be C-contiguous float32 and bool of shape {(h, w)}")
    z.fill(np.nan)
    mt.fill(True)
    bm = np.zeros((h, w), dtype=np.uint8)
    current = path
    try:
        with open_raster(path) as src:
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
                nodata_value = np.float32(nodata)
                if strip.bitmask:
                    current = strip.bitmask
                    with open_raster(strip.bitmask, "bitmask") as sib:
                        _check_sibling(sib, src, strip.bitmask, "bitmask")
                        bm[dst] = sib.read(1, window=rw)
                if strip.matchtag:
                    current = strip.matchtag
                    with open_raster(strip.matchtag, "matchtag") as sib:
                        _check_sibling(sib, src, strip.matchtag, "matchtag")
                        mt[dst] = sib.read(1, window=rw) != 0
            else:
                if not _overlaps(src, (xmin, ymin, xmax, ymax)):
                    return None
                nodata_value = np.float32(np.nan)  # the warped read marks nodata NaN itself
                vrt_kw = dict(crs=_CRS_3413, transform=win_t, width=w, height=h)
                with WarpedVRT(
                    src,
                    resampling=Resampling.bilinear,
                    src_nodata=nodata,
                    nodata=np.nan,
                    dtype="float32",
                    **vrt_kw,
                ) as vrt:
                    z[...] = vrt.read(1)
                for kind, sib_path in (("bitmask", strip.bitmask), ("matchtag", strip.matchtag)):
                    if not sib_path:
                        continue
                    current = sib_path
                    with open_raster(sib_path, kind) as sib:
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
                        np.not_equal(arr, 0, out=mt)
    except StripReadError:
        raise
    except _RASTER_ERRORS as exc:
        raise StripReadError(f"{current}: read failed ({describe_error(exc)})") from exc

    valid = np.empty((h, w), bool)
    if not _mask_window(z, bm, nodata_value, np.uint8(drop_bits), valid):
        return None
    return StripWindow(strip=strip, z=z, matched=mt, valid=valid, transform=win_t)


@numba.njit(cache=True, nogil=True)
def _mask_window(z, bm, nodata, drop_bits, valid):
    """One pass over a window: NaN where z is nodata, NaN, infinite or below NODATA_FLOOR_M, or
    where the bitmask has any of ``drop_bits``; ``valid`` marks the rest. Returns their count."""
    zf, bf, vf = z.ravel(), bm.ravel(), valid.ravel()
    n = 0
    for k in range(zf.size):
        v = zf[k]
        ok = v > NODATA_FLOOR_M and v < np.inf and v != nodata and (bf[k] & drop_bits) == 0
        if not ok:
            zf[k] = np.nan
        vf[k] = ok
        n += ok
    return n


def _overlaps(src, bounds: tuple[float, float, float, float]) -> bool:
    from rasterio.warp import transform_bounds

    try:
        sb = transform_bounds(src.crs, _CRS_3413, *src.bounds, densify_pts=21)
    except _RASTER_ERRORS as exc:
        raise StripReadError(f"{src.name}: cannot transform bounds to EPSG:3413 ({describe_error(exc)})") from exc
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


def read_cell_array(
    strips: Iterable[Strip],
    cell: grid.Cell,
    *,
    halo_m: float = 0.0,
    drop_bits: int = 0b111,
    resolution_m: float = 2.0,
    accept: Callable[[StripWindow], str] | None = None,
    warn: WarnFn | None = None,
) -> tuple[list[StripWindow], np.ndarray, np.ndarray]:
    """The strips' windows read straight into one stack, in order of (date, name):
    (windows, z (n, H, W) float32, matched (n, H, W) bool), each window's arrays a slot of the
    stack. ``accept(window)`` returns "" to keep a window, else the reason it is not used
    (warned, its slot reused by the next strip: ``accept`` must not keep the window).
    Unreadable strips are skipped with a warning, as in :func:`read_cell_stack`; no window is
    copied. Warnings come in date order."""
    warn = warn or log.warning
    strips = sorted(strips, key=lambda s: (s.meta.date, s.meta.name))
    shape = (len(strips),) + cell.shape(resolution_m, halo_m)
    z, matched = np.empty(shape, np.float32), np.empty(shape, bool)  # pages touched only as filled
    kept: list[StripWindow] = []
    for s in strips:
        n = len(kept)
        try:
            sw = read_cell(s, cell, halo_m=halo_m, drop_bits=drop_bits, resolution_m=resolution_m,
                           out=(z[n], matched[n]))
        except StripReadError as exc:
            warn(f"skipping strip {s.meta.name} in cell {cell.id}: {exc}")
            continue
        if sw is None:
            continue
        why = accept(sw) if accept is not None else ""
        if why:
            warn(f"{s.meta.name}: {why}")
            continue
        kept.append(sw)
    return kept, z[: len(kept)], matched[: len(kept)]


