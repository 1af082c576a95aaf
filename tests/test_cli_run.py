"""``rts`` end to end on the sample: synth -> run -> per-cell products; bad input is named."""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import pytest
from streamlit.testing.v1 import AppTest

from pipeline.cli import main
from tests.conftest import validate_geoparquet
from data_products.store import ProductsStore


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("synth", "run", "dashboard"):
        assert cmd in out


def test_python_dash_m_pipeline_works():
    r = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "rts" in r.stdout


def test_run_on_two_cells_is_idempotent_and_published(sample, tmp_path, capsys):
    out, manifest = sample
    cells = manifest["sites"][0]["cells"][:1]
    products = tmp_path / "products"
    assert main(["run", "--strips", str(out / "stac" / "catalog.json"), "--out", str(products), "--tiles", *cells]) == 0
    meta = json.loads((ProductsStore(products).cell_meta_path(cells[0])).read_text())
    assert meta["status"] == "ok" and meta["inputs_digest"]
    for name in ("dh", "dh_sigma", "t1", "t2", "n_obs", "confidence", "curvature", "elevation"):
        assert (ProductsStore(products).tile_file(cells[0], f"{name}.tif")).exists()
    geo = validate_geoparquet(products / "candidates.parquet")
    assert main(["evaluate", "--sample", str(out), "--products", str(products), "--out", str(tmp_path / "e.md")]) == 0
    assert "criteria 1-3" in (tmp_path / "e.md").read_text() and "naive" in (tmp_path / "e.md").read_text()
    assert geo["version"] == "1.1.0" and "covering" in geo["columns"]["geometry"]
    before = (ProductsStore(products).tile_file(cells[0], "dh.tif")).stat().st_mtime_ns
    assert main(["run", "--strips", str(out / "strips"), "--out", str(products), "--tiles", *cells]) == 0
    assert "1 up to date" in capsys.readouterr().out
    assert (ProductsStore(products).tile_file(cells[0], "dh.tif")).stat().st_mtime_ns == before

    # the dashboard opens on the published products and counts their slumps
    at = AppTest.from_file("../dashboard/app.py", default_timeout=60)
    argv = sys.argv
    sys.argv = ["app.py", "--products", str(products)]
    try:
        at.run()
    finally:
        sys.argv = argv
    assert not at.exception
    n = len(gpd.read_parquet(products / "rts_inventory.parquet"))
    assert {m.label: m.value for m in at.metric}["Slumps selected"] == f"{n:,}"


def test_bad_tile_id_is_a_clear_error(sample, tmp_path, capsys):
    out, _ = sample
    code = main(["run", "--strips", str(out / "strips"), "--out", str(tmp_path / "p"), "--tiles", "../../etc"])
    assert code == 2
    assert "is not a cell id" in capsys.readouterr().err


def test_empty_strip_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["run", "--strips", str(tmp_path / "empty"), "--out", str(tmp_path / "p")])
    assert code == 2
    assert "empty" in capsys.readouterr().err




def test_planning_takes_the_cells_strips_cover_and_leaves_out_grazed_ones(sample, sample_strips):
    from pipeline.orchestration.run import footprints, plan_cells

    sample_strips = footprints(sample_strips)
    _, manifest = sample
    block = {c for s in manifest["sites"] for c in s["cells"]}
    assert {c.id for c in plan_cells(sample_strips, 0.25)} == block
    assert len(plan_cells(sample_strips, 0.0)) > len(block)  # strip margins touch the ring around each block
