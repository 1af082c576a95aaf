"""A STAC collection describing a products folder (``stac/collection.json``).

One item per product table (inventory, time series, tiles) whose assets are the
GeoParquet/Parquet file and its CSV export, each asset carrying ``file:checksum``
(SHA-256 multihash), ``file:size``, and for tables ``table:columns`` and
``table:row_count``; items carry the projection fields (``proj:code`` EPSG:3413,
``proj:bbox``) and the WGS 84 bbox and geometry of the data. Every href (links and assets) is
relative (a self-contained catalog), so the folder can be moved or served as is. The
extension fields are written by pystac's extension classes (file v2.1.0, table v1.2.0,
projection v2.0.0; the collection summarises ``proj:code``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pystac
from pyproj import Transformer
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.table import Column as TableColumn
from pystac.extensions.table import TableExtension

from . import schema
from .writers import sha256_multihash, write_json

#: the extensions' schema versions (pystac's extension classes write the fields)
FILE_EXT = FileExtension.get_schema_uri()
TABLE_EXT = TableExtension.get_schema_uri()
PROJ_EXT = ProjectionExtension.get_schema_uri()

MEDIA = {".parquet": "application/vnd.apache.parquet", ".csv": "text/csv", ".md": "text/markdown",
         ".json": "application/json"}

_TO_LONLAT = Transformer.from_crs(schema.CRS, "EPSG:4326", always_xy=True)


def _lonlat_bbox(bbox_3413: tuple[float, float, float, float]) -> list[float]:
    """WGS 84 bbox of an EPSG:3413 box (its densified edge; the pole inside gives lat 90)."""
    xmin, ymin, xmax, ymax = bbox_3413
    t = np.linspace(0, 1, 41)
    up_x, up_y = xmin + (xmax - xmin) * t, ymin + (ymax - ymin) * t
    xs = np.concatenate([up_x, np.full_like(t, xmax), up_x[::-1], np.full_like(t, xmin)])
    ys = np.concatenate([np.full_like(t, ymin), up_y, np.full_like(t, ymax), up_y[::-1]])
    lon, lat = _TO_LONLAT.transform(xs, ys)
    if xmin <= 0 <= xmax and ymin <= 0 <= ymax:
        return [-180.0, float(np.min(lat)), 180.0, 90.0]
    if np.ptp(lon) > 180.0:  # crosses the antimeridian: STAC wants west > east there
        east_of_0 = np.mod(lon, 360.0)
        west, east = float(np.min(east_of_0)), float(np.max(east_of_0))
        return [west - 360.0 if west > 180.0 else west, float(np.min(lat)),
                east - 360.0 if east > 180.0 else east, float(np.max(lat))]
    return [float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))]


def _asset(products: Path, rel: str, title: str, roles: list[str]) -> pystac.Asset:
    path = products / rel
    return pystac.Asset(href=str(path.resolve()), title=title, media_type=MEDIA.get(path.suffix, None), roles=roles)


def _describe_asset(asset: pystac.Asset, path: Path, columns=None, rows: int | None = None) -> None:
    """The file extension's checksum (SHA-256 multihash) and size, and for a table its columns
    and row count (table extension), on an asset already added to its item or collection."""
    FileExtension.ext(asset, add_if_missing=True).apply(checksum=sha256_multihash(path), size=path.stat().st_size)
    if columns is None and rows is None:
        return
    table = TableExtension.ext(asset, add_if_missing=True)
    if columns is not None:
        table.columns = [TableColumn({"name": c.name, "type": "wkb" if c.name == "geometry" else str(c.type),
                                      "description": c.description + (f" [{c.unit}]" if c.unit else "")})
                         for c in columns]
    if rows is not None:
        table.row_count = int(rows)


def write_collection(products: str | Path, tables: dict[str, dict], bbox_3413, start: dt.datetime | None,
                     end: dt.datetime | None, version: str, description: str = "") -> Path:
    """Write ``products/stac/collection.json`` and its items.

    ``tables`` maps a product file name (``schema.INVENTORY`` ...) to
    {"rows": n, "csv": csv file name or None, "title": str}."""
    products = Path(products)
    if bbox_3413 is None or not np.all(np.isfinite(bbox_3413)):
        bbox_3413 = (-4e6, -4e6, 4e6, 4e6)
    bbox_3413 = [float(v) for v in bbox_3413]
    bbox = _lonlat_bbox(bbox_3413)
    geom = {"type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]],
                                                [bbox[0], bbox[3]], [bbox[0], bbox[1]]]]}
    start = start or dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    end = end or start
    coll = pystac.Collection(
        id="rts-inventory",
        title="Retrogressive thaw slumps from ArcticDEM strip time series",
        description=description or ("Active retrogressive thaw slumps (polygons of the ground that dropped), "
                                     "their volumes, yearly losses, carbon and temperature response."),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[start, end]])),
        license="CC-BY-4.0", extra_fields={"pipeline_version": version},
    )
    ProjectionExtension.summaries(coll, add_if_missing=True).code = [schema.CRS]
    for fname, info in tables.items():
        cols = schema.TABLES[fname]
        title = info.get("title", fname)
        item = pystac.Item(id=Path(fname).stem, geometry=geom, bbox=bbox, datetime=None,
                           properties={"start_datetime": start.isoformat(), "end_datetime": end.isoformat(),
                                       "title": title, "pipeline_version": version})
        ProjectionExtension.ext(item, add_if_missing=True).apply(code=schema.CRS, bbox=bbox_3413)
        item_table = TableExtension.ext(item, add_if_missing=True)
        item_table.row_count = int(info["rows"])
        if any(c.name == "geometry" for c in cols):
            item_table.primary_geometry = "geometry"
        item.add_asset("data", _asset(products, fname, title, ["data"]))
        _describe_asset(item.assets["data"], products / fname, cols, info["rows"])
        if info.get("csv"):
            item.add_asset("csv", _asset(products, info["csv"], f"{title} (CSV, WKT geometry)", ["data"]))
            _describe_asset(item.assets["csv"], products / info["csv"], None, info["rows"])
        coll.add_item(item)
    for rel, title in ((schema.DICTIONARY_MD, "Data dictionary"), (schema.DICTIONARY_JSON, "Data dictionary (JSON)")):
        if (products / rel).exists():
            key = Path(rel).stem + Path(rel).suffix.replace(".", "_")
            coll.add_asset(key, _asset(products, rel, title, ["metadata"]))
            _describe_asset(coll.assets[key], products / rel)
    # serialise with relative links into products/stac/, then write each file atomically
    root = (products / "stac").resolve()
    coll.catalog_type = pystac.CatalogType.SELF_CONTAINED  # relative links as well as assets
    coll.normalize_hrefs(str(root))
    coll.make_all_asset_hrefs_relative()
    for item in coll.get_items():
        write_json(item.get_self_href(), item.to_dict(include_self_link=False, transform_hrefs=True))
    write_json(root / "collection.json", coll.to_dict(include_self_link=False, transform_hrefs=True))
    return root / "collection.json"
