"""Slump detection (DESIGN step 7): which candidate clusters are slumps, and their outlines.

Two detectors share one output, a GeoDataFrame (EPSG:3413) with the columns
``geometry`` (the slump's active area), ``detector``, ``detector_score`` and
``criteria`` (of the underlying candidate cluster):

* ``rules``: the reference study's criteria 1-3 (Dai et al. 2025) as computed by
  :mod:`pipeline.detection.candidates`; score 1.0;
* ``evidence``: candidates holding a confident pixel whose physical evidence
  (:mod:`pipeline.detection.evidence`: t2 spread and its upslope trend, headwall, rim and ground
  slope, closed flat-floored basins, elongation, support by epochs on both sides) gives
  P(slump) >= the model's threshold; score = that probability. The unit is the candidate
  cluster, the connected active area;
* ``maskrcnn``: a Mask R-CNN on 3-band chips around the candidates
  (:mod:`pipeline.detection.maskrcnn`), used when weights are available.

``auto`` uses the detector that scored best on the scene family left out of its
training, as recorded in ``pipeline/models/evidence.json`` (``meta.auto``).

Polygons are cleaned the same way for both: holes smaller than ``min_hole_m2`` filled,
slivers narrower than half its square root removed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np

from data_products import grid

from pipeline.config import DetectionConfig
from pipeline.detection import maskrcnn
from pipeline.detection.evidence import MODEL_FILE, EvidenceModel, drained_lake
from pipeline.detection.vectorize import DETECTION_COLUMNS, clean_polygon, empty_detections  # noqa: F401 - the detections' shape

log = logging.getLogger(__name__)

def rule_based(candidates: gpd.GeoDataFrame, cfg: DetectionConfig) -> gpd.GeoDataFrame:
    """Candidates meeting all three criteria, as detections with score 1."""
    keep = candidates[candidates.criteria >= 3]
    if not len(keep):
        return empty_detections()
    geoms = [clean_polygon(g, cfg.min_hole_m2) for g in keep.geometry]
    out = gpd.GeoDataFrame({"detector": "rules", "detector_score": 1.0, "criteria": keep.criteria.astype(int).values},
                           geometry=gpd.GeoSeries(geoms, crs=grid.CRS), crs=grid.CRS)
    return out[~out.geometry.is_empty].reset_index(drop=True)[DETECTION_COLUMNS]


class EvidenceDetector:
    """Candidates accepted by the evidence classifier (:mod:`pipeline.detection.evidence`): those with
    a confident pixel and progressive retreat (``evidence_min_criteria``), not shaped like a
    drained lake (:func:`pipeline.detection.evidence.drained_lake`), with P(slump) at the threshold."""

    name = "evidence"

    def __init__(self, model):
        self.model = model

    def accepts(self, candidates, cfg: DetectionConfig) -> tuple[np.ndarray, np.ndarray]:
        """(accepted, P(slump)) per row of a candidates frame: the detector's decision, also
        used to score the classifier on labelled candidates (``pipeline.evaluation.families``)."""
        p = self.model.probability(candidates)
        thr = cfg.evidence_min_probability if cfg.evidence_min_probability > 0 else self.model.threshold
        keep = (candidates.confident.astype(bool).to_numpy() & (p >= thr)
                & (candidates.criteria.astype(int).to_numpy() >= cfg.evidence_min_criteria)
                & ~drained_lake(candidates, cfg))
        return keep, p

    def detect(self, mosaic, candidates: gpd.GeoDataFrame, cfg: DetectionConfig) -> gpd.GeoDataFrame:
        if not len(candidates):
            return empty_detections()
        keep, p = self.accepts(candidates, cfg)
        if not keep.any():
            return empty_detections()
        sel = candidates[keep]
        geoms = [clean_polygon(g, cfg.min_hole_m2) for g in sel.geometry]
        out = gpd.GeoDataFrame({"detector": "evidence", "detector_score": p[keep],
                                "criteria": sel.criteria.astype(int).values},
                               geometry=gpd.GeoSeries(geoms, crs=grid.CRS), crs=grid.CRS)
        return out[~out.geometry.is_empty].reset_index(drop=True)[DETECTION_COLUMNS]


def _evidence_path(cfg: DetectionConfig):
    p = Path(cfg.evidence_path) if cfg.evidence_path else MODEL_FILE
    return p if p.is_file() else None


def auto_choice(cfg: DetectionConfig) -> str:
    """The detector ``auto`` stands for: the one recorded as best on the held-out family."""
    import json

    p = _evidence_path(cfg)
    if p is None:
        return "maskrcnn"
    try:
        return str(json.loads(p.read_text()).get("meta", {}).get("auto", "evidence"))
    except (OSError, ValueError):
        return "evidence"


def detect_slumps(mosaic, candidates: gpd.GeoDataFrame, cfg: DetectionConfig, model=None) -> gpd.GeoDataFrame:
    """Slumps owned by the mosaic's core cell. ``model`` is a loaded Mask R-CNN detector
    (see :func:`load_detector`); None means the rule-based criteria."""
    if model is None:
        return rule_based(candidates, cfg)
    return model.detect(mosaic, candidates, cfg)


def load_detector(cfg: DetectionConfig):
    """The Mask R-CNN detector the configuration asks for, or None for the rules.

    ``method = "auto"`` uses the weights when present (``weights_path`` or the shipped
    ``pipeline/models/`` file) and falls back to the rules with a log line otherwise;
    ``"maskrcnn"`` raises if the weights cannot be loaded; ``"rules"`` never loads one."""
    method = cfg.method
    if method not in ("auto", "evidence", "maskrcnn", "rules"):
        raise ValueError(f"detection.method must be auto, evidence, maskrcnn or rules, not {method!r}")
    if method == "auto":
        method = auto_choice(cfg)
    if method == "rules":
        return None
    if method == "evidence":
        p = _evidence_path(cfg)
        if p is None:
            if cfg.method == "evidence":
                raise FileNotFoundError("detection.method is evidence but no model at "
                                        f"{cfg.evidence_path or 'pipeline/models/evidence.json'}")
            log.warning("no evidence model at %s (an incomplete installation?); detecting with the rule-based "
                        "criteria", cfg.evidence_path or "pipeline/models/evidence.json")
            return None
        return EvidenceDetector(EvidenceModel.load(p))
    missing = maskrcnn.missing_libraries()
    if missing:
        if cfg.method == "maskrcnn":
            raise ImportError(f"detection.method is maskrcnn but {', '.join(missing)} is not installed")
        log.info("Mask R-CNN unavailable (%s not installed); detecting with the rule-based criteria",
                 ", ".join(missing))
        return None
    path = maskrcnn.weights_file(cfg.weights_path)
    if path is None:
        if cfg.method == "maskrcnn":
            raise FileNotFoundError("detection.method is maskrcnn but no weights at "
                                    f"{cfg.weights_path or 'pipeline/models/rts_maskrcnn.pt'}")
        log.warning("no Mask R-CNN weights at %s (an incomplete installation?); detecting with the rule-based "
                    "criteria", cfg.weights_path or "pipeline/models/rts_maskrcnn.pt")
        return None
    return maskrcnn.Detector.load(path)


def detector_id(cfg: DetectionConfig) -> str:
    """Identifies the detector a run would use ("rules" or "maskrcnn:<weights digest>"),
    so that products are recomputed when the weights change."""
    import hashlib

    method = auto_choice(cfg) if cfg.method == "auto" else cfg.method
    if method == "rules":
        return "rules"
    if method == "evidence":
        p = _evidence_path(cfg)
        return "evidence:" + hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p else "rules"
    if maskrcnn.missing_libraries():
        return "rules"
    path = maskrcnn.weights_file(cfg.weights_path)
    if path is None:
        return "rules"
    return "maskrcnn:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
