"""Evaluation against the synthetic sample's truth (never used by a pipeline stage).

* :func:`cell_truth` - the truth rasters over one cell;
* :func:`offset_errors` - recovered per-strip offsets against the injected ones, both
  relative to the mean of the strips used;
* :func:`expected_t2` - for each truly dropped pixel, the first acquisition after the drop
  that observed it (valid data, not masked): the date a perfect ``t2`` would report;
* :func:`naive_difference` - the honesty baseline: newest minus oldest strip over a site,
  uncoregistered, thresholded at -1 m, clusters of >= 2,000 m2, matched to the truth.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import from_bounds

from data_products import grid, timebase
from data_products.store import ProductsStore

from pipeline.quantify.climate import thaw_season_of
from pipeline.publish.inventories import match_inventories
from pipeline.strips.read import read_cell
from pipeline.strips.sources import discover_strips
from pipeline.detection.vectorize import clusters_to_polygons
from pipeline.detection.candidates import find_candidates, read_mosaic
from pipeline.config import Config
from pipeline.detection.detect import detect_slumps, empty_detections


def _site_for(sample: Path, bounds) -> str | None:
    for path in sorted((sample / "truth").glob("*/true_dh.tif")):
        with rasterio.open(path) as src:
            b = src.bounds
            if b.left <= bounds[0] and b.right >= bounds[2] and b.bottom <= bounds[1] and b.top >= bounds[3]:
                return path.parent.name
    return None


def cell_truth(sample: str | Path, cell: grid.Cell) -> dict[str, np.ndarray]:
    """true_dh, class, change_season, change_time over the cell (its 2 m grid)."""
    sample = Path(sample)
    site = _site_for(sample, cell.bounds)
    if site is None:
        raise ValueError(f"cell {cell.id} is not inside any site of {sample}")
    out = {"site": site}
    for name in ("true_dh", "class", "change_season", "change_time"):
        with rasterio.open(sample / "truth" / site / f"{name}.tif") as src:
            out[name] = src.read(1, window=from_bounds(*cell.bounds, src.transform))
    return out


def offset_errors(coreg_rows: list[dict], sample: str | Path, cell: grid.Cell) -> np.ndarray:
    """(n_used, 3) errors of recovered (dx, dy, dz) against the truth, both relative to
    the mean over the strips used; the truth's dz includes its tilt at the cell centre."""
    truth = pd.read_csv(Path(sample) / "truth" / "strips.csv").set_index("name")
    xc = (cell.bounds[0] + cell.bounds[2]) / 2
    yc = (cell.bounds[1] + cell.bounds[3]) / 2
    rec, tru = [], []
    for row in coreg_rows:
        if not row["used"]:
            continue
        t = truth.loc[row["strip"]]
        rec.append([row["dx_m"], row["dy_m"], row["dz_m"]])
        tru.append([t.dx_m, t.dy_m, t.dz_m + t.tilt_e * (xc - t.center_x) + t.tilt_n * (yc - t.center_y)])
    rec, tru = np.asarray(rec), np.asarray(tru)
    return (rec - rec.mean(0)) - (tru - tru.mean(0))


thaw_season = thaw_season_of  # the binning the pipeline uses


def expected_t2(sample: str | Path, cell: grid.Cell, change_time: np.ndarray, *, snow_free_only: bool = False
                ) -> np.ndarray:
    """Days since 2000 of the first acquisition after ``change_time`` that observed the
    ground at each pixel: valid, matched (an interpolated value observes nothing) and not
    under a cloud (from the truth's cloud masks), and with ``snow_free_only`` in a snow-free
    month (a spring DEM may show a snow-filled scar). NaN in, -1 out where none follows."""
    sample = Path(sample)
    strips = discover_strips(sample / "strips")
    obs = []
    for s in strips:
        if snow_free_only and not 6 <= s.meta.date.month <= 9:
            continue
        w = read_cell(s, cell)
        if w is None:
            continue
        seen = w.valid & w.matched
        cloud_files = list((sample / "truth").glob(f"*/clouds/{s.meta.name}_clouds.tif"))
        if cloud_files:
            with rasterio.open(cloud_files[0]) as src:
                cloud = src.read(1, window=from_bounds(*cell.bounds, src.transform), boundless=True, fill_value=0)
            seen &= cloud == 0
        obs.append((timebase.days_since_epoch(s.meta.date), seen))
    obs.sort(key=lambda o: o[0])
    out = np.full(change_time.shape, -1, np.int64)
    todo = np.isfinite(change_time)
    for d, valid in obs:
        hit = todo & valid & (d >= change_time)
        out[hit] = d
        todo &= ~hit
    return out


def naive_difference(sample: str | Path, site: str, threshold_m: float = -1.0, min_area_m2: float = 2000.0) -> dict:
    """Newest minus oldest strip over a site, no coregistration: the honesty baseline.

    Returns the matching summary at IoU >= 0.5 (and 0.1) against the site's true slumps.
    """
    sample = Path(sample)
    with rasterio.open(sample / "truth" / site / "true_dh.tif") as src:
        bounds, transform, shape = src.bounds, src.transform, src.shape
    strips = sorted(discover_strips(sample / "strips" / site), key=lambda s: s.meta.date)
    cells = grid.cells_in_bounds(tuple(bounds))
    # stitch the block from its cells with the regular reader
    def block(strip):
        out = np.full(shape, np.nan, np.float32)
        for c in cells:
            w = read_cell(strip, c)
            if w is None:
                continue
            r0 = int(round((bounds.top - c.bounds[3]) / 2.0))
            c0 = int(round((c.bounds[0] - bounds.left) / 2.0))
            out[r0 : r0 + w.z.shape[0], c0 : c0 + w.z.shape[1]] = w.z
        return out
    diff = block(strips[-1]) - block(strips[0])
    polys = clusters_to_polygons(np.nan_to_num(diff, nan=0.0) <= threshold_m, transform, min_area_m2)
    found = gpd.GeoDataFrame(geometry=polys, crs="EPSG:3413")
    truth = gpd.read_parquet(sample / "truth" / "slumps.parquet")
    truth = truth[truth.site == site].reset_index(drop=True)
    out = {}
    for iou in (0.5, 0.1):
        _, summary = match_inventories(found, truth, min_iou=iou)
        out[iou] = summary
    return out


def evaluate_products(sample: str | Path, products: str | Path) -> dict:
    """Score a run's candidates against the sample's truth, beside the naive baseline.

    For each criteria level (1, 1-2, 1-3): precision, recall, F1 at IoU >= 0.5 and >= 0.1,
    mean IoU, look-alikes kept as slumps (IoU >= 0.3), and for matched slumps the volume
    error and the coverage of the stated 1-sigma and 2-sigma uncertainty."""
    sample, products = Path(sample), Path(products)
    cands = gpd.read_parquet(ProductsStore(products).candidates)
    truth = gpd.read_parquet(sample / "truth" / "slumps.parquet")
    looks = gpd.read_parquet(sample / "truth" / "lookalikes.parquet")
    cells = {c for c in cands.cell_id} if len(cands) else set()
    truth = truth[truth.cells.apply(lambda s: bool(set(s.split()) & cells))].reset_index(drop=True)
    looks = looks[looks.site.isin(set(truth.site))].reset_index(drop=True)
    rows = []
    for level, label in ((1, "criterion 1"), (2, "criteria 1-2"), (3, "criteria 1-3")):
        found = cands[cands.criteria >= level].reset_index(drop=True)
        row = {"method": label, "found": len(found), "true": len(truth)}
        for iou in (0.5, 0.1):
            pairs, s = match_inventories(found, truth, min_iou=iou)
            row.update({f"precision@{iou}": s["precision"], f"recall@{iou}": s["recall"], f"f1@{iou}": s["f1"]})
            if iou == 0.5:
                row["mean_iou"] = s["mean_iou"]
                v = found.loss_m3.to_numpy()[pairs.found_index.to_numpy()]
                sg = found.volume_sigma_m3.to_numpy()[pairs.found_index.to_numpy()]
                tv = truth.volume_m3.to_numpy()[pairs.reference_index.to_numpy()]
                row["median_abs_volume_error"] = float(np.median(np.abs(v - tv) / tv)) if len(v) else float("nan")
                row["total_volume_error"] = float(v.sum() / tv.sum() - 1) if len(v) else float("nan")
                row["coverage_1sigma"] = float(np.mean(np.abs(v - tv) <= sg)) if len(v) else float("nan")
                row["coverage_2sigma"] = float(np.mean(np.abs(v - tv) <= 2 * sg)) if len(v) else float("nan")
        _, fooled = match_inventories(found, looks, min_iou=0.3)
        row["lookalikes_as_slumps"] = fooled["matched"]
        rows.append(row)
    tp = fp = fn = 0
    for site in sorted(set(truth.site)):
        s = naive_difference(sample, site)[0.5]
        tp, fp, fn = tp + s["matched"], fp + s["new"], fn + s["missed"]
    naive = {"method": "naive newest - oldest", "found": tp + fp, "true": tp + fn,
             "precision@0.5": tp / max(tp + fp, 1), "recall@0.5": tp / max(tp + fn, 1),
             "f1@0.5": 2 * tp / max(2 * tp + fp + fn, 1)}
    return {"rows": [naive] + rows, "n_truth": len(truth), "n_lookalikes": len(looks)}


def evaluation_markdown(result: dict) -> str:
    cols = ["method", "found", "true", "precision@0.5", "recall@0.5", "f1@0.5", "f1@0.1", "mean_iou",
            "lookalikes_as_slumps", "median_abs_volume_error", "total_volume_error", "coverage_1sigma", "coverage_2sigma"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.2f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# detectors side by side (Mask R-CNN, rules, naive) on held-out samples


def detect_products(products: str | Path, detector, cfg=None, cells: list[str] | None = None) -> tuple:
    """Run a detector over every processed cell of a products folder (independently of the
    detector ``rts run`` used): ``detector`` None = the rule-based criteria 1-3, else a loaded
    :class:`pipeline.detection.maskrcnn.Detector`. Candidates come from ``candidates.parquet`` when it
    lists the cell, else are recomputed. Returns (detections GeoDataFrame, seconds per cell)."""
    import time


    cfg = cfg or Config()
    products = Path(products)
    store = ProductsStore(products)
    all_cands = gpd.read_parquet(store.candidates) if store.candidates.exists() else None
    ids = cells or store.raster_cells()
    parts, seconds = [], []
    for cid in ids:
        cell = grid.parse_cell_id(cid)
        mosaic = read_mosaic(products, cell, cfg.candidates.halo_m, cfg.grid.resolution_m)
        if all_cands is not None and "cell_id" in all_cands and (all_cands.cell_id == cid).any():
            cands = all_cands[all_cands.cell_id == cid].reset_index(drop=True)
        else:
            cands = find_candidates(mosaic, cfg.candidates, cfg.grid.resolution_m)
        t0 = time.perf_counter()
        dets = detect_slumps(mosaic, cands, cfg.detection, detector)
        seconds.append(time.perf_counter() - t0)
        if len(dets):
            dets = dets.assign(cell_id=cid)
            parts.append(dets)
    if not parts:
        return empty_detections(), seconds
    out = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=grid.CRS)
    return out, seconds


def score_detections(found: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, looks: gpd.GeoDataFrame, label: str) -> dict:
    """Precision, recall, F1 at IoU >= 0.5 and >= 0.1, mean IoU (matched at 0.5), and
    look-alikes reported as slumps (matched to a look-alike at IoU >= 0.3)."""
    found = found.reset_index(drop=True)
    row = {"method": label, "found": len(found), "true": len(truth)}
    for iou in (0.5, 0.1):
        _, s = match_inventories(found, truth, min_iou=iou)
        row.update({f"precision@{iou}": s["precision"], f"recall@{iou}": s["recall"], f"f1@{iou}": s["f1"],
                    f"tp@{iou}": s["matched"], f"fp@{iou}": s["new"], f"fn@{iou}": s["missed"]})
        if iou == 0.5:
            row["mean_iou"] = s["mean_iou"]
    if len(looks) and len(found):
        _, fooled = match_inventories(found, looks, min_iou=0.3)
        row["lookalikes_as_slumps"] = fooled["matched"]
    else:
        row["lookalikes_as_slumps"] = 0
    return row


def _pool(rows: list[dict], label: str) -> dict:
    out = {"method": label, "found": sum(r["found"] for r in rows), "true": sum(r["true"] for r in rows),
           "lookalikes_as_slumps": sum(r.get("lookalikes_as_slumps", 0) for r in rows)}
    for iou in (0.5, 0.1):
        tp = sum(r.get(f"tp@{iou}", 0) for r in rows)
        fp = sum(r.get(f"fp@{iou}", 0) for r in rows)
        fn = sum(r.get(f"fn@{iou}", 0) for r in rows)
        if not any(f"tp@{iou}" in r for r in rows):
            continue
        out.update({f"precision@{iou}": tp / max(tp + fp, 1), f"recall@{iou}": tp / max(tp + fn, 1),
                    f"f1@{iou}": 2 * tp / max(2 * tp + fp + fn, 1), f"tp@{iou}": tp, f"fp@{iou}": fp, f"fn@{iou}": fn})
    ious = [(r["mean_iou"], r["tp@0.5"]) for r in rows if r.get("tp@0.5") and np.isfinite(r.get("mean_iou", np.nan))]
    if ious:
        out["mean_iou"] = float(sum(m * n for m, n in ious) / sum(n for _, n in ious))
    return out


def compare_detectors(sample: str | Path, products: str | Path, detector=None, cfg=None) -> dict:
    """One held-out sample: the Mask R-CNN (if ``detector``), the rule-based criteria 1-3
    (cleaned polygons, as published) and the naive baseline, scored the same way."""
    sample, products = Path(sample), Path(products)
    truth = gpd.read_parquet(sample / "truth" / "slumps.parquet")
    looks = gpd.read_parquet(sample / "truth" / "lookalikes.parquet")
    cells = ProductsStore(products).raster_cells()
    truth = truth[truth.cells.apply(lambda s: bool(set(s.split()) & set(cells)))].reset_index(drop=True)
    looks = looks[looks.site.isin(set(truth.site))].reset_index(drop=True)
    rows, timing = [], {}
    if detector is not None:
        found, secs = detect_products(products, detector, cfg, cells)
        rows.append(score_detections(found, truth, looks, "Mask R-CNN"))
        timing["maskrcnn_seconds_per_cell"] = float(np.mean(secs)) if secs else float("nan")
    found, _ = detect_products(products, None, cfg, cells)
    rows.append(score_detections(found, truth, looks, "rules (criteria 1-3)"))
    tp = fp = fn = 0
    tp1 = fp1 = fn1 = 0
    for site in sorted(set(truth.site)):
        s = naive_difference(sample, site)
        tp, fp, fn = tp + s[0.5]["matched"], fp + s[0.5]["new"], fn + s[0.5]["missed"]
        tp1, fp1, fn1 = tp1 + s[0.1]["matched"], fp1 + s[0.1]["new"], fn1 + s[0.1]["missed"]
    rows.append({"method": "naive newest - oldest", "found": tp + fp, "true": tp + fn,
                 "precision@0.5": tp / max(tp + fp, 1), "recall@0.5": tp / max(tp + fn, 1),
                 "f1@0.5": 2 * tp / max(2 * tp + fp + fn, 1), "tp@0.5": tp, "fp@0.5": fp, "fn@0.5": fn,
                 "precision@0.1": tp1 / max(tp1 + fp1, 1), "recall@0.1": tp1 / max(tp1 + fn1, 1),
                 "f1@0.1": 2 * tp1 / max(2 * tp1 + fp1 + fn1, 1), "tp@0.1": tp1, "fp@0.1": fp1, "fn@0.1": fn1})
    seed = None
    if (sample / "sample.json").exists():
        import json

        seed = json.loads((sample / "sample.json").read_text()).get("seed")
    return {"seed": seed, "rows": rows, "n_truth": len(truth), "n_lookalikes": len(looks), **timing}


def compare_many(pairs: list[tuple], detector=None, cfg=None) -> dict:
    """:func:`compare_detectors` on several (sample, products) pairs, plus the pooled scores."""
    per = [compare_detectors(s, p, detector, cfg) for s, p in pairs]
    labels = [r["method"] for r in per[0]["rows"]]
    pooled = [_pool([next(r for r in res["rows"] if r["method"] == lab) for res in per], lab) for lab in labels]
    return {"per_sample": per, "pooled": pooled}


DETECTOR_COLUMNS = ["method", "found", "true", "precision@0.5", "recall@0.5", "f1@0.5", "precision@0.1",
                    "recall@0.1", "f1@0.1", "mean_iou", "lookalikes_as_slumps"]


def detectors_markdown(result: dict) -> str:
    """Per-sample and pooled tables of :func:`compare_many`."""
    def table(rows, first=None):
        cols = DETECTOR_COLUMNS if first is None else [first] + DETECTOR_COLUMNS
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            cells = []
            for c in cols:
                v = r.get(c, "")
                cells.append(f"{v:.2f}" if isinstance(v, float) and np.isfinite(v) else ("" if isinstance(v, float)
                                                                                           else str(v)))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    rows = []
    for res in result["per_sample"]:
        for r in res["rows"]:
            rows.append({"seed": res["seed"], **r})
    text = "Per held-out sample:\n\n" + table(rows, "seed")
    text += "\nPooled over the samples (counts summed):\n\n" + table(result["pooled"])
    return text
