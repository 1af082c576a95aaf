"""Mask R-CNN slump detection: chips, augmentation, training reproducibility, the shipped
weights on the held-out test sample (seed 11), cell-edge ownership, look-alikes."""

from __future__ import annotations

import socket

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch

from data_products import grid
from pipeline.detection import maskrcnn
from pipeline.detection import training
from pipeline.detection.candidates import find_candidates, read_mosaic
from pipeline.dem.change import NODATA_DATE
from pipeline.config import Config, DetectionConfig
from pipeline.detection.detect import DETECTION_COLUMNS, detect_slumps, load_detector
from pipeline.publish.inventories import match_inventories

#: the issue's goal, F1 at IoU >= 0.5 on held-out scenes with look-alikes present
GOAL_F1 = 0.90
#: what the shipped weights are asserted to reach on the test sample's Peel Plateau cells
#: (seed 11, never trained on): measured 1.00 (10 of 10, no false positive); the margin allows
#: one miss and one false alarm (see docs/detection.md)
MIN_F1_FIXTURE = 0.85


# ---------------------------------------------------------------------------------------------
# chips


def test_band_order_and_normalisation():
    n = 64
    dh = np.zeros((n, n), np.float32)
    dh[10:30, 10:30] = -8.0  # a scar
    dh[40:44, 40:44] = 2.0   # debris
    dh[0, 0] = np.nan
    curv = np.full((n, n), 1e-5, np.float32)
    curv[10, 10:30] = 1e-3   # headwall
    curv[1, 1] = np.nan
    t2 = np.full((n, n), 5000, np.int32)
    t2[10:30, 10:30] = 5000 + 365 * np.arange(20)[:, None] // 5  # a rainbow down the scar
    t2[2, 2] = NODATA_DATE
    b = maskrcnn.normalise_bands(dh, curv, t2)
    assert b.shape == (3, n, n) and b.dtype == np.float32
    assert maskrcnn.BANDS == ("dh", "curvature", "t2")
    # band 0: dh / 4 clipped to [-3, 3]
    assert b[0, 20, 20] == pytest.approx(-2.0) and b[0, 41, 41] == pytest.approx(0.5) and b[0, 50, 50] == 0
    # band 1: log10(K + 1e-7) + 5: ordinary ground ~0, the headwall ~2
    assert b[1, 50, 50] == pytest.approx(np.log10(1.01e-5) + 5, abs=1e-5)
    assert b[1, 10, 20] == pytest.approx(np.log10(1e-3 + 1e-7) + 5, abs=1e-5)
    # band 2: t2 relative to the median t2 of the loss pixels, in units of 3 years; 0 off change
    ref = np.median(t2[10:30, 10:30])
    assert b[2, 29, 20] == pytest.approx((t2[29, 20] - ref) / 1095.0, abs=1e-5)
    assert b[2, 10, 20] < 0 < b[2, 29, 20]
    assert b[2, 50, 50] == 0
    assert b[2, 41, 41] == pytest.approx((5000 - ref) / 1095.0, abs=1e-5)  # debris changed too
    # each band's no data stays NaN until the model input, where it becomes 0; t2 matters only
    # where the ground changed (a missing date on unchanged ground is just 0)
    assert np.isnan(b[0, 0, 0]) and np.isnan(b[2, 0, 0]) and np.isfinite(b[1, 0, 0])
    assert np.isnan(b[1, 1, 1]) and b[2, 2, 2] == 0
    x = maskrcnn.downsample(b, 2)
    assert x.shape == (3, n // 2, n // 2) and np.isfinite(x).all()
    assert x[0, 10, 10] == pytest.approx(-2.0)
    assert x[0, 0, 0] == pytest.approx(b[0, :2, :2][np.isfinite(b[0, :2, :2])].mean())  # NaN left out of the mean


def test_chip_window_pads_outside_the_mosaic():
    a = np.arange(100, dtype=np.float32).reshape(10, 10)
    w = maskrcnn.window(a, -2, 8, 4, np.nan)
    assert np.isnan(w[:2]).all() and np.isnan(w[:, 2:]).all()
    assert (w[2:, :2] == a[0:2, 8:10]).all()
    layers = {"dh": np.full((10, 10), -2.0, np.float32), "curvature": np.full((10, 10), 1e-5, np.float32),
              "t2": np.full((10, 10), 6000, np.int32)}
    c = maskrcnn.chip_bands(layers, 5, 5, 8)
    assert c.shape == (3, 8, 8) and np.isnan(c[:, 6:, :]).all() and np.isfinite(c[:, :5, :5]).all()


# ---------------------------------------------------------------------------------------------
# augmentation


def _toy_chip(rng, size=64):
    masks = np.zeros((2, size, size), bool)
    masks[0, 8:30, 10:22] = True
    masks[1, 40:58, 36:60] = True
    img = rng.normal(0, 0.1, (3, size, size)).astype(np.float32)
    img[0] = masks[0] * -2.0 + masks[1] * -1.0  # the dh band draws the instances
    return img, masks


def test_augmentation_keeps_masks_and_boxes_consistent():
    rng = np.random.default_rng(3)
    img, masks = _toy_chip(rng)
    seen_k = set()
    for _ in range(12):
        a_img, a_masks = training.augment(img, masks, rng)
        assert a_img.shape == img.shape and a_masks.shape[1:] == masks.shape[1:]
        # the image moved with the masks: instance 0 is where band 0 is about -2
        drawn = np.abs(np.nan_to_num(a_img[0]) + 2.0) < 0.5
        inter = (drawn & a_masks[0]).sum()
        assert inter / (drawn | a_masks[0]).sum() > 0.85
        seen_k.add(a_masks[0].sum() == masks[0].sum())
        x, t = training.model_target(a_img, a_masks, 2)
        assert x.shape == (3, 32, 32) and torch.isfinite(x).all()
        assert len(t["boxes"]) == len(t["masks"]) == len(t["labels"])
        for box, m in zip(t["boxes"].numpy(), t["masks"].numpy().astype(bool)):
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            assert tuple(box) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)  # tight, same pixels
    # pure rotations and flips preserve areas exactly
    _, a_masks = training.augment(img, masks, np.random.default_rng(0), scale_range=None)
    assert sorted(a_masks.sum((1, 2))) == sorted(masks.sum((1, 2)))


def test_zoom_scales_the_instance_area():
    rng = np.random.default_rng(1)
    img, masks = _toy_chip(rng)
    for _ in range(6):
        _, a_masks = training.augment(img, masks, rng, scale_range=(0.8, 1.25))
        ratio = a_masks[0].sum() / masks[0].sum()
        assert 0.8 ** 2 * 0.85 < ratio < 1.25 ** 2 * 1.15


# ---------------------------------------------------------------------------------------------
# training


def _toy_chips(n=4, size=256, seed=0):
    rng = np.random.default_rng(seed)
    chips = []
    for i in range(n):
        img = np.zeros((3, size, size), np.float32)
        masks = np.zeros((1, size, size), bool) if i % 2 == 0 else np.zeros((0, size, size), bool)
        if len(masks):
            r, c = rng.integers(60, 140, 2)
            masks[0, r : r + 60, c : c + 50] = True
            img[0][masks[0]] = -1.5
            img[2][masks[0]] = np.linspace(-1, 1, 60)[:, None].repeat(50, 1).ravel()
        else:
            img[0, 100:150, 100:160] = -0.5  # a shallow look-alike
        img += rng.normal(0, 0.05, img.shape).astype(np.float32)
        chips.append({"image": img.astype(np.float16), "masks": masks, "kind": "toy"})
    return chips


def test_training_is_reproducible_by_seed():
    chips = _toy_chips()
    a, _ = training.train_model(chips, iterations=2, batch=2, seed=7)
    b, _ = training.train_model(chips, iterations=2, batch=2, seed=7)
    c, _ = training.train_model(chips, iterations=2, batch=2, seed=8)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_a_short_run_lowers_the_loss():
    chips = _toy_chips()
    _, log = training.train_model(chips, iterations=25, batch=2, seed=0, augment_data=False)
    losses = [h["loss"] for h in log["history"]]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])


def test_training_refuses_evaluation_seeds(tmp_path):
    with pytest.raises(ValueError, match="reserved for evaluation"):
        training.train(tmp_path, [0, 1000], tmp_path / "w.pt")
    with pytest.raises(ValueError, match="reserved for evaluation"):
        training.prepare_sample(tmp_path, 11)


def test_weights_roundtrip_fp16(tmp_path):
    det = maskrcnn.Detector(maskrcnn.build_model())
    path = det.save(tmp_path / "w.pt")
    again = maskrcnn.Detector.load(path)
    assert again.meta["bands"] == list(maskrcnn.BANDS)
    x = np.zeros((1, 3, 128, 128), np.float32)
    assert isinstance(again.predict(x), list)
    assert maskrcnn.weights_file(tmp_path / "missing.pt") is None
    assert maskrcnn.weights_file(path) == path


# ---------------------------------------------------------------------------------------------
# the shipped weights on the held-out test sample


@pytest.fixture(scope="module")
def shipped():
    path = maskrcnn.weights_file()
    assert path is not None, "pipeline/models/rts_maskrcnn.pt is missing"
    assert path.stat().st_size <= 25e6
    return path


@pytest.fixture(scope="module")
def detections(sample, processed_cells, shipped):
    """The Mask R-CNN over the four processed Peel cells, with no network reachable."""
    import dataclasses

    cfg = Config()
    cfg = dataclasses.replace(cfg, detection=dataclasses.replace(cfg.detection, method="maskrcnn"))

    def refuse(*a, **k):
        raise OSError("network access during detection")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse)
    try:
        det = load_detector(cfg.detection)
        assert isinstance(det, maskrcnn.Detector)
        parts = []
        for cid in processed_cells:
            m = read_mosaic(processed_cells.products, grid.parse_cell_id(cid), cfg.candidates.halo_m)
            d = detect_slumps(m, find_candidates(m, cfg.candidates), cfg.detection, det)
            assert list(d.columns) == DETECTION_COLUMNS
            parts.append(d.assign(cell_id=cid))
    finally:
        mp.undo()
    out = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs="EPSG:3413")
    return out


def _site_truth(sample, name):
    out, manifest = sample
    site = manifest["sites"][0]["site"]
    frame = gpd.read_parquet(out / "truth" / f"{name}.parquet")
    return frame[frame.site == site].reset_index(drop=True)


def test_shipped_weights_on_held_out_cells(sample, detections):
    truth = _site_truth(sample, "slumps")
    assert (detections.detector == "maskrcnn").all()
    assert detections.crs.to_epsg() == 3413
    assert detections.geometry.geom_type.isin(["Polygon", "MultiPolygon"]).all()
    assert ((detections.detector_score >= DetectionConfig().min_score) & (detections.detector_score <= 1)).all()
    _, s = match_inventories(detections, truth, min_iou=0.5)
    print(f"Mask R-CNN on seed 11 peel: {s} (goal F1 {GOAL_F1})")
    assert s["f1"] >= MIN_F1_FIXTURE, s


def test_a_slump_on_a_cell_edge_is_detected_once(sample, detections):
    truth = _site_truth(sample, "slumps").query("crosses_cell_edge")
    assert len(truth)
    found_any = 0
    for geom in truth.geometry:
        hits = detections[detections.intersects(geom)]
        assert len(hits) <= 1
        found_any += len(hits)
    assert found_any >= 1


def test_lookalikes_are_not_reported(sample, detections):
    looks = _site_truth(sample, "lookalikes")
    assert len(looks)
    _, fooled = match_inventories(detections, looks, min_iou=0.3)
    assert fooled["matched"] == 0, fooled


def test_detect_without_candidates_is_empty(processed_cells, shipped):
    det = maskrcnn.Detector.load(shipped)
    cfg = Config()
    cid = next(iter(processed_cells))
    m = read_mosaic(processed_cells.products, grid.parse_cell_id(cid), cfg.candidates.halo_m)
    cands = find_candidates(m, cfg.candidates)
    out = det.detect(m, cands.iloc[:0], cfg.detection)
    assert len(out) == 0 and list(out.columns) == DETECTION_COLUMNS
