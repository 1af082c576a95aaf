"""Published retrogressive thaw slump (RTS) inventories: reading, shape statistics, cross-referencing.

The project validates its detections against earlier, independently made inventories and uses
real slump footprints to check that synthetic slumps look like real ones. The inventories are
*not* part of the repository: they live in a shared data folder (see :func:`shared_data_dir`),
taken unchanged from the raw-data folder of the ARTS compilation (github.com/whrc/ARTS). Each
keeps the terms of its publication -- cite it when you use it:

* **huang2022** -- hand-delineated RTS ground truth on 2020 PlanetScope imagery for three sites in
  the Canadian Arctic (Banks Island, Hot Weather Creek, Willow River), delineated by the Lantz
  group (U. Victoria); Huang, L. et al. (2022/2023). Shapefiles in UTM 10N / 16N / 8N.
* **nitze2021** -- RTS training labels over six regions (Banks Island, Horton, Tuktoyaktuk,
  Kolguev, Lena, Herschel), images 2018-2019; Nitze, I., Heidler, K., Barth, S., Grosse, G.
  (2021): Developing and testing a deep learning approach for mapping retrogressive thaw slumps,
  *Remote Sensing* 13(21), 4294. Shapefile in EPSG:4326 with 4 self-intersecting polygons.
* **bernhard2022** -- TanDEM-X RTS inventory with annual volume and area change rates, given as
  lat/lon centroids in a CSV; Bernhard, P., Zwieback, S., Bergner, N., Hajnsek, I. (2022):
  Assessing volumetric change distributions and scaling relations of retrogressive thaw slumps
  across the Arctic, *The Cryosphere* 16, 1-15.
* **bernhard2022_taymyr** -- northern Taymyr RTS polygons for two periods (TP1 2010/11-2016/17,
  TP2 2017/18-2020/21) with volume / area change rates and mobilised soil organic carbon in
  per-RTS CSV tables; Bernhard, P., Zwieback, S., Hajnsek, I. (2022): Accelerated mobilization of
  organic carbon from retrogressive thaw slumps on the northern Taymyr Peninsula, *The Cryosphere*
  16, 2819-2835. The CSV tables carry no coordinates (they are keyed by ``RTS-ID`` = the
  shapefiles' ``RTSID``); the shapefiles hold 82 (TP1) / 1,405 (TP2) polygons, a few more than the
  75 / 1,404 rows of the tables (TP1 RTSIDs 0, 24, 26-30 and TP2 RTSID 0 have no table row).

Conventions
-----------
* Everything returned is in EPSG:3413 (NSIDC Sea Ice Polar Stereographic North, the project's
  CRS). EPSG:3413 is *conformal* (shapes and length ratios are locally exact) but not equal-area:
  its scale is 1 at 70 deg N and differs by up to ~1.5 % in length (~3 % in area) over 60-80 deg N.
  :func:`shape_metrics` therefore takes areas from the equal-area EPSG:6931 (WGS 84 / NSIDC
  EASE-Grid 2.0 North, Lambert azimuthal equal-area on the pole) and rescales the EPSG:3413 lengths
  by the local scale factor ``sqrt(area_6931 / area_3413)``, so areas, perimeters and axis lengths
  are true metres while the ratios (compactness, elongation) are exactly those of the conformal
  shape.
* :func:`read_inventory` keeps the file's row number (0-based) as the frame's index, so indices in
  :func:`match_inventories` results point back into the file even after invalid rows are dropped.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import Polygon

from data_products import schema
from data_products.writers import atomic_path

log = logging.getLogger(__name__)

CRS = "EPSG:3413"
#: equal-area CRS used for areas (Lambert azimuthal equal-area, north pole)
EQUAL_AREA_CRS = "EPSG:6931"
#: environment variable overriding the shared data folder
SHARED_DATA_ENV = "RTS_SHARED_DATA"

_REPO_ROOT = Path(__file__).resolve().parents[2]  # pipeline/publish/inventories.py -> the repository

#: polygon inventories known to live in the shared data folder: name -> path below it
_KNOWN = {
    "huang2022_banks_island": "inventories/huang2022/Banks_Island_slumps.shp",
    "huang2022_hot_weather_creek": "inventories/huang2022/HotWeatherCreek_slumps.shp",
    "huang2022_willow_river": "inventories/huang2022/Willow_River_Thaw_Slumps.shp",
    "nitze2021": "inventories/nitze2021/GT_Set_Nitze_etal_2021_TrainingSet_RTS.shp",
    "bernhard2022_taymyr_tp1": "inventories/bernhard2022_taymyr/SHP_RTS_TP1.shp",
    "bernhard2022_taymyr_tp2": "inventories/bernhard2022_taymyr/SHP_RTS_TP2.shp",
}
#: the Bernhard et al. (2022) centroid inventory (points), relative to the shared data folder
BERNHARD2022_CSV = "inventories/bernhard2022/RTS_data_Inventory.csv"

#: (latitude, longitude) column pairs recognised in CSV inventories (case-insensitive)
_LATLON_COLUMNS = (
    ("location_center_lat", "location_center_lon"),
    ("latitude", "longitude"),
    ("lat", "lon"),
    ("lat", "lng"),
)

_POLYGONAL = ("Polygon", "MultiPolygon")
_PUNTAL = ("Point", "MultiPoint")


# ---------------------------------------------------------------------------------------------
# locating the data


def shared_data_dir() -> Path | None:
    """The shared reference-data folder, or None when it is absent.

    ``$RTS_SHARED_DATA`` when that variable is set (non-empty), else ``<repo root>/../shared/data``.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    path = Path(env).expanduser() if env else _REPO_ROOT.parent / "shared" / "data"
    return path.resolve() if path.is_dir() else None


def known_inventories(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Name -> path of the polygon inventories present in the shared data folder.

    Names: ``huang2022_banks_island``, ``huang2022_hot_weather_creek``, ``huang2022_willow_river``,
    ``nitze2021``, ``bernhard2022_taymyr_tp1``, ``bernhard2022_taymyr_tp2``. Missing files are left
    out; an empty dict when the folder itself is absent.
    """
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    if root is None:
        return {}
    return {name: root / rel for name, rel in _KNOWN.items() if (root / rel).is_file()}


# ---------------------------------------------------------------------------------------------
# reading


def read_inventory(path: str | os.PathLike) -> gpd.GeoDataFrame:
    """Read one inventory file into a GeoDataFrame in EPSG:3413.

    * Vector files (shapefile, GeoPackage, ...): any CRS given by the file (``.prj``), reprojected;
      Z coordinates dropped. Invalid polygons are repaired with :func:`shapely.make_valid` keeping
      only their polygonal parts (again after reprojection, which can create new defects); rows
      left empty or without any polygonal part are dropped with a logged warning counting them.
    * CSV files need latitude/longitude columns (e.g. ``location_center_lat`` /
      ``location_center_lon`` of Bernhard et al. 2022, WGS 84): each row becomes a point, all
      columns are kept; rows without coordinates are dropped with a warning. A CSV without
      coordinate columns (the Taymyr per-RTS tables) raises ValueError.

    A ``source`` column (the file stem) is added; the index is the 0-based row number in the file.

    Raises FileNotFoundError when the file is missing, ValueError (naming the file) when it cannot
    be read, has no CRS, no coordinates or no usable geometry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"inventory file not found: {path}")
    if path.suffix.lower() == ".csv":
        gdf = _read_csv_points(path)
    else:
        gdf = _read_vector(path)
    gdf["source"] = path.stem
    return gdf


def _read_vector(path: Path) -> gpd.GeoDataFrame:
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise ValueError(f"cannot read inventory file {path}: {exc}") from exc
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf:
        raise ValueError(f"inventory file {path} has no geometry column")
    if gdf.crs is None:
        raise ValueError(f"inventory file {path} has no CRS (missing or unreadable .prj); "
                         "cannot place it in EPSG:3413")
    gdf.index = pd.RangeIndex(len(gdf))
    n_in = len(gdf)
    geom = shapely.force_2d(gdf.geometry.values)
    present = ~(shapely.is_missing(geom) | shapely.is_empty(geom))
    types = set(shapely.get_type_id(geom[present]).tolist())
    polygonal_ids = {3, 6}   # Polygon, MultiPolygon
    point_ids = {0, 4}       # Point, MultiPoint
    if types and types <= point_ids:
        gdf = gdf.set_geometry(gpd.GeoSeries(geom, index=gdf.index, crs=gdf.crs))
        gdf = gdf[present].to_crs(CRS)
        _warn_dropped(path, n_in - len(gdf), n_in, "empty or missing point geometries")
        return gdf
    if not types & polygonal_ids:
        raise ValueError(f"inventory file {path} holds no polygons or points "
                         f"(geometry types: {sorted(set(gdf.geom_type.dropna()))})")

    fixed, n_rep1 = _repair_polygonal(geom)
    gdf = gdf.set_geometry(gpd.GeoSeries(fixed, index=gdf.index, crs=gdf.crs))
    gdf = gdf[~(shapely.is_missing(fixed) | shapely.is_empty(fixed))].to_crs(CRS)
    fixed, n_rep2 = _repair_polygonal(gdf.geometry.values)
    gdf = gdf.set_geometry(gpd.GeoSeries(fixed, index=gdf.index, crs=CRS))
    gdf = gdf[~(shapely.is_missing(fixed) | shapely.is_empty(fixed))]
    if n_rep1 or n_rep2:
        log.info("%s: repaired %d invalid geometries with make_valid (%d more after reprojection)",
                 path.name, n_rep1, n_rep2)
    _warn_dropped(path, n_in - len(gdf), n_in,
                  "empty geometries or geometries without a polygonal part after make_valid")
    if gdf.empty:
        raise ValueError(f"inventory file {path} has no usable polygon")
    return gdf


def _warn_dropped(path: Path, n_dropped: int, n_in: int, what: str) -> None:
    if n_dropped:
        log.warning("%s: dropped %d of %d rows: %s", path.name, n_dropped, n_in, what)


def _polygonal_part(geom):
    """The polygonal part of a (repaired) geometry; an empty Polygon when it has none."""
    if geom is None or geom.is_empty:
        return Polygon()
    if geom.geom_type in _POLYGONAL:
        return geom
    polys = [p for p in shapely.get_parts(geom) if p.geom_type in _POLYGONAL and not p.is_empty]
    if not polys:
        return Polygon()
    out = shapely.union_all(polys)  # merges parts sharing an edge (invalid as a MultiPolygon)
    if out.geom_type not in _POLYGONAL:
        return _polygonal_part(out)
    return out


def _repair_polygonal(geoms: np.ndarray) -> tuple[np.ndarray, int]:
    """make_valid the invalid entries, keep polygonal parts; non-polygonal rows become empty."""
    geoms = np.asarray(geoms, dtype=object).copy()
    missing = shapely.is_missing(geoms)
    geoms[missing] = Polygon()
    invalid = ~shapely.is_valid(geoms)
    for i in np.flatnonzero(invalid):
        geoms[i] = _polygonal_part(shapely.make_valid(geoms[i]))
        if not geoms[i].is_valid:  # should not happen; last resort
            geoms[i] = _polygonal_part(shapely.make_valid(geoms[i].buffer(0)))
    non_poly = ~np.isin(shapely.get_type_id(geoms), (3, 6))
    geoms[non_poly] = [_polygonal_part(g) for g in geoms[non_poly]]
    return geoms, int(invalid.sum())


def _read_csv_points(path: Path) -> gpd.GeoDataFrame:
    try:
        # index_col=False: the Bernhard CSV ends every data line with a trailing comma, which
        # pandas would otherwise take as a sign that the first column is the index.
        df = pd.read_csv(path, skipinitialspace=True, index_col=False)
    except Exception as exc:
        raise ValueError(f"cannot read inventory file {path}: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    df = df.drop(columns=[c for c in df.columns if c.startswith("Unnamed:") and df[c].isna().all()])
    lower = {c.lower(): c for c in df.columns}
    for lat_name, lon_name in _LATLON_COLUMNS:
        if lat_name in lower and lon_name in lower:
            lat_col, lon_col = lower[lat_name], lower[lon_name]
            break
    else:
        raise ValueError(
            f"inventory file {path} has no coordinates: none of the latitude/longitude column pairs "
            f"{[p for p in _LATLON_COLUMNS]} among its columns {list(df.columns)}. (The Taymyr "
            "RTS_*_TP*.csv tables are per-slump attributes keyed by RTS-ID; join them to "
            "SHP_RTS_TP*.shp on RTSID for geometry.)")
    lat = pd.to_numeric(df[lat_col], errors="coerce")
    lon = pd.to_numeric(df[lon_col], errors="coerce")
    ok = lat.notna() & lon.notna()
    if ((lat[ok].abs() > 90) | (lon[ok].abs() > 360)).any():
        raise ValueError(f"inventory file {path}: coordinates out of range in {lat_col}/{lon_col} "
                         "(not WGS 84 degrees, or mis-parsed columns)")
    n_in = len(df)
    df.index = pd.RangeIndex(n_in)
    df = df[ok]
    _warn_dropped(path, n_in - len(df), n_in, f"no {lat_col}/{lon_col}")
    if df.empty:
        raise ValueError(f"inventory file {path} has no row with coordinates")
    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(lon[ok], lat[ok]), crs="EPSG:4326")
    return gdf.to_crs(CRS)


# ---------------------------------------------------------------------------------------------
# shape metrics


#: inventory files ``rts dashboard --reference DIR`` looks for (recursively)
REFERENCE_SUFFIXES = (".shp", ".gpkg", ".geojson", ".parquet", ".csv")


def export_references(folder: str | os.PathLike, products: str | os.PathLike, log=print) -> dict[str, int]:
    """Convert every inventory file under ``folder`` that :func:`read_inventory` reads into
    ``PRODUCTS/reference/<name>.parquet`` (GeoParquet 1.1, EPSG:3413, WKB; columns ``geometry``,
    ``source``, ``row``), the dashboard's reference layers. ``name`` is the file's path under
    ``folder`` with ``/`` as ``__`` (two files of one stem stay apart). A file that cannot be
    read is reported through ``log`` and skipped; the others go on. Files are written
    atomically; an unchanged source is not rewritten. Returns {name: number of features}."""
    folder, out = Path(folder), Path(products) / schema.REFERENCE_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"--reference {folder}: not a folder")
    done: dict[str, int] = {}
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in REFERENCE_SUFFIXES and p.is_file()):
        name = "__".join(path.relative_to(folder).with_suffix("").parts)
        target = out / f"{name}.parquet"
        if target.is_file() and target.stat().st_mtime >= path.stat().st_mtime:
            done[name] = -1  # up to date
            continue
        try:
            gdf = read_inventory(path)
        except (ValueError, OSError) as exc:
            log(f"reference {path}: skipped ({str(exc)[:160]})")
            continue
        frame = gpd.GeoDataFrame({"source": path.stem, "row": np.arange(len(gdf), dtype=np.int64)},
                                 geometry=gdf.geometry.to_numpy(), crs=gdf.crs)
        with atomic_path(target) as tmp:
            frame.to_parquet(tmp, index=False, schema_version="1.1.0", write_covering_bbox=True)
        done[name] = len(frame)
    return done


def shape_metrics(gdf: gpd.GeoDataFrame) -> pd.DataFrame:
    """Per-polygon shape metrics (same index as ``gdf``).

    Columns:

    * ``area_m2`` -- area in the equal-area EPSG:6931.
    * ``perimeter_m`` -- EPSG:3413 perimeter divided by the local scale factor
      ``k = sqrt(area_3413 / area_6931)`` (EPSG:3413 is conformal, so lengths scale by k and
      areas by k^2), i.e. true metres.
    * ``compactness`` -- Polsby-Popper ``4 pi A / P^2``: 1 for a disk, pi/4 for a square, towards 0
      for thin or ragged shapes (it falls with boundary detail, so it depends on how finely the
      outline was digitised).
    * ``length_m``, ``width_m`` -- long and short sides of the minimum-area rotated rectangle
      (:func:`shapely.oriented_envelope`), scale-corrected like the perimeter.
    * ``elongation`` -- ``1 - width / length``: 0 for a disk or square, 0.5 for a 2:1 shape,
      towards 1 for a thin strip.
    * ``aspect_ratio`` -- ``length / width`` (>= 1), the same information as a ratio.

    Ratios are computed from the conformal EPSG:3413 shape, so they are unaffected by the scale
    correction. Raises ValueError for a frame without CRS or with non-polygonal geometries.
    """
    if gdf.crs is None:
        raise ValueError("shape_metrics: the GeoDataFrame has no CRS")
    g3413 = gdf.geometry.to_crs(CRS)
    types = set(g3413.geom_type.dropna())
    if not types <= set(_POLYGONAL):
        raise ValueError(f"shape_metrics needs polygons, got {sorted(types)}")
    geoms = g3413.values
    area_conf = shapely.area(geoms)
    area_eq = gdf.geometry.to_crs(EQUAL_AREA_CRS).area.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_k = np.sqrt(area_eq / area_conf)  # 1 / local scale factor of EPSG:3413
        perim = shapely.length(geoms) * inv_k
        compact = 4.0 * math.pi * area_conf / shapely.length(geoms) ** 2
    length = np.full(len(geoms), np.nan)
    width = np.full(len(geoms), np.nan)
    for i, rect in enumerate(shapely.oriented_envelope(geoms)):
        if rect is None or rect.is_empty:
            continue
        if rect.geom_type == "Polygon":
            xy = np.asarray(rect.exterior.coords)
            sides = np.hypot(*np.diff(xy[:3], axis=0).T)
            length[i], width[i] = sides.max(), sides.min()
        else:  # degenerate (line or point)
            length[i], width[i] = rect.length, 0.0
    length *= inv_k
    width *= inv_k
    with np.errstate(divide="ignore", invalid="ignore"):
        elong = 1.0 - width / length
        aspect = length / width
    return pd.DataFrame(
        {"area_m2": area_eq, "perimeter_m": perim, "compactness": compact,
         "length_m": length, "width_m": width, "elongation": elong, "aspect_ratio": aspect},
        index=gdf.index)


def summarize_shapes(gdf: gpd.GeoDataFrame) -> dict:
    """Summary of :func:`shape_metrics`: n, area quantiles (10/25/50/75/90 %), median compactness,
    elongation and aspect ratio. Keys: ``n``, ``area_m2_q10``, ``area_m2_q25``,
    ``area_m2_median``, ``area_m2_q75``, ``area_m2_q90``, ``compactness_median``,
    ``elongation_median``, ``aspect_ratio_median``."""
    m = shape_metrics(gdf)
    a = m["area_m2"]
    return {
        "n": int(len(m)),
        "area_m2_q10": float(a.quantile(0.10)),
        "area_m2_q25": float(a.quantile(0.25)),
        "area_m2_median": float(a.median()),
        "area_m2_q75": float(a.quantile(0.75)),
        "area_m2_q90": float(a.quantile(0.90)),
        "compactness_median": float(m["compactness"].median()),
        "elongation_median": float(m["elongation"].median()),
        "aspect_ratio_median": float(m["aspect_ratio"].median()),
    }


# ---------------------------------------------------------------------------------------------
# cross-referencing


def match_inventories(found: gpd.GeoDataFrame, reference: gpd.GeoDataFrame,
                      min_iou: float = 0.1) -> tuple[pd.DataFrame, dict]:
    """Cross-reference an inventory (``found``, polygons) against a reference inventory by overlap.

    Both are reprojected to EPSG:3413. Candidate pairs come from a spatial index
    (:class:`shapely.STRtree`):

    * **polygon reference** -- every intersecting (found, reference) pair gets its
      intersection-over-union; pairs with ``iou >= min_iou`` are matched one-to-one greedily in
      order of descending IoU (ties by position), each polygon used at most once.
    * **point reference** (e.g. the Bernhard et al. 2022 centroids) -- a found polygon matches a
      point that falls inside it (boundary included); ``iou`` is NaN and ``min_iou`` is not used.
      One-to-one greedy in order of ascending distance from the point to the polygon's centroid,
      so of several points inside one polygon the most central is matched.

    Returns ``(pairs, summary)``: ``pairs`` has columns ``found_index``, ``reference_index``
    (index labels of the inputs) and ``iou``, sorted by ``found_index``; ``summary`` has
    ``n_found``, ``n_reference``, ``matched``, ``new`` (found without match), ``missed``
    (reference without match), ``mean_iou`` (NaN for points or no match), ``precision``
    (matched / n_found), ``recall`` (matched / n_reference), ``f1`` and ``reference_kind``.
    """
    for name, gdf in (("found", found), ("reference", reference)):
        if gdf.crs is None:
            raise ValueError(f"match_inventories: {name} has no CRS")
    fg = found.geometry.to_crs(CRS).values
    rg = reference.geometry.to_crs(CRS).values
    f_ok = ~(shapely.is_missing(fg) | shapely.is_empty(fg))
    r_ok = ~(shapely.is_missing(rg) | shapely.is_empty(rg))
    f_types = set(shapely.get_type_id(fg[f_ok]).tolist())
    r_types = set(shapely.get_type_id(rg[r_ok]).tolist())
    if not f_types <= {3, 6}:
        raise ValueError("match_inventories: found must hold polygons")
    if r_types <= {3, 6}:
        kind = "polygon"
    elif r_types <= {0, 4}:
        kind = "point"
    else:
        raise ValueError("match_inventories: reference must hold only polygons or only points")

    tree = shapely.STRtree(np.where(r_ok, rg, None))
    q_f, q_r = tree.query(np.where(f_ok, fg, None),
                          predicate="intersects" if kind == "polygon" else "contains")
    if kind == "polygon":
        inter = shapely.area(shapely.intersection(fg[q_f], rg[q_r]))
        union = shapely.area(fg[q_f]) + shapely.area(rg[q_r]) - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        keep = (iou >= min_iou) & (iou > 0)
        q_f, q_r, iou = q_f[keep], q_r[keep], iou[keep]
        order = np.lexsort((q_r, q_f, -iou))
    else:
        dist = shapely.distance(shapely.centroid(fg[q_f]), rg[q_r])
        iou = np.full(len(q_f), np.nan)
        order = np.lexsort((q_r, q_f, dist))

    used_f = np.zeros(len(fg), bool)
    used_r = np.zeros(len(rg), bool)
    sel = []
    for k in order:
        i, j = q_f[k], q_r[k]
        if not used_f[i] and not used_r[j]:
            used_f[i] = used_r[j] = True
            sel.append(k)
    sel = np.asarray(sel, dtype=int)
    pairs = pd.DataFrame({
        "found_index": found.index.to_numpy()[q_f[sel]],
        "reference_index": reference.index.to_numpy()[q_r[sel]],
        "iou": iou[sel].astype(float),
    }).sort_values("found_index", kind="stable").reset_index(drop=True)

    n_f, n_r, m = len(found), len(reference), len(sel)
    precision = m / n_f if n_f else float("nan")
    recall = m / n_r if n_r else float("nan")
    f1 = (2 * precision * recall / (precision + recall)
          if n_f and n_r and (precision + recall) > 0 else (0.0 if n_f and n_r else float("nan")))
    summary = {
        "n_found": n_f,
        "n_reference": n_r,
        "matched": m,
        "new": n_f - m,
        "missed": n_r - m,
        "mean_iou": float(pairs["iou"].mean()) if m and kind == "polygon" else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "reference_kind": kind,
    }
    return pairs, summary
