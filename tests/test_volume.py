"""Volume uncertainty from spatially correlated errors, not sqrt(n) shrinkage."""

from __future__ import annotations

import numpy as np

from pipeline.synth.landscape import smooth_noise
from pipeline.quantify.volume import Variogram, empirical_variogram, fit_variogram, sigma_mean_dh, volume_and_sigma


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
    lags, gamma, counts = empirical_variogram(field, np.ones(field.shape, bool), 2.0, max_lag_m=800.0, n_pairs=200_000,
                                             n_bins=20)
    vg = fit_variogram(lags, gamma, counts)
    assert 0.05 < vg.psill + vg.psill_long < 0.15 and 0.002 < vg.nugget < 0.02  # true: 0.09 correlated, 0.01 white
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


def test_a_field_with_short_and_long_range_errors_is_fitted_with_both_ranges():
    """DEM errors hold correlations at several scales (Hugonnet et al. 2022). A field with a
    15 m and a 300 m component: the fit finds a short and a long range near them, and the
    stated sigma of the mean over a large area follows the long-range part, which a single
    range fitted to both would understate."""
    rng = np.random.default_rng(5)
    n = 1500
    field = 0.2 * smooth_noise(rng, (n, n), 7.5) + 0.2 * smooth_noise(rng, (n, n), 150.0) + rng.normal(0, 0.05, (n, n))
    lags, gamma, counts = empirical_variogram(field, np.ones(field.shape, bool), 2.0, max_lag_m=1200.0,
                                              n_pairs=400_000, n_bins=24)
    vg = fit_variogram(lags, gamma, counts)
    assert vg.range_m < 80 < 150 < vg.range_long_m
    assert 0.5 < vg.psill_long / vg.psill < 2.0  # equal variances in truth
    radius_px = int(np.sqrt(100_000 / np.pi) / 2.0)
    yy, xx = np.mgrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]
    disk = yy**2 + xx**2 <= radius_px**2
    means = []
    for _ in range(300):
        r, c = rng.integers(radius_px, n - radius_px, 2)
        means.append(field[r - radius_px : r + radius_px + 1, c - radius_px : c + radius_px + 1][disk].mean())
    stated = sigma_mean_dh(disk.sum() * 4.0, 2.0, vg)
    assert 0.8 < stated / np.std(means) < 1.25, (stated, np.std(means))  # one range fitted: 0.76


def test_volume_is_the_loss_inside_the_mask():
    dh = np.zeros((50, 50))
    dh[10:20, 10:20] = -3.0
    mask = dh < 0
    v, s = volume_and_sigma(dh, mask, 2.0, Variogram(0.01, 0.04, 100.0))
    assert v == 3.0 * 100 * 4.0 and s > 0


def test_sigma_v_adds_the_elevation_outline_step_and_model_terms_in_quadrature():
    """A 100 m square scar of 2 m pixels, 5 m deep at its rim and 9 m inside it: rim depth
    5 m (the two pixels inside the edge), outline term 1 m * 400 m * 5 m = 2000 m3; an
    elevation term of 15,000 m3 scaled by 0.1 gives 1500 m3; a step sigma of 0.2 m on each of
    the 2,500 pixels that dropped sums to 2,000 m3, scaled by 0.6 gives 1200 m3; a model term
    of 2 % of an 80,000 m3 volume gives 1600 m3; so sigma_V =
    sqrt(2000^2 + 1500^2 + 1200^2 + 1600^2) = 3209 m3."""
    import shapely.geometry

    from pipeline.config import QuantifyConfig
    from pipeline.quantify.slumps import SigmaTerms, rim_depth, step_sigma, volume_sigma

    dh = np.zeros((70, 70), np.float32)
    mask = np.zeros(dh.shape, bool)
    mask[10:60, 10:60] = True
    dh[mask] = -5.0
    dh[12:58, 12:58] = -9.0
    assert rim_depth(dh, mask) == 5.0
    dh_sigma = np.where(mask, 0.2, 5.0).astype(np.float32)  # stable ground's sigma never counts
    steps = step_sigma(dh_sigma, mask & (dh <= -1), 2.0)
    assert abs(steps - 2000.0) < 1e-3
    square = shapely.geometry.box(0, 0, 100, 100)
    cfg = QuantifyConfig(outline_sigma_m=1.0, elevation_sigma_scale=0.1, step_sigma_scale=0.6,
                         model_sigma_fraction=0.02)
    terms = SigmaTerms(elevation_m3=15_000.0, outline_m2=square.length * 5.0, step_m3=steps)
    assert abs(volume_sigma(terms, 80_000.0, cfg) - np.sqrt(2000**2 + 1500**2 + 1200**2 + 1600**2)) < 1e-2
    # a rim that did not drop adds nothing; no band, no step term, no volume: the scaled elevation term alone
    assert rim_depth(np.where(mask, 1.0, 0.0), mask) == 0.0
    assert abs(volume_sigma(SigmaTerms(15_000.0, 0.0, 0.0), 0.0, cfg) - 1500.0) < 1e-6
    only_elevation = QuantifyConfig(outline_sigma_m=0.0, elevation_sigma_scale=1.0, step_sigma_scale=0.0,
                                    model_sigma_fraction=0.0)
    assert abs(volume_sigma(terms, 80_000.0, only_elevation) - 15_000.0) < 1e-2
