"""DEM time-series core: coregistration, bundle adjustment, per-pixel step, curvature.

The accuracy tests run the DEM stage on two cells of the sample region and compare with
its truth (which no pipeline stage reads).
"""

from __future__ import annotations

import numpy as np
import rasterio

from data_products import grid, schema

from pipeline.dem.cell import RASTERS, process_cell, write_cell_rasters
from pipeline.dem.change import detect_steps
from pipeline.config import ChangeConfig, Config, CoregConfig
from pipeline.dem.coreg import bundle_adjust, coregister_stack, nuth_kaab
from pipeline.evaluation.evaluate import cell_truth, expected_t2, offset_errors, thaw_season
from pipeline.dem.terrain import total_curvature

# ----------------------------------------------------------------------------- accuracy on the sample


def test_recovered_strip_offsets_match_the_injected_ones(sample, processed_cells):
    out, _ = sample
    errs = np.vstack([offset_errors(r.coreg_table(), out, grid.parse_cell_id(cid)) for cid, r in processed_cells.items()])
    rmse_h = float(np.sqrt(np.mean(errs[:, 0] ** 2 + errs[:, 1] ** 2)))
    rmse_z = float(np.sqrt(np.mean(errs[:, 2] ** 2)))
    assert rmse_h <= 0.25, rmse_h
    assert rmse_z <= 0.10, rmse_z


def test_each_strip_of_a_cell_is_recorded_with_the_sensor_its_name_gives(processed_cells):
    """cell.json's coregistration table names the sensor of every strip (the Slump page shows it)."""
    from pipeline.strips.names import parse_strip_name

    for r in processed_cells.values():
        rows = r.coreg_table()
        assert rows and all(row["sensor"] == parse_strip_name(row["strip"]).sensor for row in rows)


def test_dh_inside_true_slumps_matches_the_true_change(sample, processed_cells):
    out, _ = sample
    errors = []
    for cid, r in processed_cells.items():
        t = cell_truth(out, grid.parse_cell_id(cid))
        active = t["class"] == 1
        errors.append(np.abs(r.change.dh[active] - t["true_dh"][active]))
    errors = np.concatenate(errors)
    assert errors.size > 1000
    assert np.nanmedian(errors) <= 0.3, np.nanmedian(errors)


def test_t2_falls_in_the_right_thaw_season(sample, processed_cells):
    """Right = the season of the first acquisition after the true drop that saw the pixel."""
    out, _ = sample
    hits, total = 0, 0
    for cid, r in processed_cells.items():
        cell = grid.parse_cell_id(cid)
        t = cell_truth(out, cell)
        active = t["class"] == 1
        exp = expected_t2(out, cell, np.where(active, t["change_time"], np.nan))
        ok = active & (exp > 0) & (r.change.t2 > 0)
        hits += int(np.sum(thaw_season(r.change.t2[ok]) == thaw_season(exp[ok])))
        total += int(np.sum(active & (exp > 0)))
    assert total > 1000
    assert hits / total >= 0.90, hits / total


def test_stable_ground_stays_stable_despite_clouds_and_snow(sample, processed_cells):
    out, _ = sample
    big, n = 0, 0
    for cid, r in processed_cells.items():
        t = cell_truth(out, grid.parse_cell_id(cid))
        stable = (t["class"] == 0) & (np.abs(t["true_dh"]) < 0.05)
        dh = r.change.dh[stable]
        big += int(np.sum(np.abs(np.nan_to_num(dh)) > 1.0))
        n += int(stable.sum())
    assert big / n < 0.01, big / n


def test_cell_rasters_are_cogs_on_the_cell_grid(tmp_path, processed_cells):
    cid, r = next(iter(processed_cells.items()))
    folder = write_cell_rasters(r, tmp_path, Config())
    cell = grid.parse_cell_id(cid)
    for name in RASTERS:
        with rasterio.open(folder / f"{name}.tif") as src:
            assert src.crs.to_epsg() == 3413 and src.res == (2.0, 2.0)
            assert tuple(src.bounds) == cell.bounds
            assert src.profile.get("tiled") and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert not list(folder.glob(".*.tmp"))
    assert (folder / schema.CELL_META).exists()


# ----------------------------------------------------------------------------- method, on constructed data


def _terrain(n=400, res=2.0, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n] * res
    z = 30 * np.sin(x / 150.0) * np.cos(y / 110.0) + 0.02 * x + 5 * np.sin((x + y) / 47.0)
    return z, rng


def _shifted(z, dx, dy, dz, res=2.0):
    from scipy import ndimage

    return ndimage.shift(z, (-dy / res, dx / res), order=3, mode="nearest") + dz


def test_nuth_kaab_recovers_a_known_shift():
    z, rng = _terrain()
    b = _shifted(z, 3.2, -1.7, 2.5) + rng.normal(0, 0.1, z.shape)
    f = nuth_kaab(z, b, 2.0, CoregConfig(halo_m=0))
    assert f.ok, f.reason
    assert abs(f.dx - 3.2) < 0.1 and abs(f.dy + 1.7) < 0.1 and abs(f.dz - 2.5) < 0.05


def test_high_pass_removes_long_wavelength_errors_from_the_horizontal_fit():
    """Correlated errors of hundreds of metres masquerade as shifts; filtering both DEMs
    with the same high-pass keeps the shift model exact and removes them."""
    from pipeline.synth.landscape import smooth_noise

    z, rng = _terrain(700)
    z = z + 1.5 * smooth_noise(rng, z.shape, 10.0)  # metre-scale relief at 20 m
    a = z + 0.25 * smooth_noise(rng, z.shape, 80.0)
    b = _shifted(z, 1.4, -2.2, 0.0) + 0.25 * smooth_noise(rng, z.shape, 80.0)
    plain = nuth_kaab(a, b, 2.0, CoregConfig(highpass_sigma_m=0.0))
    hp = nuth_kaab(a, b, 2.0, CoregConfig())
    err = lambda f: np.hypot(f.dx - 1.4, f.dy + 2.2)  # noqa: E731
    assert err(hp) < 0.1
    assert err(hp) < err(plain)


def test_bundle_adjustment_rejects_a_blunder_dem_and_reports_why():
    z, rng = _terrain(300)
    offs = [(1.0, 0.5, 2.0), (-2.0, 1.0, -1.0), (0.5, -1.5, 0.5), (0.0, 2.0, -2.0), (1.5, 0.0, 1.0)]
    stack = [_shifted(z, *o) + rng.normal(0, 0.1, z.shape) for o in offs]
    stack[2] = stack[2] + rng.normal(0, 20.0, z.shape)  # a blunder DEM: clouds everywhere
    stack = np.stack(stack).astype(np.float32)
    res = coregister_stack(stack, np.ones(stack.shape, bool), 2.0, CoregConfig(halo_m=0))
    assert not res.offsets[2].used and "NMAD" in res.offsets[2].reason
    used = [k for k in range(5) if res.offsets[k].used]
    rec = np.array([[res.offsets[k].dx, res.offsets[k].dy, res.offsets[k].dz] for k in used])
    tru = np.array([offs[k] for k in used])
    err = (rec - rec.mean(0)) - (tru - tru.mean(0))
    assert np.abs(err).max() < 0.1
    assert all(np.isfinite(res.offsets[k].residual_rms_m) for k in used)


def test_the_pair_graph_grows_linearly_stays_connected_and_gives_each_dem_several_partners():
    """Each DEM is paired with its 3 nearest overlapping DEMs in time and a long-baseline
    partner: O(k n) pairs instead of n(n-1)/2, one connected graph (the bundle adjustment
    needs one), and at least three partners per DEM so that a blunder can be outvoted."""
    from pipeline.dem.coreg import pair_graph

    for n in (5, 17, 46):
        pairs = pair_graph(np.ones((n, n), bool), 3, 1)
        assert len(pairs) <= 3 * n
        degree = np.bincount(np.ravel(pairs), minlength=n)
        assert degree.min() >= 3
        seen, todo = {0}, [0]
        while todo:
            k = todo.pop()
            for i, j in pairs:
                for a, b in ((i, j), (j, i)):
                    if a == k and b not in seen:
                        seen.add(b)
                        todo.append(b)
        assert len(seen) == n
    assert len(pair_graph(np.ones((46, 46), bool), 0, 0)) == 46 * 45 // 2  # 0: every pair
    # two groups that overlap only through one pair are joined through it
    ov = np.zeros((8, 8), bool)
    ov[:4, :4] = ov[4:, 4:] = True
    ov[3, 6] = ov[6, 3] = True
    np.fill_diagonal(ov, False)
    assert (3, 6) in pair_graph(ov, 2, 0)


def test_offsets_from_the_pair_graph_match_those_from_every_pair():
    z, rng = _terrain(300)
    offs = [(1.0, 0.5, 2.0), (-2.0, 1.0, -1.0), (0.5, -1.5, 0.5), (0.0, 2.0, -2.0), (1.5, 0.0, 1.0),
            (-1.0, -1.0, 0.0), (2.0, 1.5, -0.5), (-0.5, 0.5, 1.5)]
    stack = np.stack([_shifted(z, *o) + rng.normal(0, 0.1, z.shape) for o in offs]).astype(np.float32)
    ones = np.ones(stack.shape, bool)
    sparse = coregister_stack(stack, ones, 2.0, CoregConfig(halo_m=0, pair_neighbours=2, pair_long_baseline=1))
    full = coregister_stack(stack, ones, 2.0, CoregConfig(halo_m=0, pair_neighbours=0))
    assert len(sparse.pairs) < len(full.pairs) == 28
    for res in (sparse, full):
        rec = np.array([[o.dx, o.dy, o.dz] for o in res.offsets])
        err = (rec - rec.mean(0)) - (np.array(offs) - np.mean(offs, 0))
        assert np.abs(err).max() < 0.1


def test_bundle_adjustment_drops_an_inconsistent_pair():
    from pipeline.dem.coreg import PairFit

    truth = np.array([0.0, 1.0, 2.0, 3.0])
    pairs = [PairFit(i, j, dx=truth[j] - truth[i], dy=0.0, dz=0.0, nmad_m=0.2, sigma_dx=0.05, sigma_dy=0.05,
                     sigma_dz=0.05, n_used=1000, ok=True) for i in range(4) for j in range(i + 1, 4)]
    pairs[0].dx += 5.0  # one bad pair
    res = bundle_adjust(4, pairs, CoregConfig())
    assert any(p[:2] == (0, 1) for p in res.rejected_pairs)
    rec = np.array([o.dx for o in res.offsets])
    assert np.allclose(rec - rec.mean(), truth - truth.mean(), atol=0.01)


def _series(values, n_px=4):
    z = np.array(values, dtype=np.float32)[:, None, None] * np.ones((1, 1, n_px), np.float32)
    return z


DATES = np.array([4200, 4570, 4930, 5300, 5660, 6030, 6390, 6760])  # ~yearly, mid-summer


def test_step_model_finds_the_drop_its_dates_and_sigma():
    z = _series([100, 100.1, 99.9, 100, 95.0, 95.1, 94.9, 95.0])
    r = detect_steps(z, np.ones(z.shape, bool), DATES, ChangeConfig())
    assert np.allclose(r.dh, -5.0, atol=0.1)
    assert (r.t1 == DATES[3]).all() and (r.t2 == DATES[4]).all()
    assert (r.dh_sigma < 0.5).all() and (r.n_obs == 8).all()
    assert (r.confidence == 1).all()


def test_step_model_rejects_an_unflagged_cloud_at_the_end_of_the_series():
    z = _series([100, 100.1, 99.9, 100, 100.1, 99.9, 100, 140.0])
    r = detect_steps(z, np.ones(z.shape, bool), DATES, ChangeConfig())
    assert np.all(np.abs(r.dh) < 0.5)


def test_step_model_rejects_spring_snow_and_keeps_interpolated_observations_at_low_weight():
    dates = DATES.copy()
    dates[2] = 4880  # a spring acquisition (May)
    z = _series([100, 100.1, 102.5, 100, 96.0, 96.1, 95.9, 96.0])
    matched = np.ones(z.shape, bool)
    matched[5] = False
    z[5] = 90.0  # an interpolated observation far off
    r = detect_steps(z, matched, dates, ChangeConfig())
    assert np.allclose(r.dh, -4.0, atol=0.2)
    assert (r.t2 == dates[4]).all()


def test_a_single_spring_dem_cannot_carry_a_step_alone():
    dates = DATES.copy()
    dates[0] = 4150 - 60  # first acquisition in spring with snow drift
    z = _series([101.5, 100, 100.1, 99.9, 100, 100.1, 99.9, 100])
    r = detect_steps(z, np.ones(z.shape, bool), dates, ChangeConfig())
    assert np.all(np.abs(r.dh) < 0.5)


def test_pixels_with_too_few_dems_are_nodata_not_a_crash():
    z = _series([100, 95])
    r = detect_steps(z, np.ones(z.shape, bool), DATES[:2], ChangeConfig())
    assert np.isnan(r.dh).all() and (r.confidence == 255).all() and (r.t2 == -9999).all()


def test_total_curvature_of_a_paraboloid():
    y, x = np.mgrid[0:100, 0:100] * 2.0
    z = 0.01 * x**2 + 0.02 * y**2  # z_xx = 0.02, z_yy = 0.04, z_xy = 0
    k = total_curvature(z, 2.0)
    assert np.allclose(k[10:-10, 10:-10], 0.02**2 + 0.04**2, rtol=1e-6)


# ----------------------------------------------------------------------------- bad input


def _one_cell_stack(tmp_path, n, transform_values):
    """Write ``n`` tiny strips over one cell; ``transform_values(k, z)`` edits strip k."""
    from pipeline.strips.sources import discover_strips

    cell = grid.cell_at(-2_496_500.0, 9_500.0)
    z, rng = _terrain(1000 + 32, 2.0, 1)
    tr = cell.transform(2.0, 32.0)
    for k in range(n):
        arr = (_shifted(z, 0.5 * k, -0.3 * k, 0.2 * k) + 100 + rng.normal(0, 0.1, z.shape)).astype(np.float32)
        arr, bm = transform_values(k, arr)
        name = f"SETSM_s2s041_WV01_2015{7 + k // 28:02d}{1 + k % 28:02d}_10200100AAAA{k:04d}_10200100BBBB{k:04d}_2m_lsf_seg1"
        for suffix, data, dtype in (("dem", arr, "float32"), ("bitmask", bm, "uint8"),
                                    ("matchtag", np.ones(arr.shape, np.uint8), "uint8")):
            with rasterio.open(tmp_path / f"{name}_{suffix}.tif", "w", driver="GTiff", width=arr.shape[1],
                               height=arr.shape[0], count=1, dtype=dtype, crs="EPSG:3413", transform=tr,
                               nodata=-9999 if suffix == "dem" else None) as dst:
                dst.write(data.astype(dtype), 1)
    return cell, discover_strips(tmp_path)


def test_a_cell_with_two_dems_gives_nodata_change_and_says_so(tmp_path):
    cell, strips = _one_cell_stack(tmp_path, 2, lambda k, a: (a, np.zeros(a.shape, np.uint8)))
    r = process_cell(strips, cell, Config(coreg=CoregConfig(halo_m=32.0)), warn=lambda m: None)
    assert r.status == "too_few_dems"
    assert np.isnan(r.change.dh).all()
    assert any("fewer than 3" in w for w in r.warnings)


def test_strips_without_valid_pixels_in_the_cell_are_left_out(tmp_path):
    def edit(k, a):
        bm = np.zeros(a.shape, np.uint8)
        if k == 1:
            bm[:] = 4  # fully cloud-masked window
        if k == 2:
            a[:] = -9999  # no data at all
        return a, bm

    cell, strips = _one_cell_stack(tmp_path, 6, edit)
    r = process_cell(strips, cell, Config(coreg=CoregConfig(halo_m=32.0)), warn=lambda m: None)
    assert len(r.strips) == 4 and r.status == "ok"
    assert np.nanmedian(np.abs(r.change.dh)) < 0.3


def test_an_all_masked_cell_reports_no_data(tmp_path):
    cell, strips = _one_cell_stack(tmp_path, 3, lambda k, a: (a, np.full(a.shape, 1, np.uint8)))
    r = process_cell(strips, cell, Config(coreg=CoregConfig(halo_m=32.0)), warn=lambda m: None)
    assert r.status == "no_data" and r.change is None
