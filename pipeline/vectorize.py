"""Raster masks to polygons (EPSG:3413), shared by the stages that outline things."""

from __future__ import annotations

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
