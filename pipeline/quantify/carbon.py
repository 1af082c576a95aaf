"""Soil organic carbon density for the slumps' carbon release: a constant, or a raster in any CRS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
from pyproj import Transformer

from data_products import grid

from pipeline.config import QuantifyConfig


class CarbonDensity:
    """Soil organic carbon density (kg C m-3) at a point: a constant, or sampled from a
    raster (any CRS) where it has data, the constant elsewhere."""

    def __init__(self, cfg: QuantifyConfig):
        self.default = cfg.carbon_density_kg_m3
        self.path = cfg.carbon_raster_path
        if self.path and not Path(self.path).exists():
            raise FileNotFoundError(f"{self.path}: carbon raster not found (quantify.carbon_raster_path)")

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Density at EPSG:3413 points."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        out = np.full(x.shape, self.default)
        if not self.path or not x.size:
            return out
        with rasterio.open(self.path) as src:
            if src.crs is None:
                raise ValueError(f"{self.path}: carbon raster has no CRS")
            xs, ys = Transformer.from_crs(grid.CRS, src.crs, always_xy=True).transform(x, y)
            vals = np.array([v[0] for v in src.sample(zip(xs, ys), masked=True)], dtype=object)
        for i, v in enumerate(vals):
            if v is not np.ma.masked and np.isfinite(float(v)) and float(v) > 0:
                out[i] = float(v)
        return out
