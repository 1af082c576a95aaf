"""Mask R-CNN slump detector (DESIGN step 7): instance masks on 3-band chips around candidates.

Chips
-----
A chip is a square window of the cell + halo mosaic (:func:`pipeline.detection.candidates.read_mosaic`)
centred on a candidate cluster's centroid, 256 pixels of the 2 m grid on a side (512 m, larger
than the largest sample slump; a property of the weights, recorded as ``chip_px`` in their
metadata), padded with "no data" where it
leaves the mosaic. Band order and normalisation (:func:`normalise_bands`):

0. **dh** (m): ``clip(dh / 4, -3, 3)``;
1. **total curvature** K (m⁻²) of the recent surface: ``clip(log10(K + 1e-7) + 5, -2, 3)``
   (typical ground ~1e-5 maps to 0, headwalls and scarps to 1-2);
2. **t2** (days since 2000 of the first observation after the change), relative to the chip:
   ``clip((t2 - t_ref) / 1095, -2, 2)`` where ``t_ref`` is the median t2 of the chip's pixels that
   dropped at least 1 m, and 0 where |dh| < 0.5 m (no change, so no meaningful date). A retreating
   headwall shows as a ramp ("rainbow") of this band across the slump; a drained lake or a
   one-off landslide is flat.

Each band's no data (NaN dh; NaN curvature; t2 where dh is NaN, or missing where the ground
changed) becomes 0 in the model input. The
model sees the chip downsampled by ``scale`` (2: 4 m pixels, 128 × 128) by block means of the
normalised bands (no data excluded from the mean); instance masks come back at 4 m, are
upsampled to the 2 m grid and - with ``snap_to_loss`` - snapped to the pixels that dropped
at least 1 m, so the outline keeps the 2 m detail of the change rasters.

Model
-----
``torchvision.models.detection.MaskRCNN`` with a ResNet-18 body cut after its third stage
(strides 4, 8, 16; the fourth stage's 8.4 M parameters buy nothing at these object sizes),
BatchNorm (trained from scratch, no pretrained weights: nothing is downloaded), a 128-channel
FPN (+ max-pool level), anchors 16-128 px of the 4 m chip, a 256-wide box head and a 128-channel
mask head; two classes (background, slump). About 5 M parameters, saved as an fp16 state dict.

Inference per mosaic (:meth:`Detector.detect`): chips around the core-owned candidates with
at least ``min_criteria`` criteria; instances scoring ``min_score`` or more that overlap their
candidate; duplicates from overlapping chips merged (IoU ≥ 0.3, highest score kept); polygons
(EPSG:3413, :func:`rasterio.features.shapes`) cleaned by :func:`pipeline.detection.detect.clean_polygon`;
only instances whose centroid lies in the core cell are returned, so a slump on a cell edge is
found once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
from typing import TYPE_CHECKING

import shapely
from scipy import ndimage

from data_products import grid

from pipeline.detection import weights
from pipeline.dem.change import NODATA_DATE
from pipeline.config import DetectionConfig
from pipeline.detection.vectorize import DETECTION_COLUMNS, clean_polygon, empty_detections

if TYPE_CHECKING:
    from torchvision.models.detection import MaskRCNN

log = logging.getLogger(__name__)

BANDS = ("dh", "curvature", "t2")
MODEL_VERSION = 1
#: the weights shipped with the package
DEFAULT_WEIGHTS = weights.models_dir() / weights.MASKRCNN_FILE  # package data (pipeline/models/)

DH_SCALE_M = 4.0
T2_SCALE_DAYS = 1095.0
LOSS_M = -1.0
CHANGE_M = 0.5


# ---------------------------------------------------------------------------------------------
# chips


def normalise_bands(dh: np.ndarray, curvature: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 model bands from raw 2 m rasters (see the module docstring);
    NaN where the input has no data."""
    dh = dh.astype(np.float32)
    b0 = np.clip(dh / DH_SCALE_M, -3, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        b1 = np.clip(np.log10(np.clip(curvature.astype(np.float64), 0, None) + 1e-7) + 5, -2, 3).astype(np.float32)
    tt = t2.astype(np.float64)
    tt[t2 == NODATA_DATE] = np.nan
    loss = np.nan_to_num(dh, nan=0.0) <= LOSS_M
    ref_px = tt[loss & np.isfinite(tt)]
    if ref_px.size == 0:
        ref_px = tt[np.isfinite(tt)]
    ref = float(np.median(ref_px)) if ref_px.size else 0.0
    b2 = np.clip((tt - ref) / T2_SCALE_DAYS, -2, 2).astype(np.float32)
    changed = np.abs(np.nan_to_num(dh, nan=0.0)) >= CHANGE_M
    b2 = np.where(changed, b2, np.where(np.isfinite(dh), 0.0, np.nan)).astype(np.float32)
    b1[~np.isfinite(curvature)] = np.nan
    return np.stack([b0, b1, b2])


def downsample(bands: np.ndarray, scale: int) -> np.ndarray:
    """Block means over ``scale`` x ``scale`` pixels ignoring NaN; NaN (no data) -> 0."""
    if scale > 1:
        c, h, w = bands.shape
        blocks = bands.reshape(c, h // scale, scale, w // scale, scale)
        valid = np.isfinite(blocks)
        s = np.where(valid, blocks, 0).sum(axis=(2, 4))
        n = valid.sum(axis=(2, 4))
        bands = np.where(n > 0, s / np.maximum(n, 1), np.nan).astype(np.float32)
    return np.nan_to_num(bands, nan=0.0).astype(np.float32)


def window(a: np.ndarray, r0: int, c0: int, size: int, fill) -> np.ndarray:
    """``a[r0:r0+size, c0:c0+size]`` padded with ``fill`` where it leaves the array."""
    out = np.full((size, size), fill, dtype=a.dtype)
    H, W = a.shape
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + size, H), min(c0 + size, W)
    if re > rs and ce > cs:
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = a[rs:re, cs:ce]
    return out


def chip_origin(row: float, col: float, size: int) -> tuple[int, int]:
    """Top-left (row, col) of the chip of ``size`` centred on a mosaic position."""
    return round(row) - size // 2, round(col) - size // 2


def raw_chip(layers: dict, r0: int, c0: int, size: int) -> dict[str, np.ndarray]:
    return {"dh": window(layers["dh"], r0, c0, size, np.nan),
            "curvature": window(layers["curvature"], r0, c0, size, np.nan),
            "t2": window(layers["t2"], r0, c0, size, NODATA_DATE)}


def chip_bands(layers: dict, r0: int, c0: int, size: int) -> np.ndarray:
    """The normalised (3, size, size) bands of the chip at (r0, c0), at the 2 m grid."""
    raw = raw_chip(layers, r0, c0, size)
    return normalise_bands(raw["dh"], raw["curvature"], raw["t2"])


# ---------------------------------------------------------------------------------------------
# model


#: the architecture of the shipped weights (recorded with them; see :func:`build_model`)
#: the network's shape and its built-in proposal limits, recorded with the weights (``meta["arch"]``):
#: they belong to a trained model, not to a run (a run's thresholds are ``DetectionConfig``'s);
#: ``box_score_min`` only pre-filters boxes before ``DetectionConfig``'s score threshold applies
ARCH = {"fpn_channels": 64, "box_repr": 256, "mask_channels": [64, 64], "anchors": [8, 16, 32, 64],
        "box_batch": 64, "rpn_batch": 128, "rpn_pre_nms_train": 300, "rpn_post_nms_train": 150,
        "rpn_pre_nms_test": 200, "rpn_post_nms_test": 50, "detections_per_chip": 20, "box_score_min": 0.05}


def build_model(input_px: int = 128, arch: dict | None = None) -> MaskRCNN:
    """The small Mask R-CNN (random initialisation; nothing is downloaded)."""
    # torch and torchvision are imported here, not with the module: the evidence and rules
    # detectors never pay for them
    from torch import nn
    from torchvision.models import resnet18
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    a = {**ARCH, **(arch or {})}
    body = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    fpn_channels = int(a["fpn_channels"])
    backbone = BackboneWithFPN(body, return_layers={"layer1": "0", "layer2": "1", "layer3": "2"},
                               in_channels_list=[64, 128, 256], out_channels=fpn_channels,
                               extra_blocks=LastLevelMaxPool())
    anchors = AnchorGenerator(sizes=tuple((int(s),) for s in a["anchors"]), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, int(a["box_repr"]))
    mask_layers = [int(c) for c in a["mask_channels"]]
    mask_head = MaskRCNNHeads(fpn_channels, mask_layers, 1)
    model = MaskRCNN(
        backbone, num_classes=None, min_size=input_px, max_size=input_px,
        image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=int(a["rpn_pre_nms_train"]), rpn_post_nms_top_n_train=int(a["rpn_post_nms_train"]),
        rpn_pre_nms_top_n_test=int(a["rpn_pre_nms_test"]), rpn_post_nms_top_n_test=int(a["rpn_post_nms_test"]),
        rpn_batch_size_per_image=int(a["rpn_batch"]),
        box_head=box_head, box_predictor=FastRCNNPredictor(int(a["box_repr"]), 2),
        box_batch_size_per_image=int(a["box_batch"]), box_detections_per_img=int(a["detections_per_chip"]),
        box_score_thresh=float(a["box_score_min"]),
        mask_head=mask_head, mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], 2),
    )
    return model


def missing_libraries() -> list[str]:
    """The libraries the Mask R-CNN needs that are not installed (torch, torchvision)."""
    import importlib.util

    return [m for m in ("torch", "torchvision") if importlib.util.find_spec(m) is None]


def weights_file(path: str | Path | None = None) -> Path | None:
    """The weights to use: ``path`` if given (None if it does not exist), else the shipped
    ``pipeline/models/rts_maskrcnn.pt`` if installed."""
    if path:
        p = Path(path)
        return p if p.is_file() else None
    return weights.shipped(weights.MASKRCNN_FILE)


class Detector:
    """A trained Mask R-CNN with its chip geometry (``chip_px`` of the 2 m grid seen at
    ``scale``) and inference on mosaics."""

    def __init__(self, model: MaskRCNN, meta: dict | None = None):
        self.model = model.eval()
        self.meta = {"version": MODEL_VERSION, "bands": list(BANDS), "chip_px": 256, "scale": 2, "arch": dict(ARCH),
                     **(meta or {})}

    @property
    def chip_px(self) -> int:
        return int(self.meta["chip_px"])

    @property
    def scale(self) -> int:
        return int(self.meta["scale"])

    # -- persistence
    def save(self, path: str | Path, half: bool = True) -> Path:
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in self.model.state_dict().items()}
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"meta": self.meta, "state_dict": sd}, tmp)
        tmp.replace(path)
        weights.record(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        import torch

        path = weights.verify(Path(path))  # a shipped file must match its recorded checksum
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a truncated or foreign file
            raise ValueError(f"{path}: not readable Mask R-CNN weights ({type(exc).__name__}: {exc})") from None
        meta = blob["meta"]
        if meta.get("version") != MODEL_VERSION or list(meta.get("bands", [])) != list(BANDS):
            raise ValueError(f"{path}: weights for model version {meta.get('version')} / bands {meta.get('bands')}, "
                             f"this code expects {MODEL_VERSION} / {list(BANDS)}")
        model = build_model(int(meta["chip_px"]) // int(meta["scale"]), meta.get("arch"))
        sd = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
        model.load_state_dict(sd)
        return cls(model, meta)

    # -- inference
    def predict(self, images: np.ndarray, batch: int = 8) -> list[dict]:
        """Raw model output for (N, 3, h, w) model-resolution chips: per chip ``scores`` (n,),
        ``masks`` (n, h, w) probabilities, ``boxes`` (n, 4)."""
        import torch

        self.model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = [torch.from_numpy(np.ascontiguousarray(a)) for a in images[i : i + batch]]
                for r in self.model(x):
                    out.append({"scores": r["scores"].numpy(), "masks": r["masks"][:, 0].numpy(),
                                "boxes": r["boxes"].numpy()})
        return out

    def detect(self, mosaic, candidates: gpd.GeoDataFrame, cfg: DetectionConfig) -> gpd.GeoDataFrame:
        if candidates is None or not len(candidates):
            return empty_detections()
        cands = candidates[candidates.criteria >= cfg.min_criteria].reset_index(drop=True)
        if not len(cands):
            return empty_detections()
        size, scale = self.chip_px, self.scale
        inv = ~mosaic.transform
        layers = mosaic.layers
        dh = layers["dh"]
        loss_all = np.nan_to_num(dh, nan=0.0) <= LOSS_M
        shape = dh.shape
        chips, origins, cmasks = [], [], []
        for geom in cands.geometry:
            c = geom.centroid
            col, row = inv @ (c.x, c.y)
            r0, c0 = chip_origin(row, col, size)
            chips.append(downsample(chip_bands(layers, r0, c0, size), scale))
            origins.append((r0, c0))
            cm = rasterio.features.geometry_mask([geom], (size, size), mosaic.transform
                                                 @ rasterio.Affine.translation(c0, r0), invert=True)
            cmasks.append(cm)
        preds = self.predict(np.stack(chips))
        inst = []  # (score, candidate index, full-mosaic pixel mask bbox, mask)
        for k, (p, (r0, c0), cm) in enumerate(zip(preds, origins, cmasks)):
            for score, prob in zip(p["scores"], p["masks"]):
                if score < cfg.min_score:
                    continue
                inside = prob >= cfg.mask_probability
                m = np.kron(inside, np.ones((scale, scale), bool)) if scale > 1 else inside
                if m.sum() == 0:
                    continue
                if (m & cm).sum() < cfg.min_instance_overlap_fraction * m.sum():
                    continue  # an instance of some other cluster: its own chip judges it
                if cfg.snap_to_loss:
                    m = snap_to_loss(m, window(loss_all, r0, c0, size, False))
                # crop to the mosaic
                full = np.zeros(shape, bool)
                rs, cs = max(r0, 0), max(c0, 0)
                re, ce = min(r0 + size, shape[0]), min(c0 + size, shape[1])
                full[rs:re, cs:ce] = m[rs - r0 : re - r0, cs - c0 : ce - c0]
                if full.any():
                    inst.append((float(score), k, full))
        # merge duplicates (overlapping chips see the same slump): keep the highest score
        inst.sort(key=lambda t: -t[0])
        kept = []
        for s, k, m in inst:
            dup = False
            for _, _, km in kept:
                inter = (m & km).sum()
                if inter and inter / (m.sum() + km.sum() - inter) >= 0.3 or inter >= 0.8 * m.sum():
                    dup = True
                    break
            if not dup:
                kept.append((s, k, m))
        rows, geoms = [], []
        core_r, core_c = mosaic.core
        for s, _, m in kept:
            rr, cc = np.nonzero(m)
            cr, ccol = rr.mean(), cc.mean()
            if not (core_r.start <= cr < core_r.stop and core_c.start <= ccol < core_c.stop):
                continue
            geom = mask_polygon(m, mosaic.transform)
            geom = clean_polygon(geom, cfg.min_hole_m2)
            if geom is None or geom.is_empty:
                continue
            # the criteria of the candidate the instance overlaps most
            ov = [geom.intersection(g).area for g in cands.geometry]
            crit = int(cands.criteria.iloc[int(np.argmax(ov))]) if max(ov) > 0 else 0
            rows.append({"detector": "maskrcnn", "detector_score": s, "criteria": crit})
            geoms.append(geom)
        if not rows:
            return empty_detections()
        out = gpd.GeoDataFrame(rows, geometry=gpd.GeoSeries(geoms, crs=grid.CRS), crs=grid.CRS)
        out["detector_score"] = out.detector_score.astype(float)
        out["criteria"] = out.criteria.astype(int)
        return out[DETECTION_COLUMNS].reset_index(drop=True)


def snap_to_loss(mask: np.ndarray, loss: np.ndarray, grow_px: int = 3, min_keep: float = 0.5) -> np.ndarray:
    """The instance mask's outline snapped to the pixels that dropped: loss pixels within
    ``grow_px`` of the mask, connected components that touch the mask itself. Falls back to
    the mask when that keeps less than ``min_keep`` of its area (a slump whose loss the
    change rasters do not resolve)."""
    near = ndimage.binary_dilation(mask, iterations=grow_px)
    snapped = loss & near
    lab, n = ndimage.label(snapped, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    hit = np.unique(lab[mask & snapped])
    hit = hit[hit > 0]
    snapped = np.isin(lab, hit)
    if snapped.sum() < min_keep * mask.sum():
        return mask
    return snapped


def mask_polygon(mask: np.ndarray, transform) -> shapely.Geometry:
    """Union of the polygons of a boolean mask (EPSG:3413 via ``transform``)."""
    parts = [shapely.geometry.shape(g) for g, v in rasterio.features.shapes(
        mask.astype(np.uint8), mask=mask, transform=transform, connectivity=8) if v == 1]
    return shapely.union_all(parts) if parts else shapely.Polygon()
