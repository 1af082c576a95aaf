"""The DEM stage against the depth of the strip stack: 17, 24 and 46 strips of one cell.

A deep-stack sample (``rts synth --strips 46``: one Peel cell, 46 strips over 2011-2022, 46
being the pan-Arctic mean stack depth) is processed with evenly spaced subsets of its strips
(in date order), by this version and, in the same run, by a baseline commit (a git worktree),
each in its own subprocess so that peak memory is the stage's own. Reported: time by step,
pixel-observations per second, peak memory, the offsets' error against the injected truth,
the growth of the cost with the stack (the exponent of time ~ strips^k between 17 and 46)
and the issue's goals beside them; and the pan-Arctic projection from the measured
46-strip cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

DEPTHS = (17, 24, 46)
GOAL_S = {17: 5.0, 24: 8.0, 46: 15.0}  # the goals for the DEM stage per cell (s)
REPO = Path(__file__).resolve().parents[1]  # this checkout

_CODE = r'''
import json, resource, sys, time
from pathlib import Path
import numpy as np
from data_products import grid
from pipeline.config import Config
from pipeline.dem.cell import process_cell
from pipeline.evaluation.evaluate import offset_errors
from pipeline.strips.read import read_cell_stack
from pipeline.strips.sources import discover_strips

sample, names = Path(sys.argv[1]), set(json.loads(sys.argv[2]))
m = json.loads((sample / "sample.json").read_text())
cell = grid.parse_cell_id(m["sites"][0]["cells"][0])
strips = [s for s in discover_strips(sample / "strips" / m["sites"][0]["site"]) if s.meta.name in names]
process_cell(strips[:4], cell, Config(), warn=lambda m: None)  # compile the kernels first
t0 = time.perf_counter(); read_cell_stack(strips, cell, halo_m=400); t_read = time.perf_counter() - t0
t0 = time.perf_counter(); r = process_cell(strips, cell, Config(), warn=lambda m: None); t = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the cell's, before the truth is read
err = offset_errors(r.coreg_table(), sample, cell)
n = len(r.strips)
print(json.dumps({"n_strips": n, "seconds": t, "timings": r.timings_s, "decode_s": t_read,
                  "pixel_obs_per_s": 1e6 * n / t, "decode_pixel_obs_per_s": 1e6 * n / t_read,
                  "rmse_h": float(np.sqrt(np.mean(err[:, 0] ** 2 + err[:, 1] ** 2))),
                  "rmse_z": float(np.sqrt(np.mean(err[:, 2] ** 2))),
                  "peak_rss_mb": peak}))
'''


_SWEEP_CODE = r'''
import dataclasses, json, sys, time
from pathlib import Path
import numpy as np
from data_products import grid
from pipeline.config import Config
from pipeline.dem.cell import covers_cell
from pipeline.dem.coreg import coregister_stack
from pipeline.evaluation.evaluate import offset_errors
from pipeline.strips.read import read_cell_array
from pipeline.strips.sources import discover_strips

sample, names, ks = Path(sys.argv[1]), set(json.loads(sys.argv[2])), json.loads(sys.argv[3])
m = json.loads((sample / "sample.json").read_text())
cell = grid.parse_cell_id(m["sites"][0]["cells"][0])
strips = [s for s in discover_strips(sample / "strips" / m["sites"][0]["site"]) if s.meta.name in names]
cfg = Config()
res = cfg.grid.resolution_m
halo = max(cfg.coreg.resample_margin_m, cfg.coreg.halo_m)
keep, z, matched = read_cell_array(strips, cell, halo_m=halo, drop_bits=cfg.sources.bitmask_drop_bits,
                                   resolution_m=res, accept=covers_cell(cell, cfg, halo), warn=lambda m: None)
coregister_stack(z[:4], matched[:4], res, cfg.coreg)  # compile the kernels first
out = []
for k in ks:
    c = dataclasses.replace(cfg.coreg, pair_neighbours=k)
    t0 = time.perf_counter()
    b = coregister_stack(z, matched, res, c, seed=cell.ix * 7919 + cell.iy)
    t = time.perf_counter() - t0
    rows = [{"strip": keep[o.index].strip.meta.name, "used": o.used, "dx_m": o.dx, "dy_m": o.dy, "dz_m": o.dz}
            for o in b.offsets]
    err = offset_errors(rows, sample, cell)
    off = np.array([[o.dx, o.dy, o.dz] if o.used else [np.nan] * 3 for o in b.offsets])
    out.append({"k": k, "pairs": len(b.pairs), "seconds": t, "off": off.tolist(),
                "rmse_h": float(np.sqrt(np.mean(err[:, 0] ** 2 + err[:, 1] ** 2))),
                "rmse_z": float(np.sqrt(np.mean(err[:, 2] ** 2)))})
print(json.dumps(out))
'''


def deep_sample(work: Path, n: int = 46) -> Path:
    """One Peel cell with a stack of ``n`` strips (generated once)."""
    from pipeline.synth import generate_sample

    sample = work / f"deep{n}"
    if not (sample / "sample.json").exists():
        generate_sample(sample, seed=0, sites=["peel"], cells=1, workers=1, n_strips=n, log=lambda m: None)
    return sample


def subset(sample: Path, n: int) -> list[str]:
    """``n`` of the sample's strips, evenly spaced in date order (the record's span kept)."""
    from pipeline.strips.sources import discover_strips

    m = json.loads((sample / "sample.json").read_text())
    strips = sorted(discover_strips(sample / "strips" / m["sites"][0]["site"]), key=lambda s: (s.meta.date, s.meta.name))
    pick = np.unique(np.round(np.linspace(0, len(strips) - 1, n)).astype(int))
    return [strips[k].meta.name for k in pick]


def measure(sample: Path, names: list[str], code_dir: Path | None = None) -> dict:
    # `python -c` puts the working directory first on sys.path: run in the checkout to measure
    out = subprocess.run([sys.executable, "-c", _CODE, str(Path(sample).resolve()), json.dumps(names)],
                         capture_output=True, text=True, check=True, cwd=code_dir or REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])



SWEEP_K = (0, 1, 2, 3, 5)  # 0: every overlapping pair


def graph_sweep(sample: Path, n: int = 46) -> list[dict]:
    """Coregistration alone of the deep stack's ``n`` strips over pair graphs of k = SWEEP_K."""
    out = subprocess.run([sys.executable, "-c", _SWEEP_CODE, str(Path(sample).resolve()),
                          json.dumps(subset(sample, n)), json.dumps(list(SWEEP_K))],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sweep_lines(rows: list[dict], n: int, k_default: int) -> list[str]:
    ref = np.array(next(r for r in rows if r["k"] == 0)["off"])
    lines = [f"### The pair graph against every pair ({n} strips)", "",
             "Each DEM paired with its k nearest overlapping DEMs in time and one long-baseline partner (k = 0: "
             "every overlapping pair, n(n-1)/2); the same stack read once, coregistration alone. Offsets are "
             "compared after removing their mean over the DEMs both solutions used.", "",
             "| k | pairs | coregistration (s) | RMSE against the truth, h / z (m) | RMS difference from all pairs, "
             "h / z (m) |", "|---|---|---|---|---|"]
    for r in rows:
        o = np.array(r["off"])
        both = np.isfinite(o[:, 0]) & np.isfinite(ref[:, 0])
        d = (o[both] - o[both].mean(0)) - (ref[both] - ref[both].mean(0))
        dh, dz = np.sqrt(np.mean(d[:, 0] ** 2 + d[:, 1] ** 2)), np.sqrt(np.mean(d[:, 2] ** 2))
        label = "all pairs" if r["k"] == 0 else f"{r['k']}" + (" (default)" if r["k"] == k_default else "")
        lines.append(f"| {label} | {r['pairs']} | {r['seconds']:.1f} | {r['rmse_h']:.3f} / {r['rmse_z']:.3f} | "
                     f"{dh:.3f} / {dz:.3f} |")
    return lines


def growth_exponent(rows: list[dict]) -> float:
    """k of time ~ strips^k, least squares in log-log over the depths measured."""
    n = np.log([r["n_strips"] for r in rows])
    t = np.log([r["seconds"] for r in rows])
    return float(np.polyfit(n, t, 1)[0])


def run(work: Path, baseline_dir: Path | None = None, baseline_ref: str = "") -> str:
    sample = deep_sample(work)
    ours, base = [], []
    for n in DEPTHS:
        names = subset(sample, n)
        ours.append(measure(sample, names))
        if baseline_dir is not None:
            base.append(measure(sample, names, baseline_dir))
    lines = ["## DEM stage against the depth of the strip stack", "",
             "One Peel cell of a deep-stack sample (`rts synth --strips 46 --sites peel --cells 1`), processed with "
             "17, 24 and all 46 of its strips (evenly spaced in date order), one core, each run in its own process.", "",
             "| strips | total (s) | read | coregister | resample | change | terrain | pixel-obs/s | decode only: "
             "pixel-obs/s | peak RSS (MB) | offsets: RMSE h / z (m) |" + (" baseline total (s) | baseline coregister | "
                                                                          "baseline RSS (MB) | baseline RMSE h / z (m) |"
                                                                          if base else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if base else "")]
    for k, r in enumerate(ours):
        t = r["timings"]
        row = (f"| {r['n_strips']} | **{r['seconds']:.1f}** | {t.get('read', 0):.1f} | {t.get('coregister', 0):.1f} | "
               f"{t.get('resample', 0):.1f} | {t.get('change', 0):.1f} | {t.get('terrain', 0):.1f} | "
               f"{r['pixel_obs_per_s']:.3g} | {r['decode_pixel_obs_per_s']:.3g} | {r['peak_rss_mb']:.0f} | "
               f"{r['rmse_h']:.3f} / {r['rmse_z']:.3f} |")
        if base:
            b = base[k]
            row += (f" {b['seconds']:.1f} | {b['timings'].get('coregister', 0):.1f} | {b['peak_rss_mb']:.0f} | "
                    f"{b['rmse_h']:.3f} / {b['rmse_z']:.3f} |")
        lines.append(row)
    k_ours = growth_exponent(ours)
    lines += ["", f"Cost growth from 17 to 46 strips: time ~ strips^{k_ours:.2f} for this version"
              + (f", ^{growth_exponent(base):.2f} for baseline `{baseline_ref}` (all overlapping pairs)." if base else ".")]
    by = {r["n_strips"]: r for r in ours}
    bby = {r["n_strips"]: r for r in base}
    n17, n24, n46 = (by.get(n) for n in DEPTHS)
    linear46 = n17["seconds"] * 46 / 17 if n17 else float("nan")
    rows = [
        ("DEM stage, 17-strip cell, one core (s)", "14.6", "≤ 5", n17["seconds"], 17),
        ("DEM stage, 24-strip cell, one core (s)", "40.1 (a family B cell)", "≤ 8", n24["seconds"], 24),
        ("DEM stage, 46-strip cell (s)", "~120 (extrapolated)", "≤ 15", n46["seconds"], 46),
    ]
    lines += ["", "### Against the goals", "",
              "| measure | before (issue) | baseline, this run | goal | this version |", "|---|---|---|---|---|"]
    for label, before, goal, val, n in rows:
        b = bby.get(n)
        lines.append(f"| {label} | {before} | {b['seconds']:.1f} |" if b else f"| {label} | {before} | - |")
        lines[-1] += f" {goal} | **{val:.1f}** |"
    b46 = bby.get(46)
    lines += [
        f"| cost growth 17 → 46 strips | quadratic | "
        f"{'x%.2f of linear' % (b46['seconds'] / (bby[17]['seconds'] * 46 / 17)) if b46 else '-'} | ≤ 1.2 × linear | "
        f"**x{n46['seconds'] / linear46:.2f} of linear** |",
        f"| pixel-observations per second per core, 46 strips | 1.1 × 10⁶ | "
        f"{'%.2g' % b46['pixel_obs_per_s'] if b46 else '-'} | ≥ 5 × 10⁶ | **{n46['pixel_obs_per_s']:.2g}** "
        f"(decode: {n46['decode_pixel_obs_per_s']:.2g}) |",
        f"| peak memory per cell, 46 strips (MB) | 1,400 at 17 strips, 2,450 at 24 | "
        f"{'%.0f' % b46['peak_rss_mb'] if b46 else '-'} | ≤ 1,500 | **{n46['peak_rss_mb']:.0f}** |",
    ]
    # the pan-Arctic at the archive's mean stack depth, from the measured 46-strip cell
    from benchmarks.scaling import SLUMP_STAGE_S, _land_area_km2

    n_cells = _land_area_km2() / 4.0
    per_cell = n46["seconds"] + SLUMP_STAGE_S
    hours = n_cells * per_cell / 3600
    lines.append(f"| pan-Arctic at 2 m on 1,000 cores | 4.5 days | "
                 f"{'%.1f days' % (n_cells * (b46['seconds'] + SLUMP_STAGE_S) / 3600 / 1000 / 24) if b46 else '-'} | "
                 f"≤ 36 h | **{hours / 1000:.0f} h** |")
    t46 = n46["timings"]
    from data_products import grid

    cell = grid.parse_cell_id(json.loads((sample / "sample.json").read_text())["sites"][0]["cells"][0])
    h, w = cell.shape(2.0, 400.0)  # the change model runs over the cell and its halo
    px_obs = n46["n_strips"] * h * w
    lines += ["", "Where the 46-strip cell's time goes (one core): coregistration "
              f"{t46.get('coregister', 0):.1f} s (each DEM's stable-ground surface and gradients prepared once, then "
              "the Nuth & Kääb fits of the pair graph's ~4 pairs per DEM and the bundle adjustment), the change model "
              f"{t46.get('change', 0):.1f} s (the per-pixel kernel in numba: "
              f"{1e9 * t46.get('change', 0) / px_obs:.0f} ns per pixel-observation for the robust levels, the "
              "consensus test against neighbours in time, the optimal split and its outlier passes), reading "
              f"{t46.get('read', 0):.1f} s. Both are compute-bound single-core kernels; the goals of ≤ 5, ≤ 8 and "
              "≤ 15 s per cell would need the stage "
              + ", ".join(f"{r['seconds'] / GOAL_S[r['n_strips']]:.2f}x" for r in ours if r["n_strips"] in GOAL_S)
              + " as fast again at 17, 24 and 46 strips (1.00x or less: met). Spreading a cell over several cores "
              "would shorten one cell but not the core-hours of the Arctic, which is what the projection counts."]
    lines += ["", f"Pan-Arctic: {n_cells / 1e6:.1f} million 2 km cells of land north of 60° N, each at the measured "
              f"46-strip cost plus {SLUMP_STAGE_S} s of slump stage: {per_cell:.0f} core-s per cell, "
              f"{hours:.3g} core-hours, {hours / 1000:.0f} h on 1,000 cores (cells are independent)."]
    from pipeline.config import CoregConfig

    lines += [""] + sweep_lines(graph_sweep(sample, 46), 46, CoregConfig().pair_neighbours)
    return "\n".join(lines)
