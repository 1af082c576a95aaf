"""What ``rts run`` would do, without doing it: cells, their strips, what is up to date, and cost.

:func:`make_plan` takes the same inputs as :func:`pipeline.orchestration.run.run` (a strip folder, STAC
catalog or API, or PGC's strip index; the selection in ``cfg.selection``; ``tiles``/``bbox``)
and returns, per cell, its EPSG:3413 bounds, its strips (ids, per year, how many in the
thaw season), whether its recorded DEM stage is up to date, and the estimated cost from
:class:`CostModel`. Nothing is read but the strips' metadata (the index's footprints, STAC
items, or the headers of local files when no footprint is given).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from data_products import schema

from pipeline.config import Config
from pipeline.orchestration.run import cell_jobs, footprints, select_cells, strips_for
from pipeline.strips.index import describe, load_strips


@dataclass(frozen=True)
class CostModel:
    """Per-cell cost of the DEM stage (2 km cell at 2 m, one core) as measured by ``make bench``
    (``docs/benchmarks.md``, "Scaling": 17 strips per cell, 15.5 core-s of which 9.1 s
    coregistration of the 136 overlapping pairs, and the rest linear in the strips; peak
    memory 1.40 GB at 17 strips and 2.45 GB at 24 on an independent scene, fitted through
    the origin). Coregistration pairs every overlapping strip pair, so its cost grows with
    the square of the strips."""

    #: core-seconds per strip for reading, resampling, the change model and terrain
    per_strip_core_s: float = 6.4 / 17
    #: core-seconds per coregistered pair (9.1 s / 136 pairs)
    per_pair_core_s: float = 9.1 / 136
    #: core-seconds per cell for the slump stage and publishing
    per_cell_core_s: float = 0.5
    #: peak memory per strip of the stack (MB; least squares through 17 -> 1399, 24 -> 2450)
    per_strip_memory_mb: float = (17 * 1399 + 24 * 2450) / (17 ** 2 + 24 ** 2)

    def core_seconds(self, n_strips: int) -> float:
        pairs = n_strips * (n_strips - 1) / 2
        return self.per_cell_core_s + self.per_strip_core_s * n_strips + self.per_pair_core_s * pairs

    def memory_mb(self, n_strips: int) -> float:
        return self.per_strip_memory_mb * n_strips


def _in_thaw_season(d: _dt.date) -> bool:
    (m0, d0), (m1, d1) = schema.THAW_SEASON
    return (m0, d0) <= (d.month, d.day) <= (m1, d1)


def make_plan(strips_source: str | Path, out: str | Path, cfg: Config, *, tiles: list[str] | None = None,
              bbox: tuple[float, float, float, float] | None = None, force: bool = False, workers: int = 1,
              asset_root: str | None = None, cost: CostModel | None = None) -> dict:
    """The plan as a JSON-ready dict: ``{"cells": [{"cell_id", "bounds", "n_strips", "strips",
    "strips_by_year", "n_in_thaw_season", "up_to_date", "core_s", "memory_mb"}, …],
    "totals": {…}, "selection": "…", "cost_model": {…}}``."""
    cost = cost or CostModel()
    out = Path(out)
    strips = footprints(load_strips(str(strips_source), cfg.selection, asset_root=asset_root))
    cells = select_cells(strips, cfg, tiles, bbox)
    skipped = set(cell_jobs(out, strips, cells, cfg, force)[1]) if out.is_dir() else set()
    rows = []
    for c in cells:
        mine = strips_for(c, strips)
        up = c.id in skipped
        years = Counter(s.date.year for s in mine)
        n = len(mine)
        rows.append({
            "cell_id": c.id, "bounds": [float(v) for v in c.bounds], "n_strips": n,
            "strips": [s.name for s in mine], "strips_by_year": {str(y): years[y] for y in sorted(years)},
            "n_in_thaw_season": sum(_in_thaw_season(s.date) for s in mine), "up_to_date": up,
            "core_s": 0.0 if up else round(cost.core_seconds(n), 1), "memory_mb": round(cost.memory_mb(n)),
        })
    todo = [r for r in rows if not r["up_to_date"]]
    core_s = sum(r["core_s"] for r in todo)
    totals = {
        "cells": len(rows), "to_process": len(todo), "up_to_date": len(rows) - len(todo),
        "strips": len(strips), "strips_used": len({s for r in rows for s in r["strips"]}),
        "mean_strips_per_cell": round(sum(r["n_strips"] for r in rows) / max(len(rows), 1), 1),
        "core_hours": round(core_s / 3600.0, 3), "workers": workers,
        "wall_hours": round(core_s / 3600.0 / max(workers, 1), 3),
        "peak_memory_mb_per_worker": max((r["memory_mb"] for r in todo), default=0),
    }
    return {"source": str(strips_source), "products": str(out), "selection": describe(cfg.selection),
            "cells": rows, "totals": totals, "cost_model": asdict(cost)}


def format_plan(plan: dict, max_rows: int = 50) -> str:
    """The plan as a text table (one row per cell, up to ``max_rows``) and its totals."""
    lines = [f"source: {plan['source']}  selection: {plan['selection']}",
             f"{'cell':<18} {'strips':>6} {'thaw':>5} {'years':<28} {'state':<11} {'core-s':>7} {'MB':>6}"]
    for r in plan["cells"][:max_rows]:
        years = " ".join(f"{y[2:]}:{n}" for y, n in r["strips_by_year"].items())
        if len(years) > 28:
            years = years[:27] + "…"
        lines.append(f"{r['cell_id']:<18} {r['n_strips']:>6} {r['n_in_thaw_season']:>5} {years:<28} "
                     f"{'up to date' if r['up_to_date'] else 'to process':<11} {r['core_s']:>7.1f} "
                     f"{r['memory_mb']:>6}")
    if len(plan["cells"]) > max_rows:
        lines.append(f"… {len(plan['cells']) - max_rows} more cells (--json lists all)")
    t = plan["totals"]
    lines.append(f"{t['cells']} cells ({t['to_process']} to process, {t['up_to_date']} up to date), "
                 f"{t['strips_used']} of {t['strips']} strips used, {t['mean_strips_per_cell']} per cell; "
                 f"{t['core_hours']} core-hours ({t['wall_hours']} h on {t['workers']} worker(s)), "
                 f"peak {t['peak_memory_mb_per_worker']} MB per worker")
    return "\n".join(lines)


def plan_json(plan: dict) -> str:
    return json.dumps(plan, indent=1)
