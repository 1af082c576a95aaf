"""Terrain for family-B scenes: real relief, tundra amplitude, ice-wedge microtopography.

The relief comes from a window of a real SRTM 3" tile (``RTS_TERRAIN`` or
``../shared/data/terrain/srtm_ref.tif``): its valleys, spurs and drainage are real. The
window is detrended, its relief rescaled to the site's (tens of metres; permafrost
uplands, not the tile's mountains) and resampled by cubic splines to the 2 m scene grid,
then short-wavelength roughness is added. Without the tile a spectral (power-law) surface
stands in. Flat ground carries ice-wedge polygons: troughs 0.2-0.6 m deep along the edges
of a Voronoi tessellation of 10-20 m cells (Lachenbruch 1962; typical of ArcticDEM
surfaces over lowland tundra).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parent.parent


def terrain_source() -> Path | None:
    """The real terrain tile, when present."""
    env = os.environ.get("RTS_TERRAIN")
    for p in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "terrain" / "srtm_ref.tif"]:
        if p.is_file():
            return p
    return None


@dataclass
class Surface:
    z: np.ndarray  # float64 (ny, nx) elevation, m
    slope_deg: np.ndarray
    down_e: np.ndarray  # unit downslope vector, east component
    down_n: np.ndarray  # north component (rows grow southwards)
    res_m: float
    source: str  # "srtm:<file>" or "spectral"


def spectral_surface(rng: np.random.Generator, shape: tuple[int, int], res_m: float, beta: float,
                     low_cut_m: float, high_cut_m: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian field with power spectrum ~ k^-beta between two scales."""
    ny, nx = shape
    ky = np.fft.fftfreq(ny, d=res_m)[:, None]
    kx = np.fft.rfftfreq(nx, d=res_m)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = np.inf
    amp = k ** (-beta / 2.0)
    amp[(k < 1.0 / low_cut_m) | (k > 1.0 / high_cut_m)] = 0.0
    amp[0, 0] = 0.0
    spec = amp * (rng.normal(size=amp.shape) + 1j * rng.normal(size=amp.shape))
    f = np.fft.irfft2(spec, s=shape)
    return (f - f.mean()) / (f.std() + 1e-12)


def _srtm_window(rng: np.random.Generator, path: Path, extent_m: float) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        a = src.read(1).astype(np.float64)
        nod = src.nodata
        lat = 0.5 * (src.bounds.top + src.bounds.bottom)
        px_m = abs(src.transform.e) * 111_320.0  # north-south pixel size, m
    if nod is not None:
        a[a == nod] = np.nan
    n = int(np.ceil(extent_m / px_m)) + 4
    for _ in range(50):
        r = int(rng.integers(0, a.shape[0] - n))
        c = int(rng.integers(0, a.shape[1] - n))
        w = a[r : r + n, c : c + n]
        if np.isfinite(w).all() and np.ptp(w) > 30:
            break
    # rotate/flip so that one tile yields many distinct scenes
    w = np.rot90(w, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        w = w[:, ::-1]
    del lat
    return np.ascontiguousarray(w), px_m


def make_surface(rng: np.random.Generator, shape: tuple[int, int], res_m: float, base_m: float,
                 relief_m: float, polygon_fraction: float = 0.6) -> Surface:
    """Elevation (m) on a (ny, nx) grid of ``res_m`` pixels, north up."""
    ny, nx = shape
    extent = max(ny, nx) * res_m
    src = terrain_source()
    if src is not None:
        w, px_m = _srtm_window(rng, src, extent)
        yy, xx = np.mgrid[0 : w.shape[0], 0 : w.shape[1]]
        A = np.c_[np.ones(w.size), yy.ravel(), xx.ravel()]
        coef, *_ = np.linalg.lstsq(A, w.ravel(), rcond=None)
        w = w - (A @ coef).reshape(w.shape)
        w = w / (np.ptp(w) + 1e-9)
        rows = np.arange(ny) * res_m / px_m + 1.0
        cols = np.arange(nx) * res_m / px_m + 1.0
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        big = ndimage.map_coordinates(w, [rr, cc], order=3, mode="nearest")
        source = f"srtm:{src.name}"
    else:
        big = spectral_surface(rng, shape, res_m, beta=3.4, low_cut_m=extent * 1.5, high_cut_m=60.0)
        big = big / (np.ptp(big) + 1e-9)
        source = "spectral"
    z = base_m + relief_m * big
    z += 0.6 * spectral_surface(rng, shape, res_m, beta=2.6, low_cut_m=300.0, high_cut_m=4.0)
    slope = _slope(ndimage.gaussian_filter(z, 6.0), res_m)
    if polygon_fraction > 0:
        z += ice_wedge_troughs(rng, shape, res_m) * np.clip((4.0 - slope) / 3.0, 0.0, 1.0) * polygon_fraction
    zs = ndimage.gaussian_filter(z, 8.0)
    gy, gx = np.gradient(zs, res_m)
    norm = np.hypot(gx, gy) + 1e-9
    # rows increase southwards: north component of the gradient is -gy
    return Surface(z, _slope(zs, res_m), -gx / norm, gy / norm, res_m, source)


def _slope(z: np.ndarray, res_m: float) -> np.ndarray:
    gy, gx = np.gradient(z, res_m)
    return np.degrees(np.arctan(np.hypot(gx, gy)))


def ice_wedge_troughs(rng: np.random.Generator, shape: tuple[int, int], res_m: float) -> np.ndarray:
    """Negative relief (m) of ice-wedge troughs: Voronoi edges of 10-20 m polygons."""
    ny, nx = shape
    spacing_m = float(rng.uniform(10.0, 20.0))
    n = int(ny * nx * res_m * res_m / spacing_m**2)
    pts = np.c_[rng.uniform(0, ny, n), rng.uniform(0, nx, n)]
    tree = cKDTree(pts)
    yy, xx = np.mgrid[0:ny, 0:nx]
    d, _ = tree.query(np.c_[yy.ravel(), xx.ravel()], k=2, workers=1)
    edge = (d[:, 1] - d[:, 0]).reshape(shape) * res_m  # m from the polygon edge
    depth = float(rng.uniform(0.2, 0.6))
    return -depth * np.exp(-((edge / 1.5) ** 2))
