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

import datetime as dt
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import from_bounds

from data_products import grid
from .climate import thaw_season_of
from .inventories import match_inventories
from .sources import discover_strips, read_cell
from .vectorize import clusters_to_polygons



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
        obs.append(((s.meta.date - dt.date(2000, 1, 1)).days, seen))
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
    cands = gpd.read_parquet(products / "candidates.parquet")
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
