"""The DuckDB catalog over a products folder: the queries the dashboard (and users) need.

DuckDB runs in-process. The spatial extension is loaded offline from the PyPI package
``duckdb-extension-spatial`` (the ``.duckdb_extension`` file inside the installed
package is ``INSTALL``-ed from its path, then ``LOAD``-ed; nothing is downloaded).

Views, one per product file present in the folder:

* ``inventory`` over ``rts_inventory.parquet`` (GeoParquet 1.1; ``geometry`` is a
  GEOMETRY in EPSG:3413 metres, ``bbox`` the covering struct ``xmin/ymin/xmax/ymax``
  used for fast box filtering through row-group statistics);
* ``timeseries`` over ``rts_timeseries.parquet``;
* ``tiles`` over ``tiles.parquet``.

Every value that comes from a user (filters, search text, ids, boxes) reaches DuckDB as a
bound parameter (``?``); SQL text is only ever assembled from fixed fragments chosen by
this module. Filters are validated first (:meth:`Filters.validate`) so bad input gets a
clear message instead of a query. Paths asked for by users go through
:meth:`Catalog.path`, which refuses anything that resolves outside the products folder.

Units: areas m², volumes m³, rates m³/yr, carbon kg C/yr, coordinates EPSG:3413 metres,
temperatures °C, years are thaw seasons (20 Jun - 22 Sep).
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from data_products import grid, schema
from data_products.store import FAILURE, TILES_DIR, ProductsStore

#: Size classes on ``area_m2`` (m²): [low, high).
SIZE_CLASSES: dict[str, tuple[float, float]] = {
    "small (< 1 ha)": (0.0, 10_000.0),
    "medium (1-5 ha)": (10_000.0, 50_000.0),
    "large (5-20 ha)": (50_000.0, 200_000.0),
    "very large (>= 20 ha)": (200_000.0, math.inf),
}

#: What a search box accepts: letters, digits, '+', '-', '_' and spaces (ids and tile ids).
SEARCH_RE = re.compile(r"^[A-Za-z0-9+_\- ]{0,48}$")

#: Columns the dashboard may colour or sort by.
METRICS: dict[str, str] = {
    "volume_m3": "volume (m³)",
    "volume_rate_m3_yr": "volume rate (m³/yr)",
    "r_temperature": "r with summer temperature",
    "area_m2": "area (m²)",
    "carbon_kg_yr": "carbon (kg C/yr)",
}

#: Thaw seasons (years) the year filter accepts.
YEAR_MIN, YEAR_MAX = 1990, 2100

#: The bounds of the EPSG:3413 work grid (m); boxes are clipped to them.

_LOCK = threading.Lock()


class ProductsError(RuntimeError):
    """The products folder is missing, unreadable or lacks the inventory."""


class QueryError(ValueError):
    """A filter, id, box or path that the catalog refuses (with the reason)."""


# --------------------------------------------------------------------------- spatial extension
def spatial_extension_path() -> Path:
    """The ``spatial.duckdb_extension`` file shipped by the ``duckdb-extension-spatial`` package."""
    import duckdb
    import duckdb_extension_spatial

    root = Path(duckdb_extension_spatial.__file__).parent
    version = duckdb.__version__
    for p in (root / "extensions" / f"v{version}" / "spatial.duckdb_extension",
              *sorted(root.rglob("spatial.duckdb_extension"))):
        if p.is_file():
            return p
    raise ProductsError(f"no spatial.duckdb_extension inside {root}: reinstall duckdb-extension-spatial=={version}")


def connect(spatial: bool = True, threads: int = 2, memory_limit: str = "1GB"):
    """An in-memory DuckDB connection, with the spatial extension loaded offline when asked."""
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": threads, "memory_limit": memory_limit,
                                             "autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    if spatial:
        ext = str(spatial_extension_path())
        with _LOCK:  # INSTALL copies into the extension directory; serialise concurrent sessions
            try:
                con.execute(f"INSTALL '{_quote(ext)}'")
                con.execute("LOAD spatial")
            except Exception:  # read-only home or extension directory: load straight from the wheel
                con.execute(f"LOAD '{_quote(ext)}'")
    return con


_PUBLISHED_SUFFIXES = {".parquet", ".csv", ".json", ".md", ".tif"}


def _published(parts: tuple[str, ...]) -> bool:
    """Whether a products-relative path is a published file: a product at the top level,
    under ``stac/``, or a cell's raster or ``cell.json`` under ``tiles/<cell id>/``; never
    hidden or temporary files, the job queue, logs, parts or run records."""
    if not parts or any(x.startswith(".") or x.endswith((".tmp", ".part")) for x in parts):
        return False
    if Path(parts[-1]).suffix not in _PUBLISHED_SUFFIXES:
        return False
    if len(parts) == 1:
        return not parts[0].startswith(("jobs", "run_summary"))
    if parts[0] == "stac":
        return True
    if parts[0] == TILES_DIR and len(parts) == 3:
        try:
            return grid.parse_cell_id(parts[1]).id == parts[1] and parts[2] != FAILURE
        except ValueError:
            return False
    return False


def published_file(products: Path, relative: str) -> Path:
    """The published file ``relative`` names inside the (resolved) ``products`` folder;
    QueryError if it names anything else: an absolute path, a way out of the folder, a
    missing file, or one that is not published (:func:`_published`)."""
    products = Path(products).resolve()
    rel = str(relative or "")
    if not rel or "\x00" in rel or rel.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", rel):
        raise QueryError(f"{rel[:80]!r}: give a path relative to the products folder")
    target = (products / rel).resolve()
    if target != products and products not in target.parents:
        raise QueryError(f"{rel[:80]!r} is outside the products folder")
    if not target.is_file():
        raise QueryError(f"{rel[:80]!r} is not a file in the products folder")
    if not _published(target.relative_to(products).parts):
        raise QueryError(f"{rel[:80]!r} is not a published product file (the queue, logs, run records, "
                         "temporary and hidden files are not offered)")
    return target


def _quote(s: str) -> str:
    """A trusted string (a path of this installation) as the body of a SQL string literal."""
    return str(s).replace("'", "''")


# --------------------------------------------------------------------------- filters
def _finite(v, name: str) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise QueryError(f"{name}: {v!r} is not a number") from None
    if not math.isfinite(f):
        raise QueryError(f"{name}: {v!r} is not a finite number")
    return f


def parse_bbox(value) -> tuple[float, float, float, float] | None:
    """(xmin, ymin, xmax, ymax) in EPSG:3413 metres from a 4-sequence or 'xmin,ymin,xmax,ymax' text,
    cut to the grid (:func:`data_products.grid.parse_bbox`); None for an empty value."""
    if value is None or value == "" or value == ():
        return None
    try:
        return grid.parse_bbox(value, clip=True)
    except grid.BBoxError as exc:
        raise QueryError(f"box: {exc}") from None


def check_search(text: str) -> str:
    """The search text, stripped, if it only holds id characters; else a QueryError."""
    text = (text or "").strip()
    if not SEARCH_RE.match(text):
        raise QueryError("search: only letters, digits, '+', '-', '_' and spaces are allowed "
                         "(a slump id like RTS_-0245678_+0012345 or part of it, or a cell id)")
    return text


def check_rts_id(rts_id: str) -> str:
    rts_id = (rts_id or "").strip()
    if not rts_id or not re.fullmatch(r"[A-Za-z0-9+_\-]{1,48}", rts_id):
        raise QueryError(f"{rts_id[:60]!r} is not a slump id (letters, digits, '+', '-', '_')")
    return rts_id


@dataclass(frozen=True)
class Filters:
    """What the user selected. Empty / None fields do not filter.

    ``years`` keeps slumps active in any thaw season of [y0, y1] (first_change year <= y1
    and last_change year >= y0); ``volume`` (m³) and ``r`` are closed ranges with open ends
    as None; ``min_score`` is the lowest detector score; ``bbox`` is EPSG:3413 metres and
    keeps slumps whose bounding box intersects it; ``search`` matches a part of rts_id or tile_id.
    """

    regions: tuple[str, ...] = ()
    years: tuple[int, int] | None = None
    size_classes: tuple[str, ...] = ()
    volume: tuple[float | None, float | None] = (None, None)
    r: tuple[float | None, float | None] = (None, None)
    min_score: float | None = None
    search: str = ""
    bbox: tuple[float, float, float, float] | None = None

    def validate(self) -> "Filters":
        """A normalised copy; QueryError with the reason for any bad value."""
        regions = tuple(str(r) for r in (self.regions or ()))
        for r in regions:
            if len(r) > 80:
                raise QueryError("region: name too long")
        years = None
        if self.years:
            try:
                y0, y1 = (int(v) for v in self.years)
            except (TypeError, ValueError):
                raise QueryError(f"years: {self.years!r} is not a pair of years") from None
            if not (YEAR_MIN <= y0 <= y1 <= YEAR_MAX):
                raise QueryError(f"years: need {YEAR_MIN} <= first <= last <= {YEAR_MAX}")
            years = (y0, y1)
        sizes = tuple(self.size_classes or ())
        for s in sizes:
            if s not in SIZE_CLASSES:
                raise QueryError(f"size class: {str(s)[:60]!r} is not one of {', '.join(SIZE_CLASSES)}")
        vol = tuple(_finite(v, "volume") for v in (self.volume or (None, None)))
        if vol[0] is not None and vol[1] is not None and vol[0] > vol[1]:
            raise QueryError("volume: minimum above maximum")
        r = tuple(_finite(v, "r") for v in (self.r or (None, None)))
        for v in r:
            if v is not None and not -1.0 <= v <= 1.0:
                raise QueryError("r: must lie within -1 and 1")
        if r[0] is not None and r[1] is not None and r[0] > r[1]:
            raise QueryError("r: minimum above maximum")
        score = _finite(self.min_score, "detector score")
        if score is not None and not 0.0 <= score <= 1.0:
            raise QueryError("detector score: must lie within 0 and 1")
        return Filters(regions=regions, years=years, size_classes=sizes, volume=vol, r=r, min_score=score,
                       search=check_search(self.search), bbox=parse_bbox(self.bbox))

    def with_bbox(self, bbox) -> "Filters":
        return replace(self, bbox=tuple(bbox) if bbox else None)

    def to_dict(self) -> dict:
        return asdict(self)


def where(f: Filters, alias: str = "") -> tuple[str, list]:
    """The WHERE clause (fixed SQL fragments) and its bound parameters for validated filters."""
    a = f"{alias}." if alias else ""
    sql: list[str] = []
    params: list = []
    if f.regions:
        sql.append(f"{a}region IN ({', '.join('?' * len(f.regions))})")
        params += list(f.regions)
    if f.years:
        sql.append(f"year(CAST({a}first_change AS DATE)) <= ? AND year(CAST({a}last_change AS DATE)) >= ?")
        params += [f.years[1], f.years[0]]
    if f.size_classes:
        ors = []
        for s in f.size_classes:
            lo, hi = SIZE_CLASSES[s]
            if math.isinf(hi):
                ors.append(f"{a}area_m2 >= ?")
                params.append(lo)
            else:
                ors.append(f"({a}area_m2 >= ? AND {a}area_m2 < ?)")
                params += [lo, hi]
        sql.append("(" + " OR ".join(ors) + ")")
    if f.volume[0] is not None:
        sql.append(f"{a}volume_m3 >= ?")
        params.append(f.volume[0])
    if f.volume[1] is not None:
        sql.append(f"{a}volume_m3 <= ?")
        params.append(f.volume[1])
    if f.r[0] is not None:
        sql.append(f"{a}r_temperature >= ?")
        params.append(f.r[0])
    if f.r[1] is not None:
        sql.append(f"{a}r_temperature <= ?")
        params.append(f.r[1])
    if f.min_score is not None:
        sql.append(f"{a}detector_score >= ?")
        params.append(f.min_score)
    if f.search:
        pat = "%" + f.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql.append(f"({a}rts_id ILIKE ? ESCAPE '\\' OR {a}tile_id ILIKE ? ESCAPE '\\')")
        params += [pat, pat]
    if f.bbox:
        xmin, ymin, xmax, ymax = f.bbox
        sql.append(f"{a}bbox.xmax >= ? AND {a}bbox.xmin <= ? AND {a}bbox.ymax >= ? AND {a}bbox.ymin <= ?")
        params += [xmin, xmax, ymin, ymax]
    return (" WHERE " + " AND ".join(sql)) if sql else "", params


def recorded_temperature_driven_r(products: Path) -> float:
    """The r threshold the products were made with (``manifest.json`` -> ``config.quantify.
    temperature_driven_r``), or :data:`schema.DEFAULT_TEMPERATURE_DRIVEN_R` when unrecorded."""
    try:
        v = json.loads((Path(products) / schema.MANIFEST).read_text())["config"]["quantify"]["temperature_driven_r"]
        v = float(v)
        return v if -1.0 <= v <= 1.0 else schema.DEFAULT_TEMPERATURE_DRIVEN_R
    except (OSError, ValueError, KeyError, TypeError):
        return schema.DEFAULT_TEMPERATURE_DRIVEN_R


# --------------------------------------------------------------------------- catalog
@dataclass
class Catalog:
    """Views and queries over one products folder (see the module docstring).

    Raises :class:`ProductsError` when the folder is missing, unreadable or has no
    readable inventory. Use :meth:`cursor` per thread (Streamlit sessions run in threads).
    """

    products: Path
    spatial: bool = True
    tables: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self):
        p = Path(self.products).expanduser()
        try:
            p = p.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ProductsError(f"products folder {self.products} does not exist; run `rts run --out DIR` "
                                "(or `make pipeline`) first") from None
        if not p.is_dir():
            raise ProductsError(f"{p} is not a folder")
        try:
            next(iter(p.iterdir()), None)
        except OSError as exc:
            raise ProductsError(f"products folder {p} is not readable: {exc.strerror or exc}") from None
        self.products = p
        inv = p / schema.INVENTORY
        if not inv.is_file():
            raise ProductsError(f"{p} has no {schema.INVENTORY}; the pipeline has not published slumps there yet")
        self.con = connect(spatial=self.spatial)
        for view, fname in (("inventory", schema.INVENTORY), ("timeseries", schema.TIMESERIES),
                            ("tiles", schema.TILES), ("matches", schema.MATCHES)):
            f = p / fname
            if not f.is_file():
                continue
            try:
                self._view(view, f)
                self.con.execute(f"SELECT * FROM {view} LIMIT 0").fetchall()
            except Exception as exc:
                if view == "inventory":
                    raise ProductsError(f"{f} is not a readable inventory: {exc}") from None
                self.con.execute(f"DROP VIEW IF EXISTS {view}")
                continue
            self.tables[view] = f
        cols = {r[0] for r in self.con.execute("DESCRIBE inventory").fetchall()}
        missing = {"rts_id", "region", "area_m2", "volume_m3", "geometry"} - cols
        if missing:
            raise ProductsError(f"{inv} lacks columns {sorted(missing)}")
        self.has_bbox = "bbox" in cols
        self.columns = cols
        self.temperature_driven_r = recorded_temperature_driven_r(p)

    # ------------------------------------------------------------------ plumbing
    def cursor(self):
        """A cursor for the calling thread (DuckDB connections are not shared across threads)."""
        return self.con.cursor()

    def has(self, view: str) -> bool:
        return view in self.tables

    def version(self) -> tuple:
        """Modification times of the product files: changes when the pipeline republishes."""
        return tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in self.tables.values())

    def _df(self, sql: str, params: list | None = None) -> pd.DataFrame:
        return self.cursor().execute(sql, params or []).df()

    def _one(self, sql: str, params: list | None = None):
        return self.cursor().execute(sql, params or []).fetchone()

    def _where(self, f: Filters | None, alias: str = "") -> tuple[str, list]:
        f = (f or Filters()).validate()
        if f.bbox and not self.has_bbox:  # an inventory written without the covering column
            xmin, ymin, xmax, ymax = f.bbox
            w, p = where(replace(f, bbox=None), alias)
            a = f"{alias}." if alias else ""
            clause = f"ST_Intersects({a}geometry, ST_MakeEnvelope(?, ?, ?, ?))"
            return (w + " AND " if w else " WHERE ") + clause, p + [xmin, ymin, xmax, ymax]
        return where(f, alias)

    def _view(self, view: str, f: Path) -> None:
        """A view on one Parquet file. DuckDB reads ``*``, ``?`` and ``[`` in a path as a
        glob, so a folder whose name holds them could make it read other files: such a
        file is read through a link to it from a private temporary folder instead."""
        if any(c in str(f) for c in "*?[{"):  # DuckDB expands these again on every query
            import atexit
            import shutil
            import tempfile

            if getattr(self, "_links", None) is None:
                self._links = tempfile.mkdtemp(prefix="rts_catalog_")
                atexit.register(shutil.rmtree, self._links, True)
            link = Path(self._links) / f"{view}.parquet"
            if not link.exists():
                link.symlink_to(f)
            f = link
        self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{_quote(f)}')")

    def path(self, relative: str) -> Path:
        """A file inside the products folder named by a user; QueryError if it is not one."""
        return published_file(self.products, relative)

    def tile_raster(self, tile_id: str, name: str) -> Path | None:
        """``tiles/<tile_id>/<name>.tif`` for a valid cell id, or None when absent."""
        cell = grid.parse_cell_id(tile_id)
        if name not in schema.CELL_RASTERS:
            raise QueryError(f"{name!r} is not a cell raster")
        try:
            return self.path(ProductsStore.tile_key(cell.id, f"{name}.tif"))
        except QueryError:
            return None

    # ------------------------------------------------------------------ counts and selections
    def count(self, f: Filters | None = None) -> int:
        w, p = self._where(f)
        return int(self._one(f"SELECT count(*) FROM inventory{w}", p)[0])

    def totals(self, f: Filters | None = None) -> dict:
        """Number, total area (m²), volume (m³) and its σ (root sum of squares, m³; an independence
        assumption between slumps), carbon (kg C/yr), and the share of slumps with r at least the
        products' :attr:`temperature_driven_r` (``r_threshold``)."""
        w, p = self._where(f)
        row = self._one(
            "SELECT count(*), sum(area_m2), sum(volume_m3), sqrt(sum(volume_sigma_m3 * volume_sigma_m3)), "
            "sum(carbon_kg_yr), sum(volume_rate_m3_yr), count(r_temperature), "
            f"count(*) FILTER (WHERE r_temperature >= ?) FROM inventory{w}", [self.temperature_driven_r, *p])
        n = int(row[0])
        return {"n": n, "area_m2": float(row[1] or 0), "volume_m3": float(row[2] or 0),
                "volume_sigma_m3": float(row[3] or 0), "carbon_kg_yr": float(row[4] or 0),
                "volume_rate_m3_yr": float(row[5] or 0), "n_with_r": int(row[6]), "n_r_ge": int(row[7]),
                "r_threshold": self.temperature_driven_r, "share_r_ge": (row[7] / n) if n else float("nan"),
                "share_r_ge_of_computable": (row[7] / row[6]) if row[6] else float("nan")}

    def regions(self) -> list[str]:
        return [r[0] for r in self.cursor().execute(
            "SELECT region FROM inventory GROUP BY region ORDER BY count(*) DESC").fetchall()]

    def year_range(self) -> tuple[int, int] | None:
        row = self._one("SELECT min(year(CAST(first_change AS DATE))), max(year(CAST(last_change AS DATE))) "
                        "FROM inventory")
        return (int(row[0]), int(row[1])) if row and row[0] is not None else None

    def value_range(self, column: str) -> tuple[float, float] | None:
        if column not in METRICS and column not in {"detector_score"}:
            raise QueryError(f"{column!r} is not a metric")
        row = self._one(f"SELECT min({column}), max({column}) FROM inventory")
        return (float(row[0]), float(row[1])) if row and row[0] is not None else None

    def extent(self, f: Filters | None = None) -> tuple[float, float, float, float] | None:
        """Bounding box (EPSG:3413 m) of the selected slumps."""
        w, p = self._where(f)
        row = self._one(f"SELECT min(bbox.xmin), min(bbox.ymin), max(bbox.xmax), max(bbox.ymax) FROM inventory{w}",
                        p) if self.has_bbox else self._one(
            f"SELECT min(ST_XMin(geometry)), min(ST_YMin(geometry)), max(ST_XMax(geometry)), "
            f"max(ST_YMax(geometry)) FROM inventory{w}", p)
        return tuple(float(v) for v in row) if row and row[0] is not None else None

    def _xy(self) -> str:
        return ("(bbox.xmin + bbox.xmax) / 2 AS x, (bbox.ymin + bbox.ymax) / 2 AS y" if self.has_bbox else
                "ST_X(ST_Centroid(geometry)) AS x, ST_Y(ST_Centroid(geometry)) AS y")

    def points(self, f: Filters | None = None, limit: int | None = None) -> pd.DataFrame:
        """One row per selected slump: rts_id, x, y (EPSG:3413 m, centre of its box) and the metrics."""
        w, p = self._where(f)
        lim = ""
        if limit is not None:
            lim = " LIMIT ?"
            p = p + [int(limit)]
        return self._df(f"SELECT rts_id, {self._xy()}, region, area_m2, volume_m3, volume_rate_m3_yr, "
                        f"r_temperature, carbon_kg_yr, detector_score FROM inventory{w}{lim}", p)

    def table(self, f: Filters | None = None, limit: int = 1000, order_by: str = "volume_m3") -> pd.DataFrame:
        """Attribute rows (no geometry) of the selection, largest ``order_by`` first."""
        if order_by not in METRICS:
            raise QueryError(f"{order_by!r} is not a sortable metric")
        w, p = self._where(f)
        cols = [c for c in schema.names(schema.INVENTORY_COLUMNS) if c != "geometry" and c in self.columns]
        return self._df(f"SELECT {', '.join(cols)} FROM inventory{w} ORDER BY {order_by} DESC NULLS LAST, rts_id "
                        "LIMIT ?", p + [int(limit)])

    def polygons(self, f: Filters | None = None, bbox=None, limit: int = 5000) -> pd.DataFrame:
        """Outlines of the selected slumps intersecting ``bbox`` (EPSG:3413 m): rts_id, metrics and
        ``wkb`` (polygon WKB); at most ``limit`` rows, largest volume first."""
        f = (f or Filters())
        if bbox is not None:
            f = f.with_bbox(bbox)
        w, p = self._where(f)
        return self._df(f"SELECT rts_id, tile_id, region, area_m2, volume_m3, volume_rate_m3_yr, r_temperature, "
                        f"detector_score, first_change, last_change, ST_AsWKB(geometry) AS wkb FROM inventory{w} "
                        "ORDER BY volume_m3 DESC LIMIT ?", p + [int(limit)])

    def nearest(self, x: float, y: float, f: Filters | None = None, max_m: float = 50_000.0) -> str | None:
        """The id of the selected slump whose box centre is nearest (x, y) within ``max_m`` metres."""
        x, y = _finite(x, "x"), _finite(y, "y")
        box = (x - max_m, y - max_m, x + max_m, y + max_m)
        w, p = self._where((f or Filters()).with_bbox(box))
        cx = "(bbox.xmin + bbox.xmax) / 2" if self.has_bbox else "ST_X(ST_Centroid(geometry))"
        cy = "(bbox.ymin + bbox.ymax) / 2" if self.has_bbox else "ST_Y(ST_Centroid(geometry))"
        row = self._one(f"SELECT rts_id FROM inventory{w} ORDER BY ({cx} - ?)^2 + ({cy} - ?)^2 LIMIT 1",
                        p + [x, y])
        return row[0] if row else None

    # ------------------------------------------------------------------ aggregates
    def grid_aggregate(self, f: Filters | None = None, cell_m: float = 50_000.0) -> pd.DataFrame:
        """Slumps binned on a square EPSG:3413 grid of ``cell_m`` metres: x0, y0 (cell corner, m),
        n, volume_m3 (sum), volume_rate_m3_yr (sum), r_mean. For the low-zoom map."""
        cell_m = _finite(cell_m, "cell size")
        if not cell_m or cell_m < 1_000:
            raise QueryError("cell size: at least 1,000 m")
        w, p = self._where(f)
        cx = "(bbox.xmin + bbox.xmax) / 2" if self.has_bbox else "ST_X(ST_Centroid(geometry))"
        cy = "(bbox.ymin + bbox.ymax) / 2" if self.has_bbox else "ST_Y(ST_Centroid(geometry))"
        return self._df(
            f"SELECT floor({cx} / ?) * ? AS x0, floor({cy} / ?) * ? AS y0, count(*) AS n, "
            "sum(volume_m3) AS volume_m3, sum(volume_rate_m3_yr) AS volume_rate_m3_yr, "
            f"avg(r_temperature) AS r_mean FROM inventory{w} GROUP BY ALL ORDER BY x0, y0",
            [cell_m, cell_m, cell_m, cell_m] + p)

    def tile_aggregate(self, f: Filters | None = None) -> pd.DataFrame:
        """Per work cell: tile_id, n, volume_m3 of the selected slumps."""
        w, p = self._where(f)
        return self._df(f"SELECT tile_id, count(*) AS n, sum(volume_m3) AS volume_m3 FROM inventory{w} "
                        "GROUP BY tile_id ORDER BY n DESC", p)

    def region_totals(self, f: Filters | None = None) -> pd.DataFrame:
        """Per region: slumps, area (m²), volume (m³) and σ, rate (m³/yr), carbon (kg C/yr), share with r
        at least :attr:`temperature_driven_r`."""
        w, p = self._where(f)
        return self._df(
            "SELECT region, count(*) AS slumps, sum(area_m2) AS area_m2, sum(volume_m3) AS volume_m3, "
            "sqrt(sum(volume_sigma_m3 * volume_sigma_m3)) AS volume_sigma_m3, "
            "sum(volume_rate_m3_yr) AS volume_rate_m3_yr, sum(carbon_kg_yr) AS carbon_kg_yr, "
            "avg(CASE WHEN r_temperature >= ? THEN 1.0 ELSE 0.0 END) AS share_r_ge "
            f"FROM inventory{w} GROUP BY region ORDER BY volume_m3 DESC", [self.temperature_driven_r, *p])

    def yearly(self, f: Filters | None = None) -> pd.DataFrame:
        """Per thaw season over the selection: volume_m3 (sum), volume_sigma_m3 (root sum of squares),
        slumps contributing, and summer_t2m_c (mean over those slumps, °C)."""
        if not self.has("timeseries"):
            return pd.DataFrame(columns=["year", "volume_m3", "volume_sigma_m3", "slumps", "summer_t2m_c"])
        w, p = self._where(f, alias="i")
        return self._df(
            "SELECT t.year, sum(t.volume_m3) AS volume_m3, sqrt(sum(t.volume_sigma_m3 * t.volume_sigma_m3)) "
            "AS volume_sigma_m3, count(*) AS slumps, avg(t.summer_t2m_c) AS summer_t2m_c "
            f"FROM timeseries t JOIN inventory i USING (rts_id){w} GROUP BY t.year ORDER BY t.year", p)

    def volume_temperature_slope(self, f: Filters | None = None) -> dict:
        """Least-squares slope of the selection's yearly volume against its mean summer temperature
        (m³ per °C) with its standard error and Pearson r; NaN when fewer than 3 years."""
        y = self.yearly(f).dropna(subset=["summer_t2m_c"])
        if len(y) < 3:
            return {"slope_m3_per_c": float("nan"), "slope_sigma": float("nan"), "r": float("nan"), "n": len(y)}
        t = y.summer_t2m_c.to_numpy(float)
        v = y.volume_m3.to_numpy(float)
        A = np.vstack([t, np.ones_like(t)]).T
        coef, res, *_ = np.linalg.lstsq(A, v, rcond=None)
        dof = max(1, len(t) - 2)
        s2 = float(np.sum((v - A @ coef) ** 2)) / dof
        sxx = float(np.sum((t - t.mean()) ** 2))
        return {"slope_m3_per_c": float(coef[0]), "slope_sigma": math.sqrt(s2 / sxx) if sxx > 0 else float("nan"),
                "r": float(np.corrcoef(t, v)[0, 1]) if sxx > 0 and np.std(v) > 0 else float("nan"), "n": len(t)}

    # ------------------------------------------------------------------ one slump
    def slump(self, rts_id: str) -> dict | None:
        """All inventory columns of one slump (geometry as WKB bytes under ``wkb``), or None."""
        rts_id = check_rts_id(rts_id)
        cols = [c for c in schema.names(schema.INVENTORY_COLUMNS) if c != "geometry" and c in self.columns]
        df = self._df(f"SELECT {', '.join(cols)}, ST_AsWKB(geometry) AS wkb FROM inventory WHERE rts_id = ? LIMIT 1",
                      [rts_id])
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        row["wkb"] = bytes(row["wkb"])
        return row

    def timeseries(self, rts_id: str) -> pd.DataFrame:
        rts_id = check_rts_id(rts_id)
        if not self.has("timeseries"):
            return pd.DataFrame(columns=schema.names(schema.TIMESERIES_COLUMNS))
        return self._df("SELECT * FROM timeseries WHERE rts_id = ? ORDER BY year", [rts_id])

    def matches(self, rts_id: str) -> pd.DataFrame:
        """Features of published inventories matched to this slump (``rts crossref --products``):
        reference file, row, id and IoU; empty when none were recorded."""
        rts_id = check_rts_id(rts_id)
        if not self.has("matches"):
            return pd.DataFrame(columns=schema.names(schema.MATCHES_COLUMNS))
        return self._df("SELECT reference, reference_row, reference_id, iou FROM matches WHERE rts_id = ? "
                        "ORDER BY iou DESC NULLS LAST, reference", [rts_id])

    # ------------------------------------------------------------------ tiles
    def tiles(self, bbox=None, limit: int = 20_000) -> pd.DataFrame:
        """Work cells (tile_id, status, n_slumps, volume_m3, error, x0, y0, x1, y1 in EPSG:3413 m)."""
        if not self.has("tiles"):
            return pd.DataFrame(columns=["tile_id", "status", "n_slumps", "volume_m3", "error",
                                         "x0", "y0", "x1", "y1"])
        sql = ("SELECT tile_id, status, n_slumps, volume_m3, error, ST_XMin(geometry) AS x0, ST_YMin(geometry) AS y0, "
               "ST_XMax(geometry) AS x1, ST_YMax(geometry) AS y1 FROM tiles")
        params: list = []
        b = parse_bbox(bbox)
        if b:
            sql += " WHERE ST_Intersects(geometry, ST_MakeEnvelope(?, ?, ?, ?))"
            params = list(b)
        return self._df(sql + " ORDER BY tile_id LIMIT ?", params + [int(limit)])

    def tile_status_counts(self) -> dict[str, int]:
        if not self.has("tiles"):
            return {}
        return dict(self.cursor().execute("SELECT status, count(*) FROM tiles GROUP BY status").fetchall())

    # ------------------------------------------------------------------ exports
    def select_frame(self, f: Filters | None = None, limit: int | None = None):
        """The selection as a GeoDataFrame (every inventory column, EPSG:3413)."""
        import geopandas as gpd
        import shapely

        w, p = self._where(f)
        cols = [c for c in schema.names(schema.INVENTORY_COLUMNS) if c != "geometry" and c in self.columns]
        lim = " LIMIT ?" if limit else ""
        df = self._df(f"SELECT {', '.join(cols)}, ST_AsWKB(geometry) AS wkb FROM inventory{w}{lim}",
                      p + ([int(limit)] if limit else []))
        geom = shapely.from_wkb([bytes(b) for b in df.pop("wkb")]) if len(df) else []
        gdf = gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geom, crs=schema.CRS), crs=schema.CRS)
        order = [c for c in schema.names(schema.INVENTORY_COLUMNS) if c in gdf.columns]
        return gdf[order]

    def export_geoparquet(self, f: Filters | None = None) -> bytes:
        """The selection as GeoParquet 1.1 bytes (WKB, bbox covering, zstd)."""
        buf = io.BytesIO()
        self.select_frame(f).to_parquet(buf, schema_version="1.1.0", write_covering_bbox=True, compression="zstd")
        return buf.getvalue()

    def export_csv(self, f: Filters | None = None) -> bytes:
        """The selection as CSV: every column, geometry as WKT (EPSG:3413 m) plus centroid lon/lat."""
        gdf = self.select_frame(f)
        df = pd.DataFrame(gdf.drop(columns="geometry"))
        df["geometry_wkt"] = gdf.geometry.to_wkt(rounding_precision=2) if len(gdf) else []
        return df.to_csv(index=False).encode()
