"""Raster masks to polygons (EPSG:3413), shared by the stages that outline things."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from scipy import ndimage

from data_products import grid


def mask_to_geometry(mask: np.ndarray, transform) -> shapely.Geometry | None:
    """The union of the mask's pixels as one (multi)polygon, None when empty."""
    geoms = [shapely.geometry.shape(g) for g, v in
             rasterio.features.shapes(mask.astype(np.uint8), mask=mask, transform=transform) if v == 1]
    return shapely.union_all(geoms) if geoms else None


def clusters_to_polygons(mask: np.ndarray, transform, min_area_m2: float) -> list[shapely.Geometry]:
    """One geometry per 8-connected cluster of ``mask`` of at least ``min_area_m2``."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    px_m2 = abs(transform.a * transform.e)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:] * px_m2
    keep = np.zeros(n + 1, bool)
    keep[1:] = sizes >= min_area_m2
    lab = np.where(keep[lab], lab, 0).astype(np.int32)
    parts: dict[int, list] = {}
    for g, v in rasterio.features.shapes(lab, mask=lab > 0, transform=transform, connectivity=8):
        parts.setdefault(int(v), []).append(shapely.geometry.shape(g))
    return [shapely.union_all(v) for v in parts.values()]


def cells_of(geom: shapely.Geometry) -> list[str]:
    """Ids of the work cells a geometry overlaps with a non-zero area."""
    return sorted(c.id for c in grid.cells_in_bounds(geom.bounds) if geom.intersection(shapely.box(*c.bounds)).area > 0)


# --------------------------------------------------------------------------- detections
DETECTION_COLUMNS = ["geometry", "detector", "detector_score", "criteria"]


def empty_detections() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"detector": [], "detector_score": [], "criteria": []},
                            geometry=gpd.GeoSeries([], crs=grid.CRS), crs=grid.CRS)[DETECTION_COLUMNS]


def clean_polygon(geom, min_hole_m2: float):
    """Fill holes smaller than ``min_hole_m2`` and drop slivers narrower than
    sqrt(min_hole_m2)/2 (an opening by a buffer out and back); keeps the largest part's
    topology otherwise. Returns a Polygon or MultiPolygon (possibly empty)."""
    if geom is None or geom.is_empty:
        return geom
    w = np.sqrt(min_hole_m2) / 4.0
    opened = geom.buffer(-w, join_style="mitre").buffer(w, join_style="mitre")
    if opened.is_empty:
        return opened
    opened = opened.intersection(geom)  # opening never grows the outline
    parts = []
    for poly in getattr(opened, "geoms", [opened]):
        if poly.geom_type != "Polygon" or poly.area < min_hole_m2:
            continue
        holes = [r for r in poly.interiors if shapely.Polygon(r).area >= min_hole_m2]
        parts.append(shapely.Polygon(poly.exterior, holes))
    if not parts:
        return shapely.Polygon()
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
