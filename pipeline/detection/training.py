"""Training the Mask R-CNN slump detector (``rts train``) on generated samples.

Training data come from the sample generator (:mod:`pipeline.synth`) over many seeds and
all four sites, run through the DEM stage exactly as ``rts run`` does. Evaluation seeds
(0-99: 0 is the default sample, 11 the test fixture) are never used for training; training
seeds start at :data:`MIN_TRAIN_SEED`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from data_products import grid
from data_products.store import ProductsStore
from pipeline import console
from pipeline.config import Config
from pipeline.detection.candidates import find_candidates, read_mosaic
from pipeline.detection.maskrcnn import ARCH, Detector, build_model, chip_bands, chip_origin, downsample, window
from pipeline.orchestration.run import run
from pipeline.synth import generate_sample

log = logging.getLogger(__name__)

#: seeds below this are reserved for evaluation
MIN_TRAIN_SEED = 1000
ALL_SITES = ("peel", "banks", "taymyr", "yamal")


def prepare_sample(cache: Path, seed: int, sites=ALL_SITES, cells: int = 2, workers: int = 2) -> Path:
    """Generate the sample of ``seed`` and run the DEM stage on it, under ``cache/seed_<seed>``
    (reused when complete). Returns the folder (``sample/`` and ``products/`` inside)."""

    if seed < MIN_TRAIN_SEED:
        raise ValueError(f"seed {seed} is reserved for evaluation; training seeds are >= {MIN_TRAIN_SEED}")
    folder = Path(cache) / f"seed_{seed}"
    done = folder / "done.json"
    if done.exists():
        return folder
    t0 = time.time()
    generate_sample(folder / "sample", seed=seed, sites=list(sites), cells=cells, workers=workers, log=lambda m: None)
    cfg = Config()
    run(folder / "sample" / "stac" / "catalog.json", folder / "products", cfg, workers=workers, progress=False)
    done.write_text(json.dumps({"seed": seed, "sites": list(sites), "cells": cells,
                                "seconds": round(time.time() - t0, 1)}))
    return folder


# ---------------------------------------------------------------------------------------------
# chips and targets


def truth_instances(sample: Path, mosaic) -> tuple[np.ndarray, list[int]]:
    """Truth slumps rasterised on the mosaic grid as instance labels (0 = background, k =
    the k-th slump), with their labels; training labels only."""
    import geopandas as gpd
    import rasterio.features
    import shapely

    truth = gpd.read_parquet(Path(sample) / "truth" / "slumps.parquet")
    shape = mosaic.layers["dh"].shape
    h, w = shape
    t = mosaic.transform
    bounds = shapely.box(t.c, t.f + t.e * h, t.c + t.a * w, t.f)
    truth = truth[truth.intersects(bounds)].reset_index(drop=True)
    if not len(truth):
        return np.zeros(shape, np.int32), []
    lab = rasterio.features.rasterize(((g, i + 1) for i, g in enumerate(truth.geometry)), out_shape=shape,
                                      transform=t, fill=0, dtype="int32")
    return lab, list(range(1, len(truth) + 1))


def cell_chips(sample: Path, products: Path, cell, cfg, rng: np.random.Generator, chip_px: int = 256,
               jitter_px: int = 48) -> list[dict]:
    """Training chips of one cell: one around every candidate cluster (any criteria: the
    look-alikes among them are the negatives) and one, jittered, around every true slump
    whose centroid lies in the cell. Each: ``image`` (3, chip, chip) float16 normalised
    bands at 2 m, ``masks`` (n, chip, chip) bool instance masks of the slumps visible in
    the chip, ``kind`` (candidate / slump)."""


    mosaic = read_mosaic(products, cell, cfg.candidates.halo_m, cfg.grid.resolution_m)
    if not np.isfinite(mosaic.layers["dh"][mosaic.core]).any():
        return []
    cands = find_candidates(mosaic, cfg.candidates, cfg.grid.resolution_m)
    lab, ids = truth_instances(sample, mosaic)
    inv = ~mosaic.transform
    centres = []
    for g in cands.geometry:
        c = g.centroid
        col, row = inv @ (c.x, c.y)
        centres.append(("candidate", row, col))
    if ids:
        com = ndimage.center_of_mass(np.ones_like(lab), lab, ids)
        core_r, core_c = mosaic.core
        for (r, c) in com:
            if core_r.start <= r < core_r.stop and core_c.start <= c < core_c.stop:
                dr, dc = rng.integers(-jitter_px, jitter_px + 1, 2)
                centres.append(("slump", r + dr, c + dc))
    sizes = np.bincount(lab.ravel(), minlength=len(ids) + 1) if ids else None
    out = []
    for kind, r, c in centres:
        r0, c0 = chip_origin(r, c, chip_px)
        img = chip_bands(mosaic.layers, r0, c0, chip_px)
        lw = window(lab, r0, c0, chip_px, 0)
        masks = []
        for k in np.unique(lw):
            if k == 0:
                continue
            m = lw == k
            # a slump mostly outside the chip is background here; its own chip shows it
            if m.sum() >= 250 and m.sum() >= 0.4 * sizes[k]:
                masks.append(m)
        out.append({"image": img.astype(np.float16), "masks": np.array(masks, bool).reshape(-1, chip_px, chip_px),
                    "kind": kind})
    return out


def sample_chips(folder: Path, chip_px: int = 256, seed: int = 0) -> list[dict]:
    """Every training chip of a prepared sample folder (cached as ``chips_<chip_px>.npz``)."""


    folder = Path(folder)
    cache = folder / f"chips_{chip_px}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            images, packed, n_masks, kinds = z["images"], z["masks"], z["n_masks"], z["kinds"]
        start = np.concatenate([[0], np.cumsum(n_masks)])
        return [{"image": images[i], "masks": np.unpackbits(packed[start[i]:start[i + 1]], axis=-1,
                                                             count=chip_px).astype(bool), "kind": str(kinds[i])}
                for i in range(len(n_masks))]
    cfg = Config()
    rng = np.random.default_rng(seed)
    chips = []
    for cid in ProductsStore(folder / "products").live_cells():
        chips += cell_chips(folder / "sample", folder / "products", grid.parse_cell_id(cid), cfg, rng, chip_px)
    images = np.stack([c["image"] for c in chips]) if chips else np.zeros((0, 3, chip_px, chip_px), np.float16)
    masks = (np.concatenate([np.packbits(c["masks"], axis=-1) for c in chips])
             if chips else np.zeros((0, chip_px, chip_px // 8), np.uint8))
    np.savez(cache, images=images, masks=masks, n_masks=np.array([len(c["masks"]) for c in chips], np.int64),
             kinds=np.array([c["kind"] for c in chips]))
    return chips


# ---------------------------------------------------------------------------------------------
# augmentation


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(n, 4) x0, y0, x1, y1 pixel boxes (x1, y1 exclusive) of boolean masks."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def augment(image: np.ndarray, masks: np.ndarray, rng: np.random.Generator, scale_range=(0.8, 1.25)
            ) -> tuple[np.ndarray, np.ndarray]:
    """A random 90-degree rotation, flips and zoom (by ``scale_range``, about the chip
    centre, cropped or padded with no data back to the chip size) of a (3, H, W) image and
    its (n, H, W) masks, applied identically to both."""

    k = int(rng.integers(4))
    flip_h, flip_v = bool(rng.integers(2)), bool(rng.integers(2))
    s = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1])))) if scale_range else 1.0
    img = np.rot90(image, k, axes=(1, 2))
    msk = np.rot90(masks, k, axes=(1, 2))
    if flip_h:
        img, msk = img[:, :, ::-1], msk[:, :, ::-1]
    if flip_v:
        img, msk = img[:, ::-1, :], msk[:, ::-1, :]
    img, msk = np.ascontiguousarray(img, np.float32), np.ascontiguousarray(msk)
    if abs(s - 1) > 1e-3:
        H = img.shape[1]
        n = round(H * s)
        zi = np.stack([_zoom_to(b, n, order=1) for b in img])
        zm = np.stack([_zoom_to(m.astype(np.float32), n, order=0) > 0.5 for m in msk]) if len(msk) else \
            np.zeros((0, n, n), bool)
        img = _crop_or_pad(zi, H, np.nan)
        msk = _crop_or_pad(zm, H, False)
    return img, msk


def _zoom_to(a: np.ndarray, n: int, order: int) -> np.ndarray:

    valid = np.isfinite(a)
    z = ndimage.zoom(np.where(valid, a, 0), n / a.shape[0], order=order, grid_mode=True, mode="nearest")
    zv = ndimage.zoom(valid.astype(np.float32), n / a.shape[0], order=0, grid_mode=True, mode="nearest")
    z = z[:n, :n]
    return np.where(zv[:n, :n] > 0.5, z, np.nan)


def _crop_or_pad(a: np.ndarray, size: int, fill) -> np.ndarray:
    n = a.shape[1]
    if n >= size:
        o = (n - size) // 2
        return a[:, o : o + size, o : o + size]
    out = np.full((a.shape[0], size, size), fill, a.dtype)
    o = (size - n) // 2
    out[:, o : o + n, o : o + n] = a
    return out


def model_target(image: np.ndarray, masks: np.ndarray, scale: int, min_px: int = 12):
    """Model-resolution tensors: the image downsampled by ``scale`` and its target dict
    (boxes from the downsampled masks, so boxes and masks always agree)."""
    import torch  # imported where it is used: `rts` loads this module for every command

    x = downsample(image.astype(np.float32), scale)
    h = x.shape[1]
    if len(masks):
        m = masks.reshape(len(masks), h, scale, h, scale).mean(axis=(2, 4)) >= 0.5
        m = m[m.sum(axis=(1, 2)) >= min_px]
    else:
        m = np.zeros((0, h, h), bool)
    target = {"boxes": torch.from_numpy(masks_to_boxes(m)).reshape(-1, 4),
              "labels": torch.ones(len(m), dtype=torch.int64),
              "masks": torch.from_numpy(m.astype(np.uint8))}
    return torch.from_numpy(x), target


# ---------------------------------------------------------------------------------------------
# training


def train_model(chips: list[dict], *, iterations: int, batch: int = 8, lr: float = 1e-3, seed: int = 0,
                chip_px: int = 256, scale: int = 2, threads: int = 1, log_every: int = 10, progress=None,
                augment_data: bool = True):
    """Train a fresh detector on ``chips``; reproducible given ``seed`` (weights initialisation,
    data order and augmentation all derive from it). Returns (Detector, log dict)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(chip_px // scale)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warm = max(1, min(50, iterations // 10))

    def lr_at(i):
        if i < warm:
            return lr * (i + 1) / warm
        return lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * (i - warm) / max(1, iterations - warm))))

    order: list[int] = []
    history = []
    t0 = time.time()
    for it in range(iterations):
        if len(order) < batch:
            order += list(rng.permutation(len(chips)))
        idx, order = order[:batch], order[batch:]
        xs, ts = [], []
        for i in idx:
            img = chips[i]["image"].astype(np.float32)
            msk = chips[i]["masks"]
            if augment_data:
                img, msk = augment(img, msk, rng)
            x, t = model_target(img, msk, scale)
            xs.append(x)
            ts.append(t)
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        losses = model(xs, ts)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        rec = {"iteration": it, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()},
               "lr": lr_at(it), "seconds": round(time.time() - t0, 2)}
        history.append(rec)
        if progress and (it % log_every == 0 or it == iterations - 1):
            progress(rec)
    model.eval()
    meta = {"chip_px": chip_px, "scale": scale, "arch": dict(ARCH), "trained_iterations": iterations, "batch": batch,
            "seed": seed}
    return Detector(model, meta), {"history": history, "seconds": round(time.time() - t0, 1)}


def train(cache: str | Path, seeds: list[int], out: str | Path, *, sites=ALL_SITES, iterations: int = 600,
          batch: int = 8, lr: float = 1e-3, seed: int = 0, chip_px: int = 256, scale: int = 2, workers: int = 2,
          threads: int = 1, log_path: str | Path | None = None, command: str = "") -> dict:
    """``rts train``: prepare (or reuse) the samples of ``seeds``, cut their chips, train and
    write the weights (``out``) and a JSON training log (``log_path``, default next to them)."""
    bad = [s for s in seeds if s < MIN_TRAIN_SEED]
    if bad:
        raise ValueError(f"seeds {bad} are reserved for evaluation (0-{MIN_TRAIN_SEED - 1}); "
                         f"train on seeds >= {MIN_TRAIN_SEED}")
    cache, out = Path(cache), Path(out)
    t0 = time.time()
    chips, per_seed = [], {}
    for s in seeds:
        ts = time.time()
        folder = prepare_sample(cache, s, sites, workers=workers)
        c = sample_chips(folder, chip_px, seed=s)
        chips += c
        per_seed[s] = {"chips": len(c), "slump_chips": sum(x["kind"] == "slump" for x in c),
                       "candidate_chips": sum(x["kind"] == "candidate" for x in c),
                       "chips_without_slump": sum(len(x["masks"]) == 0 for x in c),
                       "instances": int(sum(len(x["masks"]) for x in c)), "seconds": round(time.time() - ts, 1)}
        console.say(f"rts train: seed {s}: {per_seed[s]}")
    prep_s = time.time() - t0

    def show(rec):
        console.say(f"rts train: it {rec['iteration']:5d} loss {rec['loss']:.3f} (mask {rec['loss_mask']:.3f}, "
                    f"cls {rec['loss_classifier']:.3f}, rpn {rec['loss_objectness']:.3f}) {rec['seconds']:.0f} s")

    det, tlog = train_model(chips, iterations=iterations, batch=batch, lr=lr, seed=seed, chip_px=chip_px, scale=scale,
                            threads=threads, progress=show, log_every=25)
    det.meta.update({"train_seeds": list(seeds), "sites": list(sites), "chips": len(chips)})
    det.save(out)
    record = {
        "command": command, "seeds": list(seeds), "sites": list(sites), "chips": len(chips), "per_seed": per_seed,
        "iterations": iterations, "batch": batch, "lr": lr, "seed": seed, "chip_px": chip_px, "scale": scale,
        "threads": threads, "prepare_seconds": round(prep_s, 1), "train_seconds": tlog["seconds"],
        "weights": str(out), "weights_bytes": out.stat().st_size,
        "final_loss_mean_last50": float(np.mean([h["loss"] for h in tlog["history"][-50:]])),
        "history": tlog["history"],
    }
    log_path = Path(log_path) if log_path else out.with_name(out.stem + "_training_log.json")
    log_path.write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":  # python -m pipeline.detection.training CACHE SEED...
    import sys

    logging.basicConfig(level=logging.INFO)
    console.attach()
    cache = Path(sys.argv[1])
    for s in sys.argv[2:]:
        t = time.time()
        prepare_sample(cache, int(s))
        console.say(f"seed {s} ready in {time.time() - t:.0f} s")
