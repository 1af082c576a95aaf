"""``make bench``: performance and accuracy figures, written to docs/benchmarks.md.

* coregistration of strip pairs of the sample: this project's Nuth & Kääb against
  ``xdem.coreg.NuthKaab`` on the same pairs, same run (error against the injected truth, time);
* the whole DEM stage for one cell with all its strips: pixel-observations per second per core,
  next to merely decoding the same GeoTIFFs (the I/O limit), and peak memory;
* the honesty baseline: naive newest-minus-oldest differencing scored against the truth.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]  # this checkout


def _xdem_shift(xdem, ref_z: np.ndarray, tba_z: np.ndarray, transform, inliers: np.ndarray):
    """xdem's NuthKaab fit of ``tba_z`` on ``ref_z``: the displacement of tba (m, east and
    north; xdem reports the shift to apply, its negative) and the fit's time (s)."""
    ref = xdem.DEM.from_array(np.where(np.isfinite(ref_z), ref_z, -9999), transform, "EPSG:3413", nodata=-9999)
    tba = xdem.DEM.from_array(np.where(np.isfinite(tba_z), tba_z, -9999), transform, "EPSG:3413", nodata=-9999)
    t0 = time.perf_counter()
    nk = xdem.coreg.NuthKaab()
    nk.fit(ref, tba, inlier_mask=inliers)
    seconds = time.perf_counter() - t0
    aff = nk.meta["outputs"]["affine"]
    return -np.array([aff["shift_x"], aff["shift_y"]]), seconds


def _pair_bench(sample: Path, n_pairs: int) -> list[dict]:
    import xdem

    from data_products import grid
    from pipeline.config import CoregConfig
    from pipeline.dem.coreg import nuth_kaab, prepare
    from pipeline.strips.read import read_cell
    from pipeline.strips.sources import discover_strips

    truth = pd.read_csv(sample / "truth" / "strips.csv").set_index("name")
    manifest = json.loads((sample / "sample.json").read_text())
    cell = grid.parse_cell_id(manifest["sites"][0]["cells"][0])
    strips = discover_strips(sample / "strips" / manifest["sites"][0]["site"])
    wins = [w for w in (read_cell(s, cell, halo_m=400) for s in strips) if w is not None]
    tr = wins[0].transform
    rows = []
    cfg = CoregConfig()
    for k in range(1, min(n_pairs + 1, len(wins))):
        a, b = wins[0], wins[k]
        ta, tb = truth.loc[a.strip.meta.name], truth.loc[b.strip.meta.name]
        true = np.array([tb.dx_m - ta.dx_m, tb.dy_m - ta.dy_m])
        t0 = time.perf_counter()
        f = nuth_kaab(a.z, b.z, 2.0, cfg, matched=a.matched & b.matched)
        t_ours = time.perf_counter() - t0
        xd, t_x = _xdem_shift(xdem, a.z, b.z, tr, a.matched & b.matched)
        # like for like: xdem's NuthKaab on the same high-passed DEMs this project fits
        rng = np.random.default_rng(0)
        ha, hb = prepare(a.z, 2.0, cfg, rng).highpassed(), prepare(b.z, 2.0, cfg, rng).highpassed()
        xh, t_xh = _xdem_shift(xdem, ha, hb, tr, a.matched & b.matched)
        rows.append({"pair": k, "ours_err_m": float(np.hypot(*(np.array([f.dx, f.dy]) - true))), "ours_s": t_ours,
                     "xdem_err_m": float(np.hypot(*(xd - true))), "xdem_s": t_x,
                     "xdem_hp_err_m": float(np.hypot(*(xh - true))), "xdem_hp_s": t_xh})
    return rows


def _stage_bench(sample: Path, code_dir: Path | None = None) -> dict:
    """Run in a subprocess so that peak RSS is the stage's own; ``code_dir``: run another
    checkout of the code (the baseline) on the same strips."""
    code = r'''
import json, resource, sys, time
from pathlib import Path
import numpy as np, rasterio
from data_products import grid
from pipeline.config import Config
try:  # the stage packages
    from pipeline.dem.cell import process_cell
    from pipeline.evaluation.evaluate import offset_errors
    from pipeline.strips.read import read_cell_stack
    from pipeline.strips.sources import discover_strips
except ModuleNotFoundError:  # a baseline checkout from before them
    from pipeline.cell import process_cell
    from pipeline.evaluate import offset_errors
    from pipeline.sources import discover_strips, read_cell_stack
sample = Path(sys.argv[1])
m = json.loads((sample / "sample.json").read_text())
cell = grid.parse_cell_id(m["sites"][0]["cells"][0])
strips = discover_strips(sample / "strips" / m["sites"][0]["site"])
t0 = time.perf_counter(); ws = read_cell_stack(strips, cell, halo_m=400); t_read = time.perf_counter() - t0
process_cell(strips[:4], cell, Config(), warn=lambda m: None)  # compile the kernels first
t0 = time.perf_counter(); r = process_cell(strips, cell, Config(), warn=lambda m: None); t = time.perf_counter() - t0
n = len(r.strips); px = 1000 * 1000
err = offset_errors(r.coreg_table(), sample, cell)
print(json.dumps({"n_strips": n, "seconds": t, "decode_s": t_read, "timings": r.timings_s,
                  "rmse_h": float(np.sqrt(np.mean(err[:, 0] ** 2 + err[:, 1] ** 2))),
                  "rmse_z": float(np.sqrt(np.mean(err[:, 2] ** 2))),
                  "pixel_obs_per_s": px * n / t, "decode_pixel_obs_per_s": px * n / t_read,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''
    # `python -c` puts the working directory first on sys.path: run in the checkout to measure
    out = subprocess.run([sys.executable, "-c", code, str(Path(sample).resolve())], capture_output=True, text=True,
                         check=True, cwd=code_dir or REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--work", default="bench_work")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--skip", nargs="*", default=[], choices=["stack", "scaling", "remote", "detection", "dashboard"],
                    help="leave out these sections")
    ap.add_argument("--baseline-ref", metavar="GIT_REF",
                    help="also time the DEM stage of this commit (a git worktree) on the same cell, same run")
    args = ap.parse_args(argv)
    from pipeline.evaluation.evaluate import naive_difference
    from pipeline.synth import generate_sample

    work = Path(args.work)
    sample = work / "sample"
    if not (sample / "sample.json").exists():
        generate_sample(sample, seed=0, cells=2, workers=2)
    pairs = pd.DataFrame(_pair_bench(sample, args.pairs))
    stage = _stage_bench(sample)
    baseline = None
    stack_section = ""
    wt = (work / "baseline").resolve()
    if args.baseline_ref:
        if wt.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], check=False, capture_output=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), args.baseline_ref], check=True,
                       capture_output=True)
    try:
        if args.baseline_ref:  # alternate the two versions and keep each one's fastest run
            for _ in range(2):
                b = _stage_bench(sample, wt)
                baseline = b if baseline is None or b["seconds"] < baseline["seconds"] else baseline
                c = _stage_bench(sample)
                stage = c if c["seconds"] < stage["seconds"] else stage
        if "stack" not in args.skip:
            from . import stack

            print("benchmark: stack ...", flush=True)
            stack_section = stack.run(work, wt if args.baseline_ref else None, args.baseline_ref or "")
    finally:
        if args.baseline_ref:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], check=False, capture_output=True)
    sites = [s["site"] for s in json.loads((sample / "sample.json").read_text())["sites"]]
    naive = {site: naive_difference(sample, site)[0.5] for site in sites}
    lines = [
        "# Benchmarks", "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"generated by `make bench` on {time.strftime('%Y-%m-%d')}. "
        "Sample: the default (`rts synth --seed 0`: four sites, 2x2 cells).",
        "", "## Coregistration of one pair (cell + 400 m halo, the same pairs, same run)", "",
        "| pair | this project: horizontal error (m) | time (s) | xdem NuthKaab: horizontal error (m) | time (s) | "
        "xdem NuthKaab on the same high-passed DEMs: error (m) | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in pairs.iterrows():
        lines.append(f"| {int(r.pair)} | {r.ours_err_m:.3f} | {r.ours_s:.2f} | {r.xdem_err_m:.3f} | {r.xdem_s:.2f} | "
                     f"{r.xdem_hp_err_m:.3f} | {r.xdem_hp_s:.2f} |")
    lines += [f"| **median** | **{pairs.ours_err_m.median():.3f}** | **{pairs.ours_s.median():.2f}** | "
              f"**{pairs.xdem_err_m.median():.3f}** | **{pairs.xdem_s.median():.2f}** | "
              f"**{pairs.xdem_hp_err_m.median():.3f}** | **{pairs.xdem_hp_s.median():.2f}** |", "",
              f"Speed ratio (xdem time / ours): {pairs.xdem_s.median() / pairs.ours_s.median():.1f}x on the raw DEMs, "
              f"{pairs.xdem_hp_s.median() / pairs.ours_s.median():.1f}x on the same high-passed inputs. Our time "
              "includes preparing both DEMs (done once per DEM in a stack, not per pair).", "",
              "## DEM stage for one 2 km cell with all its strips", "",
              "| strips | total (s) | read | coregister | resample | change | terrain | pixel-obs/s (1 core) | "
              "decode only: pixel-obs/s | peak RSS (MB) | offsets after adjustment: RMSE h / z (m) |",
              "|---|---|---|---|---|---|---|---|---|---|---|",
              f"| {stage['n_strips']} | {stage['seconds']:.1f} | {stage['timings'].get('read', 0):.1f} | "
              f"{stage['timings'].get('coregister', 0):.1f} | {stage['timings'].get('resample', 0):.1f} | "
              f"{stage['timings'].get('change', 0):.1f} | {stage['timings'].get('terrain', 0):.1f} | "
              f"{stage['pixel_obs_per_s']:.3g} | {stage['decode_pixel_obs_per_s']:.3g} | {stage['peak_rss_mb']:.0f} | "
              f"{stage['rmse_h']:.3f} / {stage['rmse_z']:.3f} |", "",
              *([f"Baseline `{args.baseline_ref}` on the same cell in the same run (the two versions alternated, "
                 f"fastest of each): {baseline['seconds']:.1f} s "
                 f"(coregister {baseline['timings'].get('coregister', 0):.1f}, change "
                 f"{baseline['timings'].get('change', 0):.1f}, peak RSS {baseline['peak_rss_mb']:.0f} MB); this "
                 f"version takes {stage['seconds'] / baseline['seconds']:.2f}x its time.", ""] if baseline else []),
              "Pixel-observations: the cell's 10^6 pixels times its strips. Reading the same GeoTIFFs alone is the "
              "I/O limit; the stage is compute-bound (the coregistration of the pair graph and the per-pixel "
              "change model).", "",
              "## Honesty baseline: newest minus oldest strip, threshold -1 m, clusters >= 2,000 m² (IoU >= 0.5)", "",
              "| site | found | true slumps | matched | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
    for site, s in naive.items():
        lines.append(f"| {site} | {s['n_found']} | {s['n_reference']} | {s['matched']} | {s['precision']:.2f} | "
                     f"{s['recall']:.2f} | {s['f1']:.2f} |")
    tp = sum(s["matched"] for s in naive.values())
    fp = sum(s["new"] for s in naive.values())
    fn = sum(s["missed"] for s in naive.values())
    lines += [f"| **all sites** | {tp + fp} | {tp + fn} | {tp} | {tp / max(tp + fp, 1):.2f} | {tp / max(tp + fn, 1):.2f} | "
              f"**{2 * tp / max(2 * tp + fp + fn, 1):.2f}** |", "",
              "The naive difference fails where the newest strip sits metres below the oldest (the whole block "
              "is one cluster) and, where it sits above, on one-off landslides, draining lakes, ponds and "
              "interpolated patches; a site whose offsets happen to cancel can still score well, so the figure "
              "is pooled over all sites (seeds 0-2 gave 0.33, 0.26, 0.29 during development).", "",
              "Coregistration errors above are for one pair (both strips' errors); the horizontal fit runs on "
              "high-passed DEMs (sigma 30 m), which removes the long-wavelength strip errors that dominate an "
              "unfiltered Nuth & Kääb fit such as xdem's."]
    if stack_section:
        lines += ["", stack_section]
    # the other sections: orchestration scaling, slump detection, dashboard and catalog
    from . import dashboard, detection, remote, scaling

    for name, section in (("scaling", lambda: scaling.run(work, sample)), ("remote", lambda: remote.run(work, sample)),
                          ("detection", lambda: detection.run(work)), ("dashboard", lambda: dashboard.run(work))):
        if name in args.skip:
            continue
        print(f"benchmark: {name} ...", flush=True)
        lines += ["", section()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
