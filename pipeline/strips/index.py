"""PGC's ArcticDEM strip index as a strip source, and the selection of strips users make.

The Polar Geospatial Center distributes one index of every strip of a release
(``ArcticDEM_Strip_Index_s2s041.parquet``, also as a shapefile, GeoPackage or file
geodatabase). One row per strip: ``dem_id`` (the strip's name stem), ``pairname``,
``acqdate1``/``acqdate2`` (acquisition times of the two images), ``sensor1``/``sensor2``,
``is_xtrack`` (a cross-track pair), ``is_lsf`` (light smoothing filter),
``valid_area_matchtag_density``, ``valid_area_percent``, ``cloud_area_percent``,
``water_area_percent`` (these three hold fractions 0-1 despite their names:
``valid_area_sqkm / (valid_area_sqkm + cloud_area_sqkm) == valid_area_percent``), ``rmse``
(the strip's registration RMSE to ICESat altimetry, m; -1 or -9999 = unknown),
``fileurl`` (the strip's ``.tar.gz`` on data.pgc.umn.edu), ``s3url`` (its STAC item in
PGC's open-data bucket, behind a STAC Browser link) and the footprint (EPSG:4326).

:func:`read_strip_index` turns the rows into :class:`pipeline.strips.names.Strip` objects whose
assets are resolved from the STAC item's location (PGC's bucket keeps the
``<dem_id>_dem.tif``, ``_bitmask.tif`` and ``_matchtag.tif`` cloud-optimised GeoTIFFs next to
``<dem_id>.json``) or, for a row without ``s3url``, inside ``fileurl``'s archive
(``/vsitar/``: GDAL streams the archive, slow, but it works). The footprints themselves
(EPSG:3413), not their bounding boxes, go to planning: a diagonal strip meets far fewer
cells than its box.

:func:`select_strips` applies :class:`pipeline.config.SelectionConfig` (dates, months,
sensors, in-track only, cloud, valid area, matchtag density, RMSE) to the index's columns;
the date, month, sensor and in-track criteria also apply to strips from a folder or STAC
catalog (from their names), the others only where an index gives them.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.config import SelectionConfig
from pipeline.strips.names import Strip, StripNameError, parse_strip_name
from pipeline.strips.read import check_bounds
from pipeline.strips.sources import NoStripsError, discover_strips
from pipeline.strips.meta import StripMetadataError, apply_metadata, metadata_file, read_strip_metadata

log = logging.getLogger(__name__)

#: file suffixes read as a strip index (``.gdb`` is a folder)
INDEX_SUFFIXES = (".parquet", ".geoparquet", ".shp", ".gpkg", ".gdb", ".fgb", ".geojson")
#: the index columns a strip needs; the others are optional (their filters then pass)
REQUIRED_COLUMNS = ("dem_id",)
#: index values of ``rmse`` that mean "not measured"
RMSE_UNKNOWN = (-1.0, -9999.0)
#: the STAC Browser prefix PGC's ``s3url`` carries in front of the item's own address
_STAC_BROWSER = re.compile(r"^https?://[^#]*/stac-browser/#/external/", re.IGNORECASE)


class StripIndexError(ValueError):
    """A strip index that cannot be read or lacks what a strip needs."""


def is_strip_index(source: str | os.PathLike) -> bool:
    """True when ``source`` names a strip index file (by suffix), not a folder or catalog."""
    s = os.fspath(source).lower().rstrip("/")
    return s.endswith(INDEX_SUFFIXES)


def item_url(s3url: str) -> str:
    """The STAC item's own URL from PGC's ``s3url`` (a STAC Browser link ``…/stac-browser/#/external/
    <host>/<path>.json`` becomes ``https://<host>/<path>.json``); other URLs are returned unchanged."""
    s3url = s3url.strip()
    m = _STAC_BROWSER.match(s3url)
    if not m:
        return s3url
    rest = s3url[m.end():]
    return rest if re.match(r"^[a-z]+://", rest) else "https://" + rest


def asset_hrefs(dem_id: str, s3url: str | None, fileurl: str | None,
                asset_root: str | None = None) -> tuple[str, str, str]:
    """(DEM, bitmask, matchtag) hrefs of one strip: beside its STAC item (``s3url``), else inside
    the ``fileurl`` archive. ``asset_root`` replaces the item's host and bucket (scheme + host)
    for a mirror (another bucket, a local HTTP server, a folder): the item path is kept."""
    kinds = ("dem", "bitmask", "matchtag")
    if s3url:
        url = item_url(s3url)
        folder = url.rsplit("/", 1)[0]
        if asset_root:
            path = re.sub(r"^[a-z]+://[^/]+/", "", folder)
            folder = asset_root.rstrip("/") + "/" + path
        return tuple(f"{folder}/{dem_id}_{k}.tif" for k in kinds)  # type: ignore[return-value]
    if fileurl:
        base = fileurl if not re.match(r"^https?://", fileurl) else "/vsicurl/" + fileurl
        return tuple(f"/vsitar/{base}/{dem_id}_{k}.tif" for k in kinds)  # type: ignore[return-value]
    raise StripIndexError(f"strip {dem_id}: neither s3url nor fileurl in the index")


def read_index_table(path: str | os.PathLike) -> gpd.GeoDataFrame:
    """The index as a GeoDataFrame with its footprints in EPSG:3413 (column ``geometry``),
    ``rmse`` unknowns as NaN, and the dates as timestamps. Errors name the file."""
    path = Path(path)
    if not path.exists():
        raise StripIndexError(f"{path}: strip index not found")
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            g = gpd.read_parquet(path)
        else:
            g = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow/pyogrio raise many types; all mean "unreadable"
        raise StripIndexError(f"{path}: not a readable strip index ({type(exc).__name__}: {exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in g.columns]
    if missing:
        raise StripIndexError(f"{path}: no column {', '.join(missing)} (PGC's strip index has dem_id, pairname, "
                              f"acqdate1, sensor1, fileurl, s3url …; found {', '.join(map(str, g.columns[:12]))})")
    if g.crs is None:
        raise StripIndexError(f"{path}: the footprints have no CRS (PGC's index is in EPSG:4326)")
    g = g.to_crs(3413)
    if g.geometry.name != "geometry":
        g = g.rename_geometry("geometry")
    if "rmse" in g.columns:
        g["rmse"] = g["rmse"].astype(float).where(~g["rmse"].isin(RMSE_UNKNOWN))
    for c in ("acqdate1", "acqdate2"):
        if c in g.columns:
            g[c] = pd.to_datetime(g[c], errors="coerce")
    return g


def select_rows(index: pd.DataFrame, sel: SelectionConfig) -> pd.Series:
    """Boolean mask of the index rows ``sel`` keeps (a criterion whose column is absent passes)."""
    keep = pd.Series(True, index=index.index)
    date = index["acqdate1"] if "acqdate1" in index.columns else pd.to_datetime(
        index["dem_id"].map(lambda n: _name_date(n)), errors="coerce")
    if sel.start_date:
        keep &= date >= pd.Timestamp(sel.start_date)
    if sel.end_date:
        keep &= date < pd.Timestamp(sel.end_date) + pd.Timedelta(days=1)
    if sel.months:
        keep &= date.dt.month.isin(sel.months)
    if sel.sensors:
        sensors = index["sensor1"] if "sensor1" in index.columns else index["dem_id"].map(_name_sensor)
        keep &= sensors.isin(sel.sensors)
    if sel.in_track_only and "is_xtrack" in index.columns:
        keep &= ~index["is_xtrack"].astype(bool)
    if sel.max_cloud_fraction < 1.0 and "cloud_area_percent" in index.columns:
        keep &= index["cloud_area_percent"].astype(float) <= sel.max_cloud_fraction
    if sel.min_valid_fraction > 0.0 and "valid_area_percent" in index.columns:
        keep &= index["valid_area_percent"].astype(float) >= sel.min_valid_fraction
    if sel.min_matchtag_density > 0.0 and "valid_area_matchtag_density" in index.columns:
        keep &= index["valid_area_matchtag_density"].astype(float) >= sel.min_matchtag_density
    if sel.max_rmse_m > 0 and "rmse" in index.columns:  # unknown RMSE (NaN) passes
        keep &= ~(index["rmse"].astype(float) > sel.max_rmse_m)
    return keep.fillna(False).astype(bool)


def _name_date(name: str) -> _dt.date | None:
    try:
        return parse_strip_name(name).date
    except StripNameError:
        return None


def _name_sensor(name: str) -> str | None:
    try:
        return parse_strip_name(name).sensor
    except StripNameError:
        return None


def read_strip_index(path: str | os.PathLike, sel: SelectionConfig | None = None, *,
                     asset_root: str | None = None, warn=None) -> list[Strip]:
    """The strips of a PGC strip index that ``sel`` keeps, with their EPSG:3413 footprints.
    Rows whose ``dem_id`` is not a strip name, or whose footprint is empty or not a strip's,
    are skipped with a warning naming them; an index with no row left is
    :class:`pipeline.strips.sources.NoStripsError`."""
    warn = warn or log.warning
    sel = sel or SelectionConfig()
    g = read_index_table(path)
    n_all = len(g)
    g = g[select_rows(g, sel)]
    out = []
    for row in g.itertuples(index=False):
        dem_id = str(row.dem_id)
        try:
            meta = parse_strip_name(dem_id)
        except StripNameError as exc:
            warn(f"{path}: row {dem_id!r} skipped: {exc}")
            continue
        geom = row.geometry
        if geom is None or geom.is_empty:
            warn(f"{path}: strip {dem_id} has no footprint; skipped")
            continue
        try:
            bounds = check_bounds(tuple(float(v) for v in geom.bounds), f"{path}: strip {dem_id} (index footprint)")
            dem, bitmask, matchtag = asset_hrefs(dem_id, _str(getattr(row, "s3url", None)),
                                                 _str(getattr(row, "fileurl", None)), asset_root)
        except (StripIndexError, ValueError) as exc:
            warn(f"{path}: {exc}; skipped")
            continue
        out.append(Strip(dem, bitmask, matchtag, meta, bounds, footprint=geom))
    if not out:
        raise NoStripsError(f"{path}: no strip of the index's {n_all} passes the selection ({describe(sel)})")
    return sorted(out, key=lambda s: (s.meta.date, s.meta.name))


def _str(v) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


def select_strips(strips: list[Strip], sel: SelectionConfig) -> list[Strip]:
    """The strips (from any source) that ``sel``'s name-based criteria keep: dates, months,
    sensors, and in-track only (cross-track names carry a two-sensor code such as ``W1W2``)."""
    def ok(s: Strip) -> bool:
        d = s.meta.date
        if sel.start_date and d < _dt.date.fromisoformat(sel.start_date):
            return False
        if sel.end_date and d > _dt.date.fromisoformat(sel.end_date):
            return False
        if sel.months and d.month not in sel.months:
            return False
        if sel.sensors and s.meta.sensor not in sel.sensors:
            return False
        return not (sel.in_track_only and (s.meta.version == "cross-track" or not s.meta.sensor.startswith(
            ("WV", "GE", "QB"))))
    return [s for s in strips if ok(s)]


def describe(sel: SelectionConfig) -> str:
    """The criteria of ``sel`` that select anything, in words (for messages and plans)."""
    parts = []
    if sel.start_date or sel.end_date:
        parts.append(f"dates {sel.start_date or '…'} to {sel.end_date or '…'}")
    if sel.months:
        parts.append("months " + ",".join(map(str, sel.months)))
    if sel.sensors:
        parts.append("sensors " + ",".join(sel.sensors))
    if sel.in_track_only:
        parts.append("in-track only")
    if sel.max_cloud_fraction < 1.0:
        parts.append(f"cloud <= {sel.max_cloud_fraction:g}")
    if sel.min_valid_fraction > 0:
        parts.append(f"valid area >= {sel.min_valid_fraction:g}")
    if sel.min_matchtag_density > 0:
        parts.append(f"matchtag density >= {sel.min_matchtag_density:g}")
    if sel.max_rmse_m > 0:
        parts.append(f"rmse <= {sel.max_rmse_m:g} m")
    return "; ".join(parts) or "no criteria"


def load_strips(source: str | os.PathLike, sel: SelectionConfig | None = None, *,
                asset_root: str | None = None, warn=None) -> list[Strip]:
    """The strips of any source a run accepts, selected by ``sel``: a strip index file
    (:func:`read_strip_index`), else a folder, STAC catalog or STAC API
    (:func:`pipeline.strips.sources.discover_strips`) with the name-based criteria applied."""
    sel = sel or SelectionConfig()
    if is_strip_index(source):
        return read_strip_index(source, sel, asset_root=asset_root, warn=warn)
    strips = with_metadata(discover_strips(os.fspath(source), warn=warn), warn=warn)
    kept = select_strips(strips, sel)
    if not kept:
        raise NoStripsError(f"{os.fspath(source)}: none of its {len(strips)} strips passes the selection "
                            f"({describe(sel)})")
    return kept


def with_metadata(strips: list[Strip], warn=None) -> list[Strip]:
    """The strips with the acquisition date, time and sensor of their ``_mdf.txt`` /
    ``_meta.txt`` where one lies beside a local DEM (:mod:`pipeline.strips.meta`); the name
    stays the fallback. Each disagreement between name and metadata is reported once, and
    a metadata file that cannot be parsed is reported and ignored."""
    import dataclasses

    warn = warn or log.warning
    out = []
    for s in strips:
        p = metadata_file(s.dem)
        if p is not None:
            try:
                meta, conflicts = apply_metadata(s.meta, read_strip_metadata(p))
            except StripMetadataError as exc:
                warn(f"{exc}; the strip's name gives its date and sensor")
            else:
                for c in conflicts:
                    warn(c)
                s = dataclasses.replace(s, meta=meta)
        out.append(s)
    return sorted(out, key=lambda s: (s.meta.date, s.meta.name))
