"""Named Arctic RTS regions, for the inventory's ``region`` column and per-region totals.

Regions are longitude/latitude boxes around the known slump hotspots (Lewkowicz & Way
2019; Nitze et al. 2018; Dai et al. 2025 Fig. 1), checked in order, so the first box
holding a centroid names it. A centroid outside every box gets a broad sector
("Alaska", "Canada", "Greenland", "Scandinavia", "Western Siberia", "Eastern Siberia")
so the column is never empty.
"""

from __future__ import annotations

import numpy as np

# name, lon_min, lon_max, lat_min, lat_max (degrees, WGS 84)
REGIONS: tuple[tuple[str, float, float, float, float], ...] = (
    ("Northwestern Canada", -140.0, -128.0, 64.0, 70.5),        # Peel Plateau, Richardson Mts, Mackenzie Delta
    ("Canadian Arctic Archipelago", -126.5, -60.0, 70.5, 83.5),  # Banks, Victoria, Ellesmere islands
    ("Alaska North Slope", -168.0, -140.0, 67.5, 72.0),
    ("Taymyr Peninsula", 85.0, 115.0, 72.0, 78.5),
    ("Yamal Peninsula", 65.0, 75.0, 66.0, 73.5),
    ("Gydan Peninsula", 75.0, 85.0, 68.0, 73.5),
    ("New Siberian Islands", 130.0, 160.0, 73.0, 77.5),
    ("Kolyma Lowland", 145.0, 165.0, 66.0, 73.0),
    ("Svalbard", 10.0, 35.0, 76.0, 81.0),
)

_SECTORS: tuple[tuple[str, float, float], ...] = (
    ("Alaska", -180.0, -141.0),
    ("Canada", -141.0, -60.0),
    ("Greenland", -60.0, -10.0),
    ("Scandinavia", -10.0, 45.0),
    ("Western Siberia", 45.0, 100.0),
    ("Eastern Siberia", 100.0, 180.0),
)


def region_of(lon: float, lat: float) -> str:
    """The region holding a point (longitude -180..180 or 0..360, latitude in degrees)."""
    lon = ((float(lon) + 180.0) % 360.0) - 180.0
    for name, x0, x1, y0, y1 in REGIONS:
        if x0 <= lon <= x1 and y0 <= lat <= y1:
            return name
    for name, x0, x1 in _SECTORS:
        if x0 <= lon < x1:
            return name
    return _SECTORS[-1][0]


def regions_of(lon: np.ndarray, lat: np.ndarray) -> list[str]:
    return [region_of(x, y) for x, y in zip(np.asarray(lon, float), np.asarray(lat, float))]
