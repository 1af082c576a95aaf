"""Shared fixtures: one small sample region and the DEM stage run on two of its cells.

The sample (Peel Plateau, 2 x 2 cells) is generated once per test session into a
temporary folder; nothing generated is kept in the repository.
"""

from __future__ import annotations

import pytest

from data_products import grid
from pipeline.dem.cell import process_cell, write_cell_rasters
from pipeline.config import Config
from pipeline.strips.sources import discover_strips
from pipeline.synth import generate_sample

SAMPLE_SEED = 11


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    manifest = generate_sample(out, seed=SAMPLE_SEED, sites=["peel", "banks"], cells=2, workers=2, log=lambda m: None)
    return out, manifest


@pytest.fixture(scope="session")
def sample_strips(sample):
    return discover_strips(sample[0] / "strips")


@pytest.fixture(scope="session")
def processed_cells(sample, sample_strips, tmp_path_factory):
    """The DEM stage on the four cells of the first site, also published to a products
    folder (``processed_cells.products``): {cell id: CellResult}."""
    _, manifest = sample
    ids = manifest["sites"][0]["cells"]
    cfg = Config()
    products = tmp_path_factory.mktemp("products")
    out = ProcessedCells()
    out.products = products
    for cid in ids:
        r = process_cell(sample_strips, grid.parse_cell_id(cid), cfg, warn=lambda m: None)
        write_cell_rasters(r, products, cfg)
        out[cid] = r
    return out


class ProcessedCells(dict):
    products = None


def validate_geoparquet(path):
    """Validate a file's ``geo`` metadata against the official GeoParquet 1.1.0 JSON Schema
    in ../shared/specs (offline: the PROJJSON schema pyproj ships is registered)."""
    import json
    from pathlib import Path

    import jsonschema
    import pyarrow.parquet as pq
    import pyproj
    from referencing import Registry, Resource

    specs = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "geoparquet-1.1.0.schema.json"
    if not specs.exists():
        pytest.skip(f"{specs} is absent: cannot validate GeoParquet metadata")
    schema = json.loads(specs.read_text())
    projjson = Path(pyproj.datadir.get_data_dir()) / "projjson.schema.json"
    pj = json.loads(projjson.read_text())
    registry = Registry().with_resource(pj["$id"], Resource.from_contents(pj))
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    jsonschema.Draft7Validator(schema, registry=registry).validate(geo)
    return geo


#: fixtures that generate a sample region or run a whole stage: a test using one is ``slow``
SLOW_FIXTURES = {"sample", "sample_strips", "processed_cells", "up_to_date", "http_sample", "wheel", "server",
                 "products", "chrome", "scene"}


def pytest_collection_modifyitems(config, items):
    """Mark the tests that build a sample or run a whole stage (or a browser) as ``slow``:
    ``make test-fast`` (``pytest -m "not slow"``) runs the others."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
