"""Detection benchmark: Mask R-CNN training time (from the shipped training log) and inference
time per chip and per cell on this machine, beside the rule-based criteria.

``run(work)`` returns a markdown section; ``python -m benchmarks.detection [--work DIR]`` prints it.
Work data: the default sample (seed 0) in ``work/sample`` (generated when absent) and the DEM
stage of its first site's cells in ``work/products_detection`` (reused when present).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _products(work: Path) -> tuple[Path, list[str]]:
    from data_products.store import DH_RASTER, ProductsStore
    from pipeline.config import Config
    from pipeline.orchestration.run import run as run_pipeline
    from pipeline.synth import generate_sample

    sample = work / "sample"
    if not (sample / "sample.json").exists():
        generate_sample(sample, seed=0, cells=2, workers=2, log=lambda m: None)
    cells = json.loads((sample / "sample.json").read_text())["sites"][0]["cells"]
    products = work / "products_detection"
    if not all(ProductsStore(products).tile_file(c, DH_RASTER).exists() for c in cells):
        run_pipeline(sample / "stac" / "catalog.json", products, Config(), tiles=cells, workers=2, progress=False)
    return products, cells


def run(work: Path, threads: int = 2) -> str:
    import torch

    from data_products import grid
    from pipeline.detection import maskrcnn
    from pipeline.detection.candidates import find_candidates, read_mosaic
    from pipeline.config import Config
    from pipeline.detection.detect import detect_slumps

    torch.set_num_threads(threads)
    work = Path(work)
    cfg = Config()
    lines = ["## Detection (Mask R-CNN)", ""]
    weights = maskrcnn.weights_file()
    if weights is None:
        return "\n".join(lines + ["No weights in pipeline/models/: nothing to benchmark.", ""])
    log_path = weights.with_name(weights.stem + "_training_log.json")
    if log_path.exists():
        tl = json.loads(log_path.read_text())
        lines += [(f"Training (from `{log_path.relative_to(ROOT)}`): {tl['chips']} chips from seeds "
                   f"{tl['seeds'][0]}-{tl['seeds'][-1]} ({', '.join(tl['sites'])}), {tl['iterations']} iterations of "
                   f"{tl['batch']} chips in **{tl['train_seconds'] / 60:.1f} min** on {tl['threads']} torch "
                   f"thread(s) (then cutting chips from cached samples: {tl['prepare_seconds'] / 60:.1f} min; "
                   "generating the samples and their DEM stage, done once, is in the model card). "
                   f"Weights: {weights.stat().st_size / 1e6:.1f} MB (fp16)."), ""]
    det = maskrcnn.Detector.load(weights)
    products, cells = _products(work)
    per_cell, per_rules, n_chips, chips = [], [], [], []
    for cid in cells:
        m = read_mosaic(products, grid.parse_cell_id(cid), cfg.candidates.halo_m)
        cands = find_candidates(m, cfg.candidates)
        t0 = time.perf_counter()
        detect_slumps(m, cands, cfg.detection, det)
        per_cell.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        detect_slumps(m, cands, cfg.detection, None)
        per_rules.append(time.perf_counter() - t0)
        shown = cands[cands.criteria >= cfg.detection.min_criteria]
        n_chips.append(len(shown))
        inv = ~m.transform
        for g in shown.geometry:
            col, row = inv @ (g.centroid.x, g.centroid.y)
            r0, c0 = maskrcnn.chip_origin(row, col, det.chip_px)
            chips.append(maskrcnn.downsample(maskrcnn.chip_bands(m.layers, r0, c0, det.chip_px), det.scale))
    one = []
    for x in chips[:20]:
        t0 = time.perf_counter()
        det.predict(x[None])
        one.append(time.perf_counter() - t0)
    batched = float("nan")
    if chips:
        t0 = time.perf_counter()
        det.predict(np.stack(chips), batch=8)
        batched = (time.perf_counter() - t0) / len(chips)
    lines += [(f"Inference on {threads} CPU thread(s), the default sample's first site ({len(cells)} cells, "
               f"{sum(n_chips)} candidate chips of {det.chip_px} x {det.chip_px} px at 2 m, seen at "
               f"{2 * det.scale} m):"), "",
              "| measure | value |", "|---|---|",
              f"| per chip, one at a time (median) | {np.median(one) * 1000:.0f} ms |" if one else "| per chip | - |",
              f"| per chip, batches of 8 | {batched * 1000:.0f} ms |",
              (f"| per cell, Mask R-CNN incl. chip cutting and polygons (mean / max) | {np.mean(per_cell):.2f} / "
               f"{np.max(per_cell):.2f} s |"),
              f"| per cell, rule-based criteria (mean) | {np.mean(per_rules) * 1000:.0f} ms |",
              f"| chips per cell (mean) | {np.mean(n_chips):.1f} |", "",
              ("Per-cell times exclude reading the mosaic and finding the candidates (shared by both detectors). "
               "The machine is shared, so times are upper bounds."), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="bench_work", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    print(run(args.work, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
