"""Volume uncertainty from spatially correlated errors, not sqrt(n) shrinkage."""

from __future__ import annotations

import numpy as np

from pipeline.synth.landscape import smooth_noise
from pipeline.volume import Variogram, empirical_variogram, fit_spherical, sigma_mean_dh, volume_and_sigma


def test_uncorrelated_errors_shrink_with_sqrt_n():
    vg = Variogram(nugget=0.09, psill=0.0, range_m=1.0)
    area = 10_000.0
    assert np.isclose(sigma_mean_dh(area, 2.0, vg), np.sqrt(0.09 * 4.0 / area), rtol=1e-6)


def test_errors_correlated_beyond_the_area_do_not_shrink():
    vg = Variogram(nugget=0.0, psill=0.25, range_m=50_000.0)
    assert np.isclose(sigma_mean_dh(5_000.0, 2.0, vg), 0.5, rtol=0.01)


def test_stated_sigma_matches_the_scatter_of_mean_errors_over_random_areas():
    rng = np.random.default_rng(3)
    field = 0.3 * smooth_noise(rng, (1500, 1500), 40.0) + rng.normal(0, 0.1, (1500, 1500))
    lags, gamma, counts = empirical_variogram(field, np.ones(field.shape, bool), 2.0, max_lag_m=800.0)
    vg = fit_spherical(lags, gamma, counts)
    assert 0.05 < vg.psill < 0.15 and 0.002 < vg.nugget < 0.02  # true: 0.09 correlated, 0.01 white
    # empirical scatter of the mean over disks of 20,000 m2 at random places
    radius_px = int(np.sqrt(20_000 / np.pi) / 2.0)
    yy, xx = np.mgrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]
    disk = yy**2 + xx**2 <= radius_px**2
    means = []
    for _ in range(300):
        r, c = rng.integers(radius_px, 1500 - radius_px, 2)
        means.append(field[r - radius_px : r + radius_px + 1, c - radius_px : c + radius_px + 1][disk].mean())
    stated = sigma_mean_dh(disk.sum() * 4.0, 2.0, vg)
    assert 0.7 < stated / np.std(means) < 1.4, (stated, np.std(means))
    naive = 0.32 / np.sqrt(disk.sum())
    assert stated > 5 * naive  # sqrt(n) shrinkage would be wildly over-confident


def test_volume_is_the_loss_inside_the_mask():
    dh = np.zeros((50, 50))
    dh[10:20, 10:20] = -3.0
    mask = dh < 0
    v, s = volume_and_sigma(dh, mask, 2.0, Variogram(0.01, 0.04, 100.0))
    assert v == 3.0 * 100 * 4.0 and s > 0


def test_outline_term_is_a_band_along_the_perimeter_at_mean_depth():
    """sigma_V adds, in quadrature, the volume of a band_px-wide band along the outline at
    the slump's mean depth: a 100 m square, 5 m deep (V = 50,000 m3), 2 m pixels, a band of
    0.12 px -> 0.12 * 2 m * 400 m * 5 m = 480 m3; with a 360 m3 variogram term, 600 m3."""
    import shapely.geometry

    from pipeline.quantify import outline_sigma

    square = shapely.geometry.box(0, 0, 100, 100)
    assert abs(outline_sigma(50_000.0, 0.0, square, 2.0, 0.12) - 480.0) < 1e-6
    assert abs(outline_sigma(50_000.0, 360.0, square, 2.0, 0.12) - 600.0) < 1e-6
    # no loss, no outline term; no band, the variogram term alone
    assert outline_sigma(0.0, 360.0, square, 2.0, 0.12) == 360.0
    assert outline_sigma(50_000.0, 360.0, square, 2.0, 0.0) == 360.0
