"""Evaluation across independent scene families, and the evidence model trained on them.

A *scene family* is one generator's model of the world: family A is
:mod:`pipeline.synth`, family B the independent :mod:`scenes` package. A number measured
on the family a detector was trained on says how well it learned that generator; the
honest estimate of how it does on data it has never seen is **leave one family out**:
train on one family, report on the other.

* :func:`label_candidates` - the candidates of a run, each labelled slump / not slump by
  the truth it is never shown during a run (a candidate is a slump when at least half its
  area lies in one true slump unit);
* :func:`train_evidence` - the evidence classifier on labelled candidates, families
  weighted equally;
* :func:`family_report` - per family and detector: F1 at IoU >= 0.5 and >= 0.1, false
  positives by cause, split and merged units, volume errors and sigma coverage, stable
  ground with false change, temperature-flag agreement, beside the naive baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from scipy.stats import binomtest

from data_products import grid
from data_products import schema
from data_products.store import DH_RASTER, ProductsStore

from pipeline.config import Config
from pipeline.detection.detect import EvidenceDetector
from pipeline.detection.evidence import FEATURES, EvidenceModel, criteria_features, fit
from pipeline.publish.inventories import match_inventories
from pipeline.evaluation.evaluate import cell_truth
from pipeline.evaluation.evaluate import detect_products, naive_difference, score_detections
from pipeline.evaluation.evaluate import _pool


def share_interval(hits: np.ndarray) -> tuple[float, float]:
    """The Wilson 95 % interval (fractions) of the share of True in ``hits``: on one seed's
    few dozen slumps a coverage or agreement share is uncertain by several points, so a
    share is only short of a band when its interval is."""
    hits = np.asarray(hits, bool)
    ci = binomtest(int(hits.sum()), int(hits.size)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def auto_detector(held_out_f1: dict[str, dict[str, float]]) -> str:
    """The detector ``detection.method = "auto"`` should use: "evidence" when the classifier's
    F1 at IoU >= 0.5, averaged over the families each was left out of training for (families
    weighted equally), is at least the rules' average on the same families; else "rules".
    ``held_out_f1``: family -> {"evidence": F1, "rules": F1}. An average rather than a win on
    every family: a point lost on one family must not outweigh ten gained on another."""
    if not held_out_f1:
        raise ValueError("no family was left out of training: nothing to choose the detector on")
    mean = {k: float(np.mean([h[k] for h in held_out_f1.values()])) for k in ("evidence", "rules")}
    return "evidence" if mean["evidence"] >= mean["rules"] else "rules"


def family_of(sample: str | Path) -> str:
    """"A" (pipeline.synth) or "B" (scenes), from the sample's manifest."""
    try:
        return str(json.loads((Path(sample) / "sample.json").read_text()).get("family", "A"))
    except (OSError, ValueError):
        return "A"


def _truth(sample: Path, cells: set[str]):
    truth = gpd.read_parquet(sample / "truth" / "slumps.parquet")
    looks = gpd.read_parquet(sample / "truth" / "lookalikes.parquet")
    truth = truth[truth.cells.apply(lambda s: bool(set(str(s).split()) & cells))].reset_index(drop=True)
    looks = looks[looks.site.isin(set(truth.site) | {s for s in looks.site})].reset_index(drop=True)
    return truth, looks


def _cells(products: Path) -> list[str]:
    return ProductsStore(products).raster_cells()


def _all_candidates(products: Path) -> gpd.GeoDataFrame:
    parts = [gpd.read_parquet(p) for p in ProductsStore(products).part_files(schema.CANDIDATES)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs=grid.CRS))
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=grid.CRS)


def label_candidates(sample: str | Path, products: str | Path) -> pd.DataFrame:
    """The run's candidates with :data:`FEATURES`, ``label`` (1 slump) and ``family``."""
    sample, products = Path(sample), Path(products)
    cands = _all_candidates(products)
    if not len(cands):
        return pd.DataFrame(columns=[*FEATURES, "label", "family", "criteria", "confident"])
    truth, _ = _truth(sample, set(_cells(products)))
    frac = np.zeros(len(cands))
    if len(truth):
        inter = gpd.overlay(cands.reset_index()[["index", "geometry"]], truth[["geometry"]].reset_index(names="t"),
                            how="intersection", keep_geom_type=True)
        if len(inter):
            best = inter.assign(a=inter.area).groupby(["index", "t"]).a.sum().groupby(level=0).max()
            frac[best.index.to_numpy()] = best.to_numpy() / cands.area.to_numpy()[best.index.to_numpy()]
    out = pd.DataFrame(cands.drop(columns="geometry"))
    for k, v in criteria_features(out["criteria"]).items():  # runs made before these columns existed
        if k not in out:
            out[k] = v
    out["label"] = (frac >= 0.5).astype(int)
    out["family"] = family_of(sample)
    out["sample"] = str(sample)
    return out


def train_evidence(tables: list[pd.DataFrame], *, l2: float, min_criteria: int = 1) -> EvidenceModel:
    """The evidence classifier on labelled candidates passing at least ``min_criteria`` of
    the reference criteria (1: a confident pixel; candidates without one are never
    detections), each family weighted equally. ``l2``: the ridge penalty
    (``detection.evidence_l2``, or :func:`choose_l2`)."""
    df = pd.concat(tables, ignore_index=True)
    df = df[df.criteria.astype(int) >= min_criteria]
    df = df.dropna(subset=list(FEATURES), how="all")
    if df.label.nunique() < 2:
        raise ValueError("training the evidence model needs both slumps and non-slumps among the candidates")
    w = df.groupby("family").label.transform(lambda s: 1.0 / len(s)).to_numpy() * len(df) / df.family.nunique()
    model = fit(df[list(FEATURES)].to_numpy(float), df.label.to_numpy(), l2=l2, weights=w)
    model.meta = {"trained_on": sorted(set(df["sample"])) if "sample" in df else [],
                  "families": sorted(set(df.family)), "n_candidates": int(len(df)), "n_slumps": int(df.label.sum())}
    return model


#: ridge penalties :func:`choose_l2` tries
L2_GRID = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def candidate_f1(model: EvidenceModel, table: pd.DataFrame, cfg) -> float:
    """F1 of the evidence detector's decision (:meth:`pipeline.detection.detect.EvidenceDetector.accepts`)
    on candidates labelled by :func:`label_candidates`. A quick proxy of the IoU-matched F1 of
    :func:`score_family`, for choosing the training penalty. ``cfg``: :class:`pipeline.config.DetectionConfig`."""
    if not len(table):
        return float("nan")
    keep, _ = EvidenceDetector(model).accepts(table, cfg)
    y = table.label.to_numpy() == 1
    tp = int((keep & y).sum())
    wrong = int((keep & ~y).sum() + (~keep & y).sum())
    return 2.0 * tp / (2.0 * tp + wrong) if tp + wrong else 1.0


def choose_l2(train: dict[str, list[pd.DataFrame]], validate: dict[str, list[pd.DataFrame]], cfg,
              grid=L2_GRID) -> tuple[float, dict[float, float]]:
    """The ridge penalty for the evidence classifier: for each penalty of ``grid``, a model is
    trained on the ``train`` tables of every family but one and scored (:func:`candidate_f1`) on
    that family's ``validate`` tables; the penalty with the best F1 averaged over the families
    wins (the smaller one on a tie). Validation samples must be neither training samples nor
    held-out seeds the evaluation reports as such. Returns (penalty, {penalty: mean F1})."""
    scores: dict[float, float] = {}
    for l2 in grid:
        f1 = []
        for fam, tables in validate.items():
            others = [t for f, ts in train.items() if f != fam for t in ts]
            if others and tables:
                f1.append(candidate_f1(train_evidence(others, l2=l2), pd.concat(tables, ignore_index=True), cfg))
        if not np.isfinite(f1).any():
            raise ValueError("choosing the penalty needs validation samples with candidates of a family and "
                             "training samples of another")
        scores[l2] = float(np.nanmean(f1))
    best = max(grid, key=lambda l2: (round(scores[l2], 6), -l2))
    return best, scores


# --------------------------------------------------------------------------- the report

def _causes(found: gpd.GeoDataFrame, truth, looks, cloud_hits) -> dict[str, int]:
    """False positives (found, unmatched at IoU 0.5) by what they lie on."""

    pairs, _ = match_inventories(found, truth, min_iou=0.5)
    unmatched = found.drop(index=pairs.found_index.to_numpy()) if len(pairs) else found
    out: dict[str, int] = {}
    for g in unmatched.geometry:
        cause = "nothing"
        if len(truth) and truth.intersects(g).any():
            ov = truth.intersection(g).area.max() / max(g.area, 1)
            cause = "part of a slump (split or merged)" if ov >= 0.2 else cause
        if cause == "nothing" and len(looks):
            hit = looks[looks.intersects(g)]
            if len(hit):
                cause = str(hit.assign(a=hit.intersection(g).area).sort_values("a").kind.iloc[-1])
        if cause == "nothing" and cloud_hits is not None and cloud_hits(g):
            cause = "acquisition artefact"
        out[cause] = out.get(cause, 0) + 1
    return out


def _split_merged(found: gpd.GeoDataFrame, truth) -> tuple[int, int]:
    """(true units split over two or more detections, detections merging two or more
    true units); counted where each part overlaps by >= 20 % of the smaller area."""
    if not len(found) or not len(truth):
        return 0, 0
    inter = gpd.overlay(found.reset_index(names="f")[["f", "geometry"]], truth.reset_index(names="t")[["t", "geometry"]],
                        how="intersection", keep_geom_type=True)
    if not len(inter):
        return 0, 0
    inter["a"] = inter.area
    fa = found.area.to_numpy()
    ta = truth.area.to_numpy()
    big = inter[inter.a >= 0.2 * np.minimum(fa[inter.f.to_numpy()], ta[inter.t.to_numpy()])]
    split = int((big.groupby("t").f.nunique() >= 2).sum())
    merged = int((big.groupby("f").t.nunique() >= 2).sum())
    return split, merged


def _cloud_checker(sample: Path):
    """A function telling whether a geometry lies on a strip's true cloud mask."""
    masks = []
    for p in sorted((sample / "truth").glob("*/clouds/*_clouds.tif")):
        with rasterio.open(p) as src:
            a = src.read(1)
            if a.any():
                masks.append((src.transform, a.astype(bool)))
    if not masks:
        return None

    def hits(g) -> bool:
        from rasterio.features import geometry_mask

        for tr, a in masks:
            inside = geometry_mask([g], a.shape, tr, invert=True)
            if inside.any() and a[inside].mean() >= 0.3:
                return True
        return False

    return hits


def stable_false_change(sample: Path, products: Path, threshold_m: float = 1.0) -> float:
    """Fraction of stable ground (truth class 0, |true dh| < 0.05 m, outside 10 m of any
    change) whose published dh exceeds ``threshold_m`` in magnitude."""
    from scipy import ndimage


    n = bad = 0
    for cid in _cells(products):
        cell = grid.parse_cell_id(cid)
        t = cell_truth(sample, cell)
        with rasterio.open(ProductsStore(products).tile_file(cid, DH_RASTER)) as src:
            dh = src.read(1).astype(float)
            if src.nodata is not None:
                dh[dh == src.nodata] = np.nan
        stable = (t["class"] == 0) & (np.abs(t["true_dh"]) < 0.05)
        stable &= ~ndimage.binary_dilation(~stable, iterations=5)
        ok = stable & np.isfinite(dh)
        n += int(ok.sum())
        bad += int((np.abs(dh[ok]) > threshold_m).sum())
    return bad / max(n, 1)


def score_family(pairs: list[tuple[Path, Path]], detectors: dict, cfg=None) -> list[dict]:
    """Rows (one per detector, plus the naive baseline) pooled over the (sample, products)
    pairs of one family. ``detectors``: label -> detector object (None = rules)."""

    r_flag = (cfg or Config()).quantify.temperature_driven_r
    rows = {lab: [] for lab in detectors}
    extra = {lab: {"causes": {}, "split": 0, "merged": 0, "vol": [], "temp": [], "with_r": []} for lab in detectors}
    naive = {0.5: [0, 0, 0], 0.1: [0, 0, 0]}
    stable = []
    for sample, products in pairs:
        sample, products = Path(sample), Path(products)
        cells = _cells(products)
        truth, looks = _truth(sample, set(cells))
        looks = looks[looks.site.isin(set(truth.site))].reset_index(drop=True)
        clouds = _cloud_checker(sample)
        inv_path = ProductsStore(products).inventory
        inv = gpd.read_parquet(inv_path) if inv_path.exists() else None
        for lab, det in detectors.items():
            found, _ = detect_products(products, det, cfg, cells)
            found = found.reset_index(drop=True)
            rows[lab].append(score_detections(found, truth, looks, lab))
            for k, v in _causes(found, truth, looks, clouds).items():
                extra[lab]["causes"][k] = extra[lab]["causes"].get(k, 0) + v
            s, m = _split_merged(found, truth)
            extra[lab]["split"] += s
            extra[lab]["merged"] += m
            # volumes and temperature flags: the published inventory, when it is this detector's
            if inv is not None and len(inv) and str(inv.detector.iloc[0]).split(":")[0] == (
                    "rules" if det is None else getattr(det, "name", "maskrcnn")):
                pairs_, _ = match_inventories(inv.reset_index(drop=True), truth, min_iou=0.5)
                for fi, ti in zip(pairs_.found_index, pairs_.reference_index):
                    r, t = inv.iloc[fi], truth.iloc[ti]
                    extra[lab]["vol"].append((r.volume_m3, r.volume_sigma_m3, t.volume_m3))
                    extra[lab]["with_r"].append(bool(np.isfinite(r.r_temperature)))
                    if np.isfinite(r.r_temperature):
                        extra[lab]["temp"].append(bool(r.r_temperature >= r_flag) == bool(t.temperature_driven))
        for site in sorted(set(truth.site)):
            s = naive_difference(sample, site)
            for iou in (0.5, 0.1):
                naive[iou][0] += s[iou]["matched"]
                naive[iou][1] += s[iou]["new"]
                naive[iou][2] += s[iou]["missed"]
        stable.append(stable_false_change(sample, products))

    out = []
    for lab in detectors:
        r = _pool(rows[lab], lab)
        e = extra[lab]
        r["fp_causes"] = ", ".join(f"{k} {v}" for k, v in sorted(e["causes"].items(), key=lambda kv: -kv[1])) or "-"
        r["split"], r["merged"] = e["split"], e["merged"]
        if e["vol"]:
            v = np.array(e["vol"])
            err = v[:, 0] - v[:, 2]
            r["median_abs_volume_error"] = float(np.median(np.abs(err) / v[:, 2]))
            r["total_volume_error"] = float(v[:, 0].sum() / v[:, 2].sum() - 1)
            r["n_volumes"] = len(v)
            for k in (1, 2):
                hits = np.abs(err) <= k * v[:, 1]
                r[f"coverage_{k}sigma"], r[f"coverage_{k}sigma_ci"] = float(np.mean(hits)), share_interval(hits)
        if e["temp"]:
            r["temperature_flag_agreement"] = float(np.mean(e["temp"]))
            r["temperature_flag_agreement_ci"] = share_interval(e["temp"])
        if e["with_r"]:
            r["share_with_r"] = float(np.mean(e["with_r"]))
        r["stable_false_change"] = float(np.mean(stable)) if stable else float("nan")
        out.append(r)
    nr = {"method": "naive newest - oldest"}
    for iou, (tp, fp, fn) in naive.items():
        nr.update({f"precision@{iou}": tp / max(tp + fp, 1), f"recall@{iou}": tp / max(tp + fn, 1),
                   f"f1@{iou}": 2 * tp / max(2 * tp + fp + fn, 1)})
    nr["found"], nr["true"] = naive[0.5][0] + naive[0.5][1], naive[0.5][0] + naive[0.5][2]
    out.append(nr)
    return out


REPORT_COLUMNS = ["method", "found", "true", "precision@0.5", "recall@0.5", "f1@0.5", "f1@0.1", "split", "merged",
                  "lookalikes_as_slumps", "fp_causes", "n_volumes", "median_abs_volume_error", "total_volume_error",
                  "coverage_1sigma", "coverage_2sigma", "stable_false_change", "temperature_flag_agreement",
                  "share_with_r"]


def report_markdown(rows: list[dict], columns=REPORT_COLUMNS) -> str:
    """One row per method; a share with a ``<column>_ci`` interval shows it in brackets."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            if isinstance(v, float):
                text = "" if not np.isfinite(v) else (f"{100 * v:.2f} %" if c == "stable_false_change" else f"{v:.2f}")
                if text and f"{c}_ci" in r:
                    text += " ({:.2f}-{:.2f})".format(*r[f"{c}_ci"])
                cells.append(text)
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
