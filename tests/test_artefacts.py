"""Each class of look-alike that fooled earlier versions, built by hand: the change model
and the detector must not turn it into a slump, and must keep the real change beside it."""

import datetime as dt

import numpy as np
import pytest
from scipy import ndimage
from rasterio.transform import from_origin

from data_products import grid, timebase
from pipeline.detection.candidates import Mosaic, find_candidates
from pipeline.dem.change import detect_steps
from pipeline.dem.snow import snow_free_days_between, snow_free_window, trusted_acquisitions, untrusted_tail
from pipeline.config import CandidatesConfig, ChangeConfig
from pipeline.detection.evidence import MODEL_FILE, EvidenceModel, cluster_features


def _days(y, m, d):
    return (dt.date(y, m, d) - dt.date(2000, 1, 1)).days


# two acquisitions a summer, 2012-2021, late July and mid-August (snow-free at 70 N)
SUMMER = np.array(sorted(_days(y, 7, 25) for y in range(2012, 2022)) + sorted(_days(y, 8, 15) for y in range(2012, 2022)))
SUMMER.sort()


def _stack(dates, n=40, step_at=None, step_m=-5.0, seed=0):
    """(z, matched): flat ground at 100 m with 0.15 m noise; with ``step_at`` (days), the
    right half of the block drops by ``step_m`` after that date."""
    rng = np.random.default_rng(seed)
    z = 100.0 + rng.normal(0, 0.15, (len(dates), n, n))
    if step_at is not None:
        z[np.asarray(dates) > step_at, :, n // 2:] += step_m
    return z.astype(np.float32), np.ones(z.shape, bool)


def _blob(n, r, c, radius):
    yy, xx = np.mgrid[0:n, 0:n]
    return np.hypot(yy - r, xx - c) < radius


@pytest.mark.parametrize("which", ["first", "last", "two in the middle"])
@pytest.mark.parametrize("offset_m", [35.0, 6.0, -12.0], ids=["high cloud", "low cloud", "matching pit"])
def test_a_cloud_in_any_acquisition_leaves_no_change_and_keeps_the_real_step(which, offset_m):
    z, matched = _stack(SUMMER, step_at=SUMMER[9] + 1)
    cloud = _blob(40, 20, 10, 8)  # on the stable half
    idx = {"first": [0], "last": [len(SUMMER) - 1], "two in the middle": [6, 7]}[which]
    for k in idx:
        z[k][cloud] += offset_m
    r = detect_steps(z, matched, SUMMER, ChangeConfig(), lat_deg=70.0)
    assert np.nanmax(np.abs(r.dh[cloud])) < 1.0
    assert not (r.confidence[cloud] == 1).any()
    real = np.zeros((40, 40), bool)
    real[:, 24:] = True
    assert np.allclose(np.nanmedian(r.dh[real]), -5.0, atol=0.15)
    assert (r.t2[real] == SUMMER[10]).mean() > 0.95


def test_late_snow_in_every_june_is_not_a_step():
    junes = np.array([_days(y, 6, 20) for y in range(2012, 2022)])
    dates = np.sort(np.r_[SUMMER, junes])
    z, matched = _stack(dates)
    lee = _blob(40, 20, 20, 12)
    for k, d in enumerate(dates):
        if d in junes:
            z[k][lee] += 1.5  # drifts lying in the lee of the slope every June
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=78.0)
    assert np.nanmax(np.abs(r.dh[lee])) < 0.5
    # and the snow-free window rules the June acquisitions out as support at 78 N
    assert (r.n_before[lee] + r.n_after[lee] <= len(SUMMER)).all()


def test_snow_banks_early_in_the_snow_free_window_do_not_bias_a_drop():
    """At 70 deg N the window opens in late June; banks still lie in the lee of slopes in its
    first weeks. Here the summers after a 2016 drop each hold an early-July acquisition with
    0.8 m of snow on the scar and around it: judged against the late acquisitions of the
    summers around them, they are snow, so the drop keeps its depth and the ground beside it
    stays flat."""
    julys = np.array([_days(y, 7, 2) for y in range(2017, 2022)])
    dates = np.sort(np.r_[SUMMER, julys])
    z, matched = _stack(dates, step_at=_days(2016, 9, 1))
    lee = np.zeros((40, 40), bool)
    lee[10:30, 10:34] = True  # half on the scar (right half), half on stable ground
    for k, d in enumerate(dates):
        if d in julys:
            z[k][lee] += 0.8
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=70.0)
    scar = np.zeros((40, 40), bool)
    scar[:, 20:] = True
    assert abs(np.nanmedian(r.dh[lee & scar]) + 5.0) < 0.15  # judged as ground: 0.27 too shallow
    assert np.nanmax(np.abs(r.dh[lee & ~scar])) < 0.6


def test_late_snow_does_not_hide_a_real_drop():
    junes = np.array([_days(y, 6, 20) for y in range(2012, 2022)])
    dates = np.sort(np.r_[SUMMER, junes])
    z, matched = _stack(dates, step_at=_days(2016, 9, 1))
    for k, d in enumerate(dates):
        if d in junes:
            z[k][:, :] += 1.0
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=78.0)
    assert np.allclose(np.nanmedian(r.dh[:, 24:]), -5.0, atol=0.2)
    assert np.nanmax(np.abs(r.dh[:, :16])) < 0.6


def _mosaic(n, dh, t2, elev, support=None):
    cell = grid.cell_at(0.0, 0.0)
    conf = np.where(dh <= -1, 1, 0).astype(np.uint8)
    sup = np.full((n, n), 8, np.int16) if support is None else support
    return Mosaic(cell, from_origin(0.0, n * 2.0, 2.0, 2.0),
                  {"dh": dh.astype(np.float32), "t2": t2.astype(np.int32), "confidence": conf,
                   "elevation": elev.astype(np.float32), "n_before": sup, "n_after": sup}, (slice(0, n), slice(0, n)))


def _slope_scene(n=240):
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    before = 100.0 - 0.12 * yy  # north (row 0) is upslope, ~3.4 deg
    return yy, xx, before


def _slump(yy, xx, r, c, radius, depth):
    """A scar retreating north: deeper and later upslope, a steep headwall."""
    m = np.hypot((yy - r) * 0.8, xx - c) < radius
    up = np.clip((r + radius - yy) / (2 * radius), 0, 1)
    dh = np.where(m, -depth * (0.4 + 0.6 * up), 0.0)
    t2 = np.where(m, 4000 + (up * 9 * 365).astype(int), 6000)
    return m, dh, t2


def test_two_coalescing_scars_are_one_unit():
    yy, xx, before = _slope_scene()
    m1, d1, t1 = _slump(yy, xx, 120, 90, 28, 6.0)
    m2, d2, t2 = _slump(yy, xx, 125, 140, 26, 5.0)
    assert ndimage.label(m1 | m2)[1] == 1 and (m1 & ~m2).sum() > 1000 and (m2 & ~m1).sum() > 1000  # merged scars
    dh = np.minimum(d1, d2)
    t = np.where(m1, t1, np.where(m2, t2, 6000))
    found = find_candidates(_mosaic(240, dh, t, before + dh), CandidatesConfig())
    big = found[found.area_m2 > 1000]
    assert len(big) == 1
    assert abs(big.area_m2.iloc[0] - ((dh <= -1).sum() * 4.0)) < 1.0


def _lake(yy, xx, r, c, radius, depth):
    q = np.hypot(yy - r, xx - c) / radius
    m = q < 1
    return m, np.where(m, -depth * np.clip(1 - q, 0, 1) ** 0.25, 0.0)


@pytest.fixture(scope="module")
def shipped():
    if not MODEL_FILE.exists():
        pytest.skip(f"no evidence model at {MODEL_FILE}")
    return EvidenceModel.load(MODEL_FILE)


def test_a_lake_draining_without_a_water_flag_is_not_a_slump(shipped):
    n = 240
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    before = 50.0 + 0.002 * xx  # flat lowland
    lm, ldh = _lake(yy, xx, 120, 120, 45, 2.0)
    t2 = np.where(lm, 5400, 6000)  # one drainage event: one interval for the whole floor
    found = find_candidates(_mosaic(n, ldh, t2, before + ldh), CandidatesConfig())
    assert len(found) == 1
    assert found.ev_t2_spread_log.iloc[0] < 0.1 and found.ev_ground_slope_deg.iloc[0] < 1.0
    assert shipped.probability(found)[0] < 0.5


def test_a_retreating_scar_on_a_slope_is_a_slump(shipped):
    yy, xx, before = _slope_scene()
    m, dh, t2 = _slump(yy, xx, 120, 120, 35, 6.0)
    debris = (np.hypot(yy - 170, xx - 120) < 12)
    dh = dh + np.where(debris & ~m, 1.5, 0.0)
    found = find_candidates(_mosaic(240, dh, t2, before + dh), CandidatesConfig())
    found = found[found.area_m2 > 1000]
    assert len(found) == 1
    row = found.iloc[0]
    assert row.ev_t2_upslope_corr > 0.8 and row.ev_depth_upslope_corr > 0.8
    assert shipped.probability(found)[0] >= 0.5


def test_an_artefact_blob_supported_by_one_epoch_is_not_a_slump(shipped):
    yy, xx, before = _slope_scene()
    m = np.hypot(yy - 120, xx - 120) < 30
    dh = np.where(m, -8.0, 0.0)
    t2 = np.where(m, 7000, 6000)
    support = np.where(m, 1, 8).astype(np.int16)
    mos = _mosaic(240, dh, t2, before + dh, support)
    mos.layers["confidence"][m] = 0  # never confident: one epoch on a side
    found = find_candidates(mos, CandidatesConfig())
    assert len(found) == 1 and not found.confident.iloc[0]
    assert found.ev_support_fraction.iloc[0] == 0.0


def test_cluster_features_tell_upslope_retreat_from_one_event():
    yy, xx, before = _slope_scene(120)
    m, dh, t2 = _slump(yy, xx, 60, 60, 25, 5.0)
    f = cluster_features(dh, t2.astype(float), before + dh, m, np.full(m.shape, 5), m, np.zeros_like(m), 2.0)
    assert f["ev_t2_upslope_corr"] > 0.9 and f["ev_headwall_ratio"] > 0.3 and f["ev_support_fraction"] == 1.0
    f2 = cluster_features(dh, np.where(m, 5000.0, np.nan), before + dh, m, np.full(m.shape, 5), m, np.zeros_like(m), 2.0)
    assert f2["ev_t2_spread_log"] == 0.0 and f2["ev_t2_upslope_corr"] == 0.0


def test_a_lake_that_drains_over_several_seasons_is_still_not_published(shipped):
    """A lake shrinking over several seasons (progressive, no water flag, the classifier
    alone might accept it) is recognised by its shape: a flat-floored basin on flat ground
    whose change time does not grow upslope."""
    from pipeline.config import DetectionConfig
    from pipeline.detection.detect import EvidenceDetector
    from pipeline.detection.evidence import drained_lake

    n = 240
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    before = 50.0 + 0.002 * xx
    q = np.hypot(yy - 120, xx - 120) / 45
    lm = q < 1
    ldh = np.where(lm, -2.5 * np.clip((1 - q) / 0.2, 0, 1), 0.0)  # a shore, then a flat floor
    rng = np.random.default_rng(0)
    t2 = np.where(lm, rng.choice([5000, 5400, 5750, 6100], size=lm.shape), 6500)  # years, not by elevation
    mos = _mosaic(n, ldh, t2, before + ldh)
    found = find_candidates(mos, CandidatesConfig())
    assert len(found) == 1 and found.ev_t2_spread_log.iloc[0] > 2.0
    assert drained_lake(found, DetectionConfig()).all()
    assert len(EvidenceDetector(shipped).detect(mos, found, DetectionConfig())) == 0


def test_a_lake_whose_floor_is_not_flat_is_still_a_drained_lake_when_closed_and_low_rimmed(shipped):
    """A lake that kept a channel or a pond drains to an uneven floor, so the flat-floor test
    misses it; it is still a closed basin with a low rim on flat ground whose change time does
    not grow upslope. The same loss below a steep rim (a headwall), or retreating upslope, is
    not vetoed."""
    from pipeline.config import DetectionConfig
    from pipeline.detection.evidence import drained_lake

    n = 240
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    before = 50.0 + 0.002 * xx
    q = np.hypot(yy - 120, xx - 120) / 45
    lm = q < 1
    channel = np.abs(yy - 120) < 6
    ldh = np.where(lm, -2.5 * np.clip((1 - q) / 0.6, 0, 1) - np.where(channel, 3.0, 0.0) * (1 - q), 0.0)  # gentle shore
    rng = np.random.default_rng(1)
    t2 = np.where(lm, rng.choice([5000, 5400, 5750, 6100], size=lm.shape), 6500)
    found = find_candidates(_mosaic(n, ldh, t2, before + ldh), CandidatesConfig())
    assert len(found) == 1
    row = found.iloc[0]
    assert row.ev_floor_relief_ratio > DetectionConfig().lake_max_floor_relief_ratio  # not flat-floored
    assert row.ev_closed_rim >= 0.6 and row.ev_rim_slope_deg <= 5.0
    assert drained_lake(found, DetectionConfig()).all()
    steep = found.assign(ev_rim_slope_deg=12.0, ev_pre_surface_slope_deg=3.4, ev_pre_level_share=0.1)  # a hillside
    upslope = found.assign(ev_t2_upslope_corr=0.6)
    assert not drained_lake(steep, DetectionConfig()).any() and not drained_lake(upslope, DetectionConfig()).any()


def test_a_lake_on_sloping_ground_is_vetoed_by_its_water_level(shipped):
    """A lake dammed on 6 degree ground drains to an uneven bed over several seasons: neither
    flat-floored nor on flat ground, so only the surface before the change tells it, a
    horizontal water level. A scar cut into the same hillside is not vetoed."""
    from pipeline.config import DetectionConfig
    from pipeline.detection.detect import EvidenceDetector
    from pipeline.detection.evidence import drained_lake

    n = 240
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    ground = 100.0 - 0.21 * yy  # ~6 degrees, north upslope
    q = np.hypot(yy - 120, (xx - 120) * 0.8) / 45
    lm = q < 1
    level = float(np.percentile(ground[lm], 20))
    before = np.where(lm, level, ground)
    bed = level - 3.0 * (1 - q ** 2) - 0.8 * np.sin(xx / 7.0)  # an uneven bed
    after = np.where(lm, np.minimum(bed, level - 0.6), ground)
    rng = np.random.default_rng(2)
    t2 = np.where(lm, rng.choice([5000, 5400, 5750, 6100], size=lm.shape), 6500)
    mos = _mosaic(n, after - before, t2, after)
    found = find_candidates(mos, CandidatesConfig())
    found = found[found.area_m2 > 1000]
    assert len(found) == 1
    row = found.iloc[0]
    assert row.ev_ground_slope_deg > DetectionConfig().lake_max_ground_slope_deg  # not flat ground
    assert row.ev_pre_surface_slope_deg < 0.2 and row.ev_pre_surface_nmad_m < 0.1 and row.ev_pre_level_share > 0.9
    assert drained_lake(found, DetectionConfig()).all()
    assert len(EvidenceDetector(shipped).detect(mos, found, DetectionConfig())) == 0

    m, dh, t2s = _slump(yy, xx, 120, 120, 35, 6.0)
    scar = find_candidates(_mosaic(n, dh, t2s, ground + dh), CandidatesConfig())
    scar = scar[scar.area_m2 > 1000]
    assert len(scar) == 1 and scar.ev_pre_surface_slope_deg.iloc[0] > 5.0 and scar.ev_pre_level_share.iloc[0] < 0.2
    assert not drained_lake(scar, DetectionConfig()).any()


def test_a_retreating_scar_is_published_by_the_evidence_detector(shipped):
    from pipeline.config import DetectionConfig
    from pipeline.detection.detect import EvidenceDetector

    yy, xx, before = _slope_scene()
    m, dh, t2 = _slump(yy, xx, 120, 120, 35, 6.0)
    mos = _mosaic(240, dh, t2, before + dh)
    found = find_candidates(mos, CandidatesConfig())
    found = found[found.area_m2 > 1000]
    out = EvidenceDetector(shipped).detect(mos, found, DetectionConfig())
    assert len(out) == 1 and (out.detector == "evidence").all() and out.detector_score.iloc[0] >= 0.5


def test_auto_uses_the_detector_recorded_best_on_the_family_left_out(shipped):
    """The shipped model records how each detector scored on each family left out of
    training, and ``auto`` follows the better average (today the evidence classifier)."""
    from pipeline.config import DetectionConfig
    from pipeline.detection.detect import EvidenceDetector, auto_choice, load_detector
    from pipeline.evaluation.families import auto_detector

    meta = shipped.meta
    assert meta["auto"] in ("evidence", "rules") and set(meta["held_out_f1"]) == {"A", "B"}
    assert meta["auto"] == auto_detector(meta["held_out_f1"])
    assert auto_choice(DetectionConfig()) == meta["auto"]
    if meta["auto"] == "evidence":
        assert isinstance(load_detector(DetectionConfig()), EvidenceDetector)


def test_auto_weighs_the_families_left_out_equally_so_one_point_lost_does_not_outweigh_ten_gained():
    from pipeline.evaluation.families import auto_detector

    # the fifteen fitting samples: the classifier trails the rules by 0.01 on A, leads by 0.11 on B
    assert auto_detector({"A": {"evidence": 0.95, "rules": 0.96}, "B": {"evidence": 0.91, "rules": 0.81}}) == "evidence"
    assert auto_detector({"A": {"evidence": 0.85, "rules": 0.96}, "B": {"evidence": 0.91, "rules": 0.85}}) == "rules"
    with pytest.raises(ValueError, match="left out"):
        auto_detector({})


def _labelled_candidates(family, n, rng, upslope_cue):
    """``n`` slumps and ``n`` look-alikes of one scene family: deeper loss tells them apart in
    every family; the upslope growth of t2 does so only where ``upslope_cue``."""
    import pandas as pd
    from pipeline.detection.evidence import FEATURES

    y = np.r_[np.ones(n), np.zeros(n)].astype(int)
    t = pd.DataFrame({f: rng.normal(0.0, 1.0, 2 * n) for f in FEATURES})
    t["ev_max_loss_m"] = 4.0 + 2.0 * y + rng.normal(0.0, 1.0, 2 * n)
    t["ev_t2_upslope_corr"] = (0.8 * y if upslope_cue else 0.0) + rng.normal(0.0, 0.1, 2 * n)
    # open scars on sloping ground: never the drained-lake veto's shape
    t = t.assign(ev_floor_relief_ratio=1.0, ev_closed_rim=0.0, ev_ground_slope_deg=8.0, ev_rim_slope_deg=10.0,
                 ev_criterion_2=1.0, ev_criterion_3=1.0, criteria=3, confident=True)
    return t.assign(label=y, family=family, sample=family)


def test_the_training_penalty_is_chosen_on_the_family_left_out_so_a_cue_one_family_lacks_is_not_relied_on():
    """Trained on family B alone, where the upslope growth of t2 separates slumps perfectly, a
    weakly penalised classifier leans on that cue and misses family A's slumps, which lack it;
    a strong penalty spreads the weight over the cue both families share (depth). The penalty
    is chosen where the held-out family's validation candidates are classified best."""
    from pipeline.config import DetectionConfig
    from pipeline.evaluation.families import L2_GRID, candidate_f1, choose_l2, train_evidence

    rng = np.random.default_rng(0)
    train = {"A": [_labelled_candidates("A", 40, rng, False)], "B": [_labelled_candidates("B", 40, rng, True)]}
    validate = {"A": [_labelled_candidates("A", 100, rng, False)], "B": [_labelled_candidates("B", 100, rng, True)]}
    cfg = DetectionConfig()
    best, scores = choose_l2(train, validate, cfg)
    assert set(scores) == set(L2_GRID) and scores[best] == max(scores.values())
    assert best >= 20.0 and scores[best] > scores[L2_GRID[0]] + 0.15
    on_a = [candidate_f1(train_evidence(train["B"], l2=l2), validate["A"][0], cfg) for l2 in (L2_GRID[0], best)]
    assert on_a[0] < 0.25 and on_a[1] > on_a[0] + 0.15
    with pytest.raises(ValueError, match="validation samples"):
        choose_l2({"A": train["A"]}, {"A": validate["A"]}, cfg)
    # a decisive cue both families share: every penalty classifies perfectly, and the tie goes to the smallest
    easy = {f: [_labelled_candidates(f, 30, rng, True).pipe(
        lambda t: t.assign(ev_max_loss_m=np.where(t.label == 1, 9.0, 1.0)))] for f in "AB"}
    best, scores = choose_l2(easy, easy, cfg)
    assert set(scores.values()) == {1.0} and best == L2_GRID[0]


def test_candidate_f1_counts_the_evidence_detectors_decisions():
    """Only confident candidates with progressive retreat (criteria >= 2) can be accepted: a
    true slump without a confident pixel is a miss, a look-alike the model accepts a false slump."""
    from pipeline.config import DetectionConfig
    from pipeline.detection.evidence import FEATURES, fit
    from pipeline.evaluation.families import candidate_f1

    rng = np.random.default_rng(1)
    t = _labelled_candidates("A", 10, rng, True)
    t["ev_max_loss_m"] = np.where(t.label == 1, 8.0, 1.0)
    model = fit(t[list(FEATURES)].to_numpy(float), t.label.to_numpy(), l2=1.0)
    cfg = DetectionConfig()
    assert candidate_f1(model, t, cfg) == 1.0
    t.loc[0, "confident"] = False  # a slump: now missed
    t.loc[1, "criteria"] = 1  # a slump without progressive retreat: missed
    t.loc[15, "ev_max_loss_m"] = 8.0  # a look-alike as deep as a slump: accepted
    assert candidate_f1(model, t, cfg) == pytest.approx(2 * 8 / (2 * 8 + 3))


def _retreating_scar(z, dates, n, first_drop_m, later_drop_m, rows=slice(10, 50)):
    """A headwall retreating upslope (to lower columns) on ``z`` (in place): a first band
    (columns 44-52) that fell between the first acquisition and the second, then one band every
    three summers (each supported on both sides). Returns (first band, later bands) masks."""
    first = np.zeros((n, n), bool)
    first[rows, 44:52] = True
    later = np.zeros((n, n), bool)
    for k, c0 in enumerate((40, 36, 32)):
        band = np.zeros((n, n), bool)
        band[rows, c0:c0 + 4] = True
        for j in np.flatnonzero(dates > SUMMER[2 + 6 * k]):
            z[j][band] -= later_drop_m
        later |= band
    z[1:][:, first] -= first_drop_m
    return first, later


def test_a_band_seen_only_by_an_out_of_season_first_strip_is_restored_where_it_joins_a_retreating_scar():
    """A late-May acquisition (out of season at 70 N) is the only witness of the ground before
    a headwall's first band fell; the bands it cut in later summers are supported. The first
    band's loss is restored (never confident: one witness); a blob of the same height in that
    strip on ground that never changed, and one far higher than the scar beside it, are not."""
    dates = np.r_[_days(2011, 5, 27), SUMMER]
    n = 60
    z, matched = _stack(dates, n=n)
    first, later = _retreating_scar(z, dates, n, 6.0, 6.0)  # first band: May 2011 - July 2012
    z[0][later] += 4.0  # snow on the later bands in the May strip: not loss
    alone = _blob(n, 30, 12, 6)  # away from the scar
    z[0][alone] += 6.0
    tall = np.zeros((n, n), bool)
    tall[50:56, 34:50] = True  # touches the scar's lower end, 25 m high: a cloud
    z[0][tall] += 25.0
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=70.0)
    assert np.allclose(np.nanmedian(r.dh[later]), -6.0, atol=0.2) and np.nanmin(r.dh[later]) > -7.5
    assert np.allclose(np.nanmedian(r.dh[first]), -6.0, atol=0.3)
    assert (r.t1[first] == dates[0]).mean() > 0.95 and (r.t2[first] == dates[1]).mean() > 0.95
    assert not (r.confidence[first] == 1).any() and (r.n_before[first] <= 1).all()
    assert (r.n_after[first] >= 10).all()  # every summer after the May strip supports the new level
    assert np.nanmax(np.abs(r.dh[alone])) < 1.0
    assert np.nanmax(np.abs(r.dh[tall])) < 1.0


def test_thaw_days_are_the_days_an_acquisition_would_be_trusted_snow_free():
    """At 67.6 N the window runs from 17 June (day 169) to 30 September: nothing thaws between
    two dates of one winter or one spring, a whole year holds the window once, and the first
    trusted day counts as one."""
    cfg = ChangeConfig()
    year = np.arange(_days(2011, 1, 1), _days(2012, 1, 1))
    window = int(trusted_acquisitions(year, 67.6, cfg).sum())
    first_day = year[trusted_acquisitions(year, 67.6, cfg)][0]
    days = lambda a, b: float(snow_free_days_between(a, b, 67.6, cfg))  # noqa: E731
    assert days(_days(2010, 12, 31), _days(2011, 1, 1)) == 0
    assert days(_days(2010, 10, 10), _days(2011, 5, 26)) == 0
    assert days(_days(2011, 5, 26), _days(2011, 6, 14)) == 0
    assert days(first_day - 1, first_day) == 1
    assert days(_days(2010, 8, 1), _days(2013, 8, 1)) == 3 * window
    assert days(_days(2013, 8, 1), _days(2010, 8, 1)) == 3 * window  # symmetric
    assert np.array_equal(snow_free_days_between(np.r_[first_day - 1, first_day], first_day, 67.6, cfg), [1, 0])


@pytest.mark.parametrize("second", [(6, 14), (7, 20)])
def test_a_first_strip_seen_higher_than_the_next_is_a_band_only_if_the_ground_thawed_between_them(second):
    """At 67.6 N (Batagay) the snow-free window opens about 17 June. A 26 May strip that sits 3 m
    above a 14 June strip beside a retreating scar saw snow or a cloud: the ground could not drop
    between two spring acquisitions, and nothing is restored. Had the next strip been taken on
    20 July, the same band is the scar's first (it could have fallen in the thaw between)."""
    dates = np.r_[_days(2010, 5, 26), _days(2010, *second), SUMMER]
    n = 60
    z, matched = _stack(dates, n=n)
    first, later = _retreating_scar(z, dates, n, 3.0, 4.0)
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=67.6)
    assert np.allclose(np.nanmedian(r.dh[later]), -4.0, atol=0.2)
    if second == (6, 14):
        assert np.nanmax(np.abs(r.dh[first])) < 1.0
    else:
        assert np.allclose(np.nanmedian(r.dh[first]), -3.0, atol=0.3)
        assert (r.t2[first] == dates[1]).mean() > 0.95


def test_the_thaw_rule_can_be_switched_off():
    """``first_witness_min_thaw_days = 0`` keeps the drop of a 26 May strip 3 m above a 14 June
    one beside a scar, as revisions before 7 did."""
    dates = np.r_[_days(2010, 5, 26), _days(2010, 6, 14), SUMMER]
    z, matched = _stack(dates, n=60)
    first, _ = _retreating_scar(z, dates, 60, 3.0, 4.0)
    on = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=67.6)
    off = detect_steps(z, matched, dates, ChangeConfig(first_witness_min_thaw_days=0.0), lat_deg=67.6)
    assert np.nanmax(np.abs(on.dh[first])) < 1.0
    assert np.nanmedian(off.dh[first]) < -1.0


def test_a_scar_seen_high_in_autumn_and_filled_by_a_spring_drift_keeps_its_drop():
    """At 67.6 N a band of a retreating headwall fell in summer 2011, seen before only by
    out-of-season strips (10 October 2010, 26 May 2011). A drift filled the new scar to the old
    level by 26 May 2012 and was gone on 14 June: the last strip above the later level and the
    first at it bound no thaw, but the autumn strip and the June one bound a whole summer. The
    band keeps its 4 m drop."""
    dates = np.r_[_days(2010, 10, 10), _days(2011, 5, 26), _days(2012, 5, 26), _days(2012, 6, 14), SUMMER]
    assert not trusted_acquisitions(dates[:4], 67.6, ChangeConfig()).any()
    n = 60
    z, matched = _stack(dates, n=n)
    band, later = _retreating_scar(z, dates, n, 0.0, 4.0)
    for j in np.flatnonzero(dates > _days(2011, 8, 1)):
        z[j][band] -= 4.0
    z[2][band] += 4.0  # the drift, at the old level
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=67.6)
    assert np.allclose(np.nanmedian(r.dh[later]), -4.0, atol=0.2)
    assert np.allclose(np.nanmedian(r.dh[band]), -4.0, atol=0.3)
    assert (r.n_before[band] == 0).all()  # the step rests on no trusted epoch before it: never confident
    assert not (r.confidence[band] == 1).any()


def test_a_drop_no_thaw_can_have_made_is_refitted_on_the_observations_after_it():
    """Interpolated (matchtag 0) pixels have no trusted epoch on either side. A 26 May strip 3 m
    above a 14 June one there is refitted on the June strip and the summers after it: no drop,
    and a finite level, not an empty fit."""
    dates = np.r_[_days(2010, 5, 26), _days(2010, 6, 14), SUMMER]
    z, matched = _stack(dates, n=40)
    patch = _blob(40, 20, 20, 8)
    z[0][patch] += 3.0
    matched[:, patch] = False
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=67.6)
    assert np.isfinite(r.dh[patch]).all()
    assert np.nanmax(np.abs(r.dh[patch])) < 1.0


def test_a_shallow_band_seen_only_by_a_snow_free_strip_just_before_the_window_is_restored():
    """A 1 July strip at 74 N lies a day before the latitude's snow-free window, so the fit keeps
    it at low weight and, alone on its side, it cannot carry a step. It carried no snow: the
    2.5 m band the headwall cut before the next strip is restored (t2 at that next strip, not at
    the witness itself). A 1.2 m snow bank on unchanged ground beside the scar, and a 2.5 m blob
    away from it, are not."""
    dates = np.r_[_days(2011, 7, 1), SUMMER]
    n = 60
    z, matched = _stack(dates, n=n)
    first, later = _retreating_scar(z, dates, n, 2.5, 4.0)  # first band: July 2011 - July 2012
    bank = np.zeros((n, n), bool)
    bank[10:50, 28:32] = True  # snow in the lee of the scar's head, on ground that never changed
    z[0][bank] += 1.2
    alone = _blob(n, 52, 12, 5)
    z[0][alone] += 2.5
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=74.0)
    assert np.allclose(np.nanmedian(r.dh[first]), -2.5, atol=0.3)
    assert (r.t1[first] == dates[0]).mean() > 0.95 and (r.t2[first] == dates[1]).mean() > 0.95
    assert not (r.confidence[first] == 1).any()
    assert np.nanmax(np.abs(r.dh[bank])) < 1.0
    assert np.nanmax(np.abs(r.dh[alone])) < 1.0


def test_a_drop_after_the_second_acquisition_is_counted_once():
    """Two witnesses before the drop (the first two acquisitions), the first of them a May
    strip with 4 m of snow on the ground that later drops: the fit leaves the snowy strip out,
    and the first-witness pass must not add the same drop again, nor the snow."""
    dates = np.r_[_days(2011, 5, 27), SUMMER]
    z, matched = _stack(dates, n=40)
    early = np.zeros((40, 40), bool)
    early[5:35, 24:30] = True
    later = np.zeros((40, 40), bool)
    later[5:35, 30:36] = True
    z[2:][:, early] -= 5.0
    z[8:][:, later] -= 5.0
    z[0][early | later] += 4.0
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=70.0)
    assert np.allclose(np.nanmedian(r.dh[early]), -5.0, atol=0.2) and np.nanmin(r.dh[early]) > -6.5
    assert (r.t2[early] == dates[2]).mean() > 0.95
    assert np.allclose(np.nanmedian(r.dh[later]), -5.0, atol=0.2) and np.nanmin(r.dh[later]) > -6.5


def test_a_record_ending_with_an_early_summer_strip_still_measures_the_drop_it_shows():
    """At 80 deg N an acquisition of 4 July lies outside the snow-free window. Snow only raises
    the surface: where the newest strip lies metres below every earlier snow-free acquisition,
    the scar deepened (measured, with its date); where it lies higher, snow banks in the lee of
    the valley side, it is no change."""
    dates = np.array([_days(2010, 7, 27), _days(2010, 8, 11), _days(2012, 8, 14), _days(2014, 8, 12),
                      _days(2015, 8, 19), _days(2017, 8, 7), _days(2018, 9, 1), _days(2021, 7, 4)])
    n = 40
    z, matched = _stack(dates, n=n)
    scar = np.zeros((n, n), bool)
    scar[:, 24:] = True
    old, new = scar.copy(), scar.copy()
    old[:20] = False  # retreated before 2015 (supported), the rest only in the newest strip
    new[20:] = False
    for k in np.flatnonzero(dates > _days(2014, 9, 1)):
        z[k][old] -= 4.0
    z[-1][new] -= 3.0
    lee = _blob(n, 20, 8, 6)
    z[-1][lee] += 1.5  # late-lying snow in the newest strip
    r = detect_steps(z, matched, dates, ChangeConfig(), lat_deg=80.0)
    assert np.allclose(np.nanmedian(r.dh[old]), -4.0, atol=0.2)
    assert np.allclose(np.nanmedian(r.dh[new]), -3.0, atol=0.2)  # measured, the record ends in early July
    assert (r.t2[new] == dates[-1]).mean() > 0.95 and (r.t1[new] == dates[-2]).mean() > 0.95
    assert np.nanmax(np.abs(r.dh[lee])) < 0.6  # the snow bank is not a step


def test_a_record_ending_with_an_early_summer_strip_says_where_its_change_ends():
    """At 80 deg N the ground is trusted snow-free from mid-July: after the summer before a
    stack's newest strip of 4 July, only ground that dropped is measured (a rise could be snow),
    and the DEM stage says so (a warning in cell.json)."""
    cfg = ChangeConfig()
    dates = [timebase.days_since_epoch(d) for d in ("2014-08-12", "2017-08-07", "2018-09-01", "2021-07-04")]
    first, _ = snow_free_window(80.0, cfg)
    assert timebase.day_of_year([dates[-1]])[0] < first
    assert [str(timebase.date_of(d)) for d in untrusted_tail(dates, 80.0, cfg)] == ["2021-07-04"]
    assert untrusted_tail(dates, 65.0, cfg).size == 0  # further south, early July is snow-free
    assert untrusted_tail(dates[:3], 80.0, cfg).size == 0
