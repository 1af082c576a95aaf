"""A static STAC catalog of strips (the generated samples' strips are published with one).

Items carry the DEM in asset ``dem``, the bitmask in ``mask`` and the matchtag in ``matchtag``, as
:func:`pipeline.strips.sources.discover_strips` reads them.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path

import numpy as np
from pyproj import Transformer


from pipeline.strips.names import Strip
from pipeline.strips.read import StripReadError, is_url, local_path, open_raster
from pipeline.strips.sources import STAC_COLLECTION_ID


log = logging.getLogger(__name__)


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
        with open_raster(s.dem) as src:
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
                        href=href if is_url(href) else local_path(href),
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

