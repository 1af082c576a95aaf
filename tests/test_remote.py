"""Strips by URL: the sample's STAC catalog and strips served over HTTP on 127.0.0.1 by a
server that honours Range requests. A run over HTTP gives the products a run over the local
folder gives, fetching only the cells' windows; a strip that 404s or whose connection
drops costs that strip only, named with its URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.rangeserver import serve
from pipeline.config import Config
from pipeline.orchestration.run import run
from tests.test_orchestration import _same_products
from data_products.store import ProductsStore


@pytest.fixture()
def http_sample(sample):
    root, manifest = sample
    with serve(root) as (url, srv):
        yield url, srv, root, manifest


@pytest.fixture()
def fast_gdal_retries(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.2")
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "10")


def test_a_run_over_http_gives_the_products_of_the_local_folder_from_windowed_reads(http_sample, tmp_path,
                                                                                    fast_gdal_retries):
    url, srv, root, manifest = http_sample
    cell = manifest["sites"][0]["cells"][0]
    local = tmp_path / "local"
    remote = tmp_path / "remote"
    run(root / "stac" / "catalog.json", local, Config(), tiles=[cell], progress=False)
    s = run(f"{url}/stac/catalog.json", remote, Config(), tiles=[cell], progress=False)
    assert s["failed"] == 0 and s["done"] == 1
    _same_products(local, remote)
    # only the windows: far fewer bytes of each strip than its file holds
    tifs = {p: n for p, n in srv.served.items() if p.endswith("_dem.tif")}
    assert tifs, "no strip was read over HTTP"
    total = sum((root / p.lstrip("/")).stat().st_size for p in tifs)
    assert sum(tifs.values()) < 0.6 * total, (sum(tifs.values()), total)


@pytest.mark.parametrize("how", ["404", "drop"])
def test_a_strip_that_404s_or_drops_its_connection_costs_that_strip_only(http_sample, tmp_path, fast_gdal_retries,
                                                                         how):
    import json

    import geopandas as gpd

    from data_products import grid
    from pipeline.orchestration.run import footprints, strips_for
    from pipeline.strips.sources import discover_strips

    url, srv, root, manifest = http_sample
    cell = manifest["sites"][0]["cells"][0]
    strips = strips_for(grid.parse_cell_id(cell), footprints(discover_strips(str(root / "stac" / "catalog.json"))))
    victim = strips[len(strips) // 2]
    srv.broken[Path(victim.dem).name] = how
    out = tmp_path / how
    s = run(f"{url}/stac/catalog.json", out, Config(), tiles=[cell], progress=False)
    assert s["failed"] == 0 and s["done"] == 1
    meta = json.loads((ProductsStore(out).cell_meta_path(cell)).read_text())
    assert victim.name not in meta["strips"] and len(meta["strips"]) >= len(strips) - 2
    named = [w for w in meta["warnings"] if victim.name in w]
    assert named and "127.0.0.1" in named[0], meta["warnings"]
    assert gpd.read_parquet(out / "tiles.parquet").query("tile_id == @cell").status.iloc[0] == "ok"
