"""A small Arctic land layer for the offline polar map, and a graticule, in EPSG:3413.

The land outlines come from Natural Earth's 1:110m countries ("naturalearth_lowres"),
public domain (naturalearthdata.com: "All versions of Natural Earth raster + vector map
data found on this website are in the public domain"). A copy ships inside the pyogrio
wheel's test fixtures, so deriving the layer needs no network:

    python -m data_products.land          # rewrites data_products/arctic_land.geojson

Derivation: countries clipped to latitudes >= 45 °N (densified first so the clip edge
follows the parallel), dissolved to land, reprojected to EPSG:3413, simplified to 2 km,
coordinates rounded to 100 m; parts smaller than 200 km² are dropped. The committed file
is a few hundred kilobytes at most and is what the dashboard reads.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from data_products import schema

LAND_FILE = Path(__file__).with_name("arctic_land.geojson")
MIN_LAT = 45.0
SIMPLIFY_M = 2_000.0
MIN_AREA_M2 = 200e6
ATTRIBUTION = "Land: Natural Earth 1:110m (public domain)"


def natural_earth_path() -> Path:
    """naturalearth_lowres.shp inside the installed pyogrio package (its test fixtures)."""
    import pyogrio

    p = Path(pyogrio.__file__).parent / "tests" / "fixtures" / "naturalearth_lowres" / "naturalearth_lowres.shp"
    if not p.is_file():
        raise FileNotFoundError(f"{p} is absent: this pyogrio build ships no test fixtures")
    return p


def build_land(source: Path | None = None, out: Path = LAND_FILE) -> Path:
    """Derive the Arctic land layer from Natural Earth low-res and write it as GeoJSON (EPSG:3413)."""
    import geopandas as gpd
    import shapely

    src = gpd.read_file(source or natural_earth_path())
    land = shapely.union_all(shapely.segmentize(src.geometry.make_valid().to_numpy(), 0.5))
    clip = shapely.segmentize(shapely.box(-180.0, MIN_LAT, 180.0, 90.0), 0.5)
    arctic = gpd.GeoSeries([shapely.intersection(land, clip)], crs="EPSG:4326").to_crs(schema.CRS)
    parts = arctic.explode(index_parts=False)
    parts = parts[parts.area >= MIN_AREA_M2].simplify(SIMPLIFY_M, preserve_topology=True)
    parts = parts[~parts.is_empty]
    parts = gpd.GeoSeries(shapely.set_precision(parts.to_numpy(), 100.0), crs=schema.CRS)
    parts = parts[~parts.is_empty & (parts.area >= MIN_AREA_M2)]
    gdf = gpd.GeoDataFrame({"source": ["Natural Earth 1:110m (public domain)"] * len(parts)},
                           geometry=parts.to_numpy(), crs=schema.CRS)
    text = gdf.to_json(drop_id=True)
    fc = json.loads(text)
    fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3413"}}
    fc["attribution"] = ATTRIBUTION
    out.write_text(json.dumps(fc, separators=(",", ":")))
    return out


@lru_cache(maxsize=1)
def land_polygons() -> list[list[list[list[float]]]]:
    """Land as a list of polygons, each a list of rings of [x, y] (EPSG:3413 m), for deck.gl."""
    fc = json.loads(LAND_FILE.read_text())
    out = []
    for feat in fc["features"]:
        g = feat["geometry"]
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        out.extend(polys)
    return out


def graticule(lat_step: float = 10.0, lon_step: float = 30.0, min_lat: float = 50.0
              ) -> list[dict]:
    """Parallels and meridians as paths of [x, y] (EPSG:3413 m) with a ``label``."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", schema.CRS, always_xy=True)
    out = []
    for lat in np.arange(min_lat, 90.0, lat_step):
        lon = np.linspace(-180, 180, 181)
        x, y = tr.transform(lon, np.full_like(lon, lat))
        out.append({"path": np.round(np.c_[x, y], 0).tolist(), "label": f"{lat:.0f}N"})
    for lon0 in np.arange(-180.0, 180.0, lon_step):
        lat = np.linspace(min_lat, 90.0, 41)
        x, y = tr.transform(np.full_like(lat, lon0), lat)
        out.append({"path": np.round(np.c_[x, y], 0).tolist(), "label": f"{abs(lon0):.0f}{'W' if lon0 < 0 else 'E'}"})
    return out


if __name__ == "__main__":
    p = build_land()
    print(f"{p}: {p.stat().st_size / 1024:.0f} KiB, {len(land_polygons())} polygons")
