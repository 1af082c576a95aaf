"""Slump detection (DESIGN step 7): which candidate clusters are slumps, and their outlines.

Two detectors share one output, a GeoDataFrame (EPSG:3413) with the columns
``geometry`` (the slump's active area), ``detector``, ``detector_score`` and
``criteria`` (of the underlying candidate cluster):

* ``rules``: the reference study's criteria 1-3 (Dai et al. 2025) as computed by
  :mod:`pipeline.candidates`; score 1.0;
* ``maskrcnn``: a Mask R-CNN on 3-band chips around the candidates
  (:mod:`pipeline.maskrcnn`), used when weights are available.

Polygons are cleaned the same way for both: holes smaller than ``min_hole_m2`` filled,
slivers narrower than half its square root removed.
"""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import shapely

from data_products import grid

from .config import DetectionConfig

log = logging.getLogger(__name__)

DETECTION_COLUMNS = ["geometry", "detector", "detector_score", "criteria"]


def empty_detections() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"detector": [], "detector_score": [], "criteria": []},
                            geometry=gpd.GeoSeries([], crs=grid.CRS), crs=grid.CRS)[DETECTION_COLUMNS]


def clean_polygon(geom, min_hole_m2: float):
    """Fill holes smaller than ``min_hole_m2`` and drop slivers narrower than
    sqrt(min_hole_m2)/2 (an opening by a buffer out and back); keeps the largest part's
    topology otherwise. Returns a Polygon or MultiPolygon (possibly empty)."""
    if geom is None or geom.is_empty:
        return geom
    w = np.sqrt(min_hole_m2) / 4.0
    opened = geom.buffer(-w, join_style="mitre").buffer(w, join_style="mitre")
    if opened.is_empty:
        return opened
    opened = opened.intersection(geom)  # opening never grows the outline
    parts = []
    for poly in getattr(opened, "geoms", [opened]):
        if poly.geom_type != "Polygon" or poly.area < min_hole_m2:
            continue
        holes = [r for r in poly.interiors if shapely.Polygon(r).area >= min_hole_m2]
        parts.append(shapely.Polygon(poly.exterior, holes))
    if not parts:
        return shapely.Polygon()
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def rule_based(candidates: gpd.GeoDataFrame, cfg: DetectionConfig) -> gpd.GeoDataFrame:
    """Candidates meeting all three criteria, as detections with score 1."""
    keep = candidates[candidates.criteria >= 3]
    if not len(keep):
        return empty_detections()
    geoms = [clean_polygon(g, cfg.min_hole_m2) for g in keep.geometry]
    out = gpd.GeoDataFrame({"detector": "rules", "detector_score": 1.0, "criteria": keep.criteria.astype(int).values},
                           geometry=gpd.GeoSeries(geoms, crs=grid.CRS), crs=grid.CRS)
    return out[~out.geometry.is_empty].reset_index(drop=True)[DETECTION_COLUMNS]


def detect_slumps(mosaic, candidates: gpd.GeoDataFrame, cfg: DetectionConfig, model=None) -> gpd.GeoDataFrame:
    """Slumps owned by the mosaic's core cell. ``model`` is a loaded Mask R-CNN detector
    (see :func:`load_detector`); None means the rule-based criteria."""
    if model is None:
        return rule_based(candidates, cfg)
    return model.detect(mosaic, candidates, cfg)


def load_detector(cfg: DetectionConfig):
    """The Mask R-CNN detector the configuration asks for, or None for the rules.

    ``method = "auto"`` uses the weights when present (``weights_path`` or the shipped
    ``models/`` file) and falls back to the rules with a log line otherwise;
    ``"maskrcnn"`` raises if the weights cannot be loaded; ``"rules"`` never loads one."""
    if cfg.method == "rules":
        return None
    if cfg.method not in ("auto", "maskrcnn"):
        raise ValueError(f"detection.method must be auto, maskrcnn or rules, not {cfg.method!r}")
    try:
        from . import maskrcnn
    except ImportError as exc:
        if cfg.method == "maskrcnn":
            raise
        log.info("Mask R-CNN unavailable (%s); detecting with the rule-based criteria", exc)
        return None
    path = maskrcnn.weights_file(cfg.weights_path)
    if path is None:
        if cfg.method == "maskrcnn":
            raise FileNotFoundError(f"detection.method is maskrcnn but no weights at {cfg.weights_path or 'models/'}")
        log.info("no Mask R-CNN weights; detecting with the rule-based criteria")
        return None
    return maskrcnn.Detector.load(path)


def detector_id(cfg: DetectionConfig) -> str:
    """Identifies the detector a run would use ("rules" or "maskrcnn:<weights digest>"),
    so that products are recomputed when the weights change."""
    if cfg.method == "rules":
        return "rules"
    try:
        from . import maskrcnn
    except ImportError:
        return "rules"
    path = maskrcnn.weights_file(cfg.weights_path)
    if path is None:
        return "rules"
    import hashlib

    return "maskrcnn:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
