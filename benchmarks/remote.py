"""Reading one cell's window of every strip over HTTP (loopback, Range requests) against
reading it from disk: time and bytes fetched. ``python -m benchmarks.remote [WORK]`` prints
the section; ``make bench`` includes it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _read_all(strips, cell) -> tuple[float, int]:
    from pipeline.strips.read import read_cell_stack

    t0 = time.perf_counter()
    ws = read_cell_stack(strips, cell, halo_m=400, warn=lambda m: None)
    return time.perf_counter() - t0, len(ws)


def run(work: Path, sample: Path | None = None, repeats: int = 3) -> str:
    from data_products import grid
    from pipeline.orchestration.run import footprints, strips_for
    from pipeline.strips.sources import discover_strips
    from pipeline.synth import generate_sample

    from .rangeserver import serve

    sample = sample or Path(work) / "sample"
    if not (sample / "sample.json").exists():
        generate_sample(sample, seed=0, cells=2, workers=2)
    m = json.loads((sample / "sample.json").read_text())
    cell = grid.parse_cell_id(m["sites"][0]["cells"][0])
    local = strips_for(cell, footprints(discover_strips(sample / "stac" / "catalog.json")))
    disk = min(_read_all(local, cell)[0] for _ in range(repeats))
    with serve(sample) as (url, srv):
        remote = strips_for(cell, footprints(discover_strips(f"{url}/stac/catalog.json")))
        srv.served.clear()
        first, n = _read_all(remote, cell)  # cold: headers and blocks fetched
        fetched = sum(v for k, v in srv.served.items() if k.endswith(".tif"))
        warm = min(_read_all(remote, cell)[0] for _ in range(repeats - 1))
    total = sum((sample / Path(k).relative_to("/")).stat().st_size for k in srv.served if k.endswith(".tif"))
    return "\n".join([
        "## Strips over HTTP: one cell's window (cell + 400 m halo), loopback against disk", "",
        f"The sample's STAC catalog and strips served on 127.0.0.1 by a server honouring Range requests "
        f"(`benchmarks/rangeserver.py`); {n} strips (DEM, bitmask, matchtag each) for cell {cell.id}.", "",
        "| source | time (s) | bytes fetched | of the files' bytes |", "|---|---|---|---|",
        f"| local disk | {disk:.2f} | - | - |",
        f"| HTTP, first read | {first:.2f} | {fetched / 1e6:.1f} MB | {fetched / max(total, 1):.0%} |",
        f"| HTTP, repeated | {warm:.2f} | - | - |", "",
        f"HTTP/disk: {first / disk:.1f}x on first read. Only the tiles the window needs (and each file's header) "
        "are fetched, not the whole files; a repeated read refetches most of them (GDAL's /vsicurl/ region cache "
        "is 16 MB by default). On a real bucket each request adds its latency.", ""])


if __name__ == "__main__":
    print(run(Path(sys.argv[1] if len(sys.argv) > 1 else "bench_work")))
