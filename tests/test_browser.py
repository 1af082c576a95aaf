"""End to end in a real browser: ``rts dashboard`` on a small synthetic products folder, driven
by Playwright on Debian's Chromium (/usr/bin/chromium, headless, software WebGL).

Checks: the map canvas draws (land, sea and slumps: many colours) with its data served by
URL, a filter changes the count, the Slump page shows its charts, a download yields a valid
GeoParquet, a reprocess submission appears in the queue. Screenshots go to a temporary folder,
or to docs/screenshots/ with RTS_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import geopandas as gpd
import numpy as np
import pytest

from dashboard import mapview, state
from benchmarks.browser import browser, chromium_path, running_dashboard, wait_for_app
from data_products import grid, schema
from data_products.queue import JobQueue
from benchmarks.load_products import generate_products
from tests.conftest import validate_geoparquet

if chromium_path() is None and os.environ.get("RTS_REQUIRE_BROWSER") == "1":  # CI: a missing browser fails
    raise RuntimeError("RTS_REQUIRE_BROWSER=1 but /usr/bin/chromium is absent (apt-get install -y chromium)")
pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="/usr/bin/chromium is absent (Debian package 'chromium'; .ci/run installs it)")

N = 2_000
METRIC_CHANGED = ("(v) => { const m = [...document.querySelectorAll('[data-testid=stMetric]')]"
                  ".find(e => e.innerText.includes('Slumps selected')); return m && !m.innerText.includes(v); }")
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    from pipeline.publish.inventories import export_references

    out = tmp_path_factory.mktemp("browser_products")
    info = generate_products(out, N, seed=7, raster_tiles=1)
    refs = tmp_path_factory.mktemp("browser_refs")  # a published inventory: the first 300 slumps, buffered
    ref = gpd.read_parquet(out / schema.INVENTORY, columns=["rts_id", "geometry"]).iloc[:300]
    ref.assign(geometry=ref.geometry.buffer(20.0)).to_crs(4326).to_file(refs / "survey_2021.gpkg")
    export_references(refs, out)
    return out, info["raster_tiles"][0]


@pytest.fixture(scope="module")
def server(products):
    with running_dashboard(products[0]) as url:
        yield url


@pytest.fixture(scope="module")
def chrome():
    with browser() as b:
        yield b


@pytest.fixture()
def page(chrome):
    ctx = chrome.new_context(viewport={"width": 1300, "height": 950}, accept_downloads=True)
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    if os.environ.get("RTS_UPDATE_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        return SHOTS
    return tmp_path_factory.mktemp("screenshots")


def _shot(page, folder: Path, name: str, **kw) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), **kw)
    return path


def _count(page) -> int:
    text = page.locator("[data-testid='stMetric']").filter(has_text="Slumps selected") \
        .locator("[data-testid='stMetricValue']").inner_text()
    return int(text.replace(",", ""))


def test_map_canvas_draws_with_data_by_url(page, server, shots):
    static = []
    page.on("response", lambda r: static.append((r.url, r.status)) if "/app/static/" in r.url else None)
    page.goto(server + "/")
    canvas = page.locator("[data-testid='stDeckGlJsonChart'] canvas").first
    canvas.wait_for(timeout=60_000)
    wait_for_app(page)
    page.wait_for_timeout(2_500)
    assert _count(page) == N
    png = canvas.screenshot()
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in img[:: max(1, len(img) // 50_000)]}
    assert len(colours) > 50, "the map canvas looks blank"
    sea = np.all(np.abs(img.astype(int) - (214, 228, 238)) < 6, axis=1).mean()
    assert 0.05 < sea < 0.95  # sea background drawn, not everything
    assert static and all(s == 200 for _, s in static), static
    assert any("/pts-" in u for u, _ in static)  # the slumps come by URL, not inlined
    _shot(page, shots, "map")


def test_filter_changes_the_count_and_the_url(page, server):
    page.goto(server + "/")
    page.locator("[data-testid='stDeckGlJsonChart'] canvas").first.wait_for(timeout=60_000)
    wait_for_app(page)
    before = _count(page)
    box = page.get_by_label("Volume min (m³)")
    box.fill("50000")
    box.press("Enter")
    page.wait_for_function(METRIC_CHANGED, arg=f"{before:,}", timeout=30_000)
    wait_for_app(page)
    after = _count(page)
    assert 0 < after < before
    assert "vmin=50000" in page.url
    # the shared URL reproduces the selection in a fresh page
    page.goto(page.url)
    page.locator("[data-testid='stDeckGlJsonChart'] canvas").first.wait_for(timeout=60_000)
    wait_for_app(page)
    assert _count(page) == after


def _focus_on(page, box: str) -> None:
    page.get_by_text("Focus box", exact=True).first.click()
    wait_for_app(page)
    field = page.get_by_label("Focus box xmin,ymin,xmax,ymax (EPSG:3413 m)")
    field.fill(box)
    field.press("Enter")
    wait_for_app(page)
    page.wait_for_load_state("networkidle")  # the layers' data (by URL) has arrived
    page.wait_for_timeout(1_500)


def _click_map_centre(page, until: str, attempts: int = 3) -> None:
    """Click the middle of the map until ``until`` shows: deck.gl ignores clicks until the
    chart has drawn its layers, so a click right after a rerun can go unseen."""
    for _ in range(attempts):
        canvas = page.locator("[data-testid='stDeckGlJsonChart'] canvas").first
        bb = canvas.bounding_box()
        page.mouse.click(bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2)
        try:
            page.get_by_text(until).first.wait_for(timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - Playwright's timeout: click again
            page.wait_for_timeout(1_000)
    page.get_by_text(until).first.wait_for(timeout=5_000)


def test_cells_are_picked_by_clicking_the_map_and_land_in_the_url(page, server, shots):
    page.goto(server + "/")
    page.locator("[data-testid='stDeckGlJsonChart'] canvas").first.wait_for(timeout=60_000)
    wait_for_app(page)
    _focus_on(page, "1000,1000,9000,9000")  # near the pole: the grid, no slump
    t0 = time.perf_counter()
    _click_map_centre(page, "1 cell picked for reprocessing")
    click_s = time.perf_counter() - t0
    wait_for_app(page)
    assert "cells=" in page.url
    _shot(page, shots, "map_pick_cells")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1_500)
    _click_map_centre(page, "Click 2 km work cells on the map")  # the same cell again: unpicked
    wait_for_app(page)
    assert "cells=" not in page.url
    print(f"click to picked view: {click_s:.2f} s")


def _drag_cell_box(page, lo: float, hi: float) -> None:
    """Open the Map page's box picker and drag a box from ``lo`` to ``hi`` (fractions of the
    plot's width and height, from its top left)."""
    page.get_by_text("Pick cells by dragging a box").click()
    drag = page.locator(".js-plotly-plot .nsewdrag").first
    drag.wait_for(timeout=30_000)
    page.wait_for_timeout(1_000)
    bb = drag.bounding_box()
    page.mouse.move(bb["x"] + lo * bb["width"], bb["y"] + lo * bb["height"])
    page.mouse.down()
    for t in (0.5, 1.0):
        f = lo + t * (hi - lo)
        page.mouse.move(bb["x"] + f * bb["width"], bb["y"] + f * bb["height"], steps=8)
    page.mouse.up()


def test_cells_are_picked_by_dragging_a_box_and_submitted_for_reprocessing(page, server, products):
    from data_products.queue import JobQueue

    page.goto(server + "/")
    page.locator("[data-testid='stDeckGlJsonChart'] canvas").first.wait_for(timeout=60_000)
    wait_for_app(page)
    _focus_on(page, "1000,1000,9000,9000")
    _drag_cell_box(page, 0.3, 0.7)
    page.get_by_text(re.compile(r"\d+ cells picked for reprocessing")).wait_for(timeout=30_000)
    wait_for_app(page)
    n = int(re.search(r"(\d+) cells picked", page.inner_text("body")).group(1))
    assert n >= 2
    q = JobQueue(products[0])
    before = len(q.list(limit=1000))
    page.get_by_text("Reprocess the picked cells").click()
    page.get_by_text(f"{n} cells picked:").wait_for(timeout=30_000)
    page.get_by_role("button", name="Submit job").click()
    page.get_by_text(re.compile("queued")).first.wait_for(timeout=30_000)
    jobs = q.list(limit=1000)
    assert len(jobs) == before + 1 and len(jobs[0].tiles) == n


def test_clicking_a_slump_on_the_map_selects_it_and_leads_to_its_page(page, server, products, shots):
    inv = gpd.read_parquet(products[0] / schema.INVENTORY, columns=["rts_id", "area_m2", "geometry"])
    row = inv.sort_values("area_m2").iloc[-1]
    c = row.geometry.centroid
    page.goto(server + "/")
    page.locator("[data-testid='stDeckGlJsonChart'] canvas").first.wait_for(timeout=60_000)
    wait_for_app(page)
    _focus_on(page, f"{c.x - 2000:.0f},{c.y - 2000:.0f},{c.x + 2000:.0f},{c.y + 2000:.0f}")
    _click_map_centre(page, f"Selected: {row.rts_id}")
    wait_for_app(page)
    _shot(page, shots, "map_slump_clicked")
    page.get_by_text(f"Open {row.rts_id} on the Slump page").click()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
    assert "/slump" in page.url and f"slump={quote(row.rts_id)}" in page.url.replace("%2B", "+").replace("+", "%2B")


def test_a_slump_point_is_clicked_at_pan_arctic_scale(page, server, products):
    """At the Arctic view slumps are 2 px points: a click on one selects the slump nearest it."""
    from dashboard import mapview

    inv = gpd.read_parquet(products[0] / schema.INVENTORY, columns=["rts_id", "geometry"])
    c = inv.geometry.centroid
    page.goto(server + "/")
    canvas = page.locator("[data-testid='stDeckGlJsonChart'] canvas").first
    canvas.wait_for(timeout=60_000)
    wait_for_app(page)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1_500)
    bb = canvas.bounding_box()
    vs = mapview.view_state(mapview.ARCTIC_BOX, width_px=int(bb["width"]), height_px=int(bb["height"]))
    scale = 2 ** vs["zoom"]
    # the slump with the most room around it, so that one point is under the cursor
    d = np.hypot(c.x.to_numpy()[:, None] - c.x.to_numpy()[None], c.y.to_numpy()[:, None] - c.y.to_numpy()[None])
    np.fill_diagonal(d, np.inf)
    k = int(np.argmax(d.min(axis=1)))
    px = bb["x"] + bb["width"] / 2 + (c.x.iloc[k] - vs["target"][0]) * scale
    py = bb["y"] + bb["height"] / 2 - (c.y.iloc[k] - vs["target"][1]) * scale
    for _ in range(3):
        page.mouse.click(px, py)
        try:
            page.get_by_text(f"Selected: {inv.rts_id.iloc[k]}").wait_for(timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - Playwright's timeout: the chart was not ready, click again
            page.wait_for_timeout(1_000)
    page.get_by_text(f"Selected: {inv.rts_id.iloc[k]}").wait_for(timeout=5_000)


def test_slump_page_shows_its_charts(page, server, products, shots):
    tid = products[1]
    inv = gpd.read_parquet(products[0] / schema.INVENTORY, columns=["rts_id", "tile_id", "n_years", "geometry"])
    rid = inv[inv.tile_id == tid].sort_values("n_years").rts_id.iloc[-1]
    page.goto(f"{server}/slump?slump={quote(rid)}")
    page.get_by_text(rid).first.wait_for(timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=60_000)
    wait_for_app(page)
    assert page.locator(".js-plotly-plot .barlayer .point").count() >= 1  # yearly volume bars
    assert page.get_by_text("summer 2 m temperature (°C)").count() >= 1
    assert re.search(r"r = -?\d\.\d\d, p = \d\.\d{3}", page.inner_text("body"))
    _shot(page, shots, "slump", full_page=True)


def test_a_reference_layer_is_switched_on_and_the_season_slider_stepped(page, server, products, shots):
    page.goto(server + "/")
    page.locator("[data-testid='stDeckGlJsonChart'] canvas").first.wait_for(timeout=60_000)
    wait_for_app(page)
    served = []
    page.on("response", lambda r: served.append(r.url) if "/app/static/cache/ref-" in r.url else None)
    page.get_by_text("Published inventories on the map").wait_for(timeout=30_000)
    page.locator("[data-testid='stMultiSelect']").filter(has_text="Published inventories").click()
    page.get_by_role("option", name="survey_2021").click()
    page.keyboard.press("Escape")
    wait_for_app(page)
    page.get_by_text("◯ survey_2021").wait_for(timeout=30_000)  # its legend entry
    page.wait_for_timeout(1_500)
    assert served, "the reference layer's data was not fetched"
    _shot(page, shots, "map_reference_layer")
    # the Slump page's slider over thaw seasons
    tid = products[1]
    inv = gpd.read_parquet(products[0] / schema.INVENTORY, columns=["rts_id", "tile_id", "n_years", "geometry"])
    rid = inv[inv.tile_id == tid].sort_values("n_years").rts_id.iloc[-1]
    page.goto(f"{server}/slump?slump={quote(rid)}")
    title = page.locator(".js-plotly-plot .gtitle").filter(has_text="ground dropped by the end of the")
    title.first.wait_for(timeout=60_000)
    wait_for_app(page)
    before = title.first.text_content()
    thumb = page.get_by_role("slider").last
    thumb.focus()
    thumb.press("Home")
    wait_for_app(page)
    page.wait_for_function("(b) => { const t = [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
                           ".find(e => e.textContent.includes('ground dropped by the end of the'));"
                           " return t && t.textContent !== b; }", arg=before, timeout=30_000)
    after = title.first.text_content()
    year = lambda t: int(re.search(r"end of the (\d{4})", t).group(1))  # noqa: E731
    assert year(after) < year(before)
    _shot(page, shots, "slump_season_stepped", full_page=True)


def test_download_yields_a_valid_geoparquet(page, server, tmp_path, shots):
    page.goto(server + "/downloads")
    button = page.get_by_role("button", name=re.compile("Selection as GeoParquet"))
    button.wait_for(timeout=60_000)
    wait_for_app(page)
    with page.expect_download(timeout=60_000) as dl:
        button.click()
    path = tmp_path / "selection.parquet"
    dl.value.save_as(path)
    geo = validate_geoparquet(path)
    assert geo["columns"]["geometry"]["covering"]
    got = gpd.read_parquet(path)
    assert len(got) == N and got.crs.to_epsg() == 3413
    _shot(page, shots, "downloads")


def test_full_product_files_stream_from_disk_by_signed_links(page, server, products):
    """The Downloads page links each full product to /files/<path> (dashboard.files): the bytes
    come straight from the file, a Range request gets just that range, a forged link 403."""
    import urllib.error
    import urllib.request

    page.goto(server + "/downloads")
    wait_for_app(page)
    link = page.locator(f"a[href*='/files/{schema.INVENTORY}?']").first
    link.wait_for(timeout=60_000)
    href = link.get_attribute("href")
    url = href if href.startswith("http") else server + href
    want = (products[0] / schema.INVENTORY).read_bytes()
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.read() == want
    req = urllib.request.Request(url, headers={"Range": "bytes=4-99"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 206 and r.read() == want[4:100]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url.rsplit("sig=", 1)[0] + "sig=" + "0" * 64, timeout=30)
    assert e.value.code == 403


def test_reprocess_submission_appears_in_the_queue(page, server, products, shots):
    pytest.importorskip("data_products.queue")
    from data_products.queue import JobQueue

    tid = products[1]
    page.goto(server + "/reprocess")
    area = page.get_by_label("Cell ids (one per line or comma-separated)")
    area.wait_for(timeout=60_000)
    wait_for_app(page)
    area.fill(f"{tid}\nnot_a_cell")
    page.get_by_role("button", name="Submit job").click()
    n0 = len(JobQueue(products[0]).list(limit=100))  # other tests of this module may have queued jobs
    page.get_by_text("Nothing was queued").wait_for(timeout=30_000)
    assert len(JobQueue(products[0]).list(limit=100)) == n0
    area.fill(tid)
    page.get_by_role("button", name="Submit job").click()
    page.get_by_text(re.compile(r"Job \d+ queued")).wait_for(timeout=30_000)
    jobs = JobQueue(products[0]).list(limit=100)
    assert len(jobs) == n0 + 1 and jobs[0].tiles == [tid] and jobs[0].status == "pending"
    # the monitor fragment shows the job in its table
    page.get_by_text(re.compile(r"Job \d+ queued")).wait_for(timeout=30_000)
    page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=30_000)
    _shot(page, shots, "reprocess")


def _click_map_at(page, box, x: float, y: float, until: str, attempts: int = 3) -> None:
    """Click the map at EPSG:3413 (``x``, ``y``) with the view fitted to ``box`` (the canvas
    centre is the box's centre, +y is up, 2**zoom pixels per metre), until ``until`` shows."""
    vs = mapview.view_state(box)
    scale = 2 ** vs["zoom"]
    for _ in range(attempts):
        bb = page.locator("[data-testid='stDeckGlJsonChart'] canvas").first.bounding_box()
        page.mouse.click(bb["x"] + bb["width"] / 2 + (x - vs["target"][0]) * scale,
                         bb["y"] + bb["height"] / 2 - (y - vs["target"][1]) * scale)
        try:
            page.get_by_text(until).first.wait_for(timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - Playwright's timeout: the chart had not drawn yet, click again
            page.wait_for_timeout(1_000)
    page.get_by_text(until).first.wait_for(timeout=5_000)


def _drag_plotly_box(page, x0: float, y0: float, x1: float, y1: float) -> None:
    """Open the box picker and drag a box between two EPSG:3413 points, placed in pixels by
    the Plotly chart's own axes."""
    page.get_by_text("Pick cells by dragging a box").click()
    page.locator(".js-plotly-plot .nsewdrag").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1_000)
    px = page.evaluate("""([x0, y0, x1, y1]) => {
        const gd = document.querySelector('.js-plotly-plot'), L = gd._fullLayout, r = gd.getBoundingClientRect();
        const at = (x, y) => [r.left + L._size.l + L.xaxis.d2p(x), r.top + L._size.t + L.yaxis.d2p(y)];
        return [at(x0, y0), at(x1, y1)]; }""", [x0, y0, x1, y1])
    (ax, ay), (bx, by) = px
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move((ax + bx) / 2, (ay + by) / 2, steps=8)
    page.mouse.move(bx, by, steps=8)
    page.mouse.up()


def test_a_job_submitted_from_the_page_is_finished_by_the_worker_beside_the_dashboard(sample, processed_cells, chrome,
                                                                                        tmp_path, shots):
    """As after `make run`: the dashboard with its queue worker on a published sample. Three
    of a site's four cells clicked on the map and the fourth added by a dragged box, submitted
    from the Reprocess page, are carried out by that worker, and the page shows the job done."""
    from tests.test_orchestration import published_copy

    out, manifest = sample
    cells = manifest["sites"][0]["cells"]
    products = published_copy(processed_cells, out, tmp_path / "p", cells)
    bounds = np.array([grid.parse_cell_id(c).bounds for c in cells])
    box = (*bounds[:, :2].min(axis=0), *bounds[:, 2:].max(axis=0))
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in bounds]
    with running_dashboard(products, args=["--worker-strips", str(out / "stac" / "catalog.json")]) as url:
        page = chrome.new_context(viewport={"width": 1300, "height": 950}).new_page()
        page.goto(url + "/")
        page.locator("[data-testid='stDeckGlJsonChart'] canvas").first.wait_for(timeout=60_000)
        wait_for_app(page)
        _focus_on(page, ",".join(f"{v:.0f}" for v in box))
        for k, (x, y) in enumerate(centres[:3], start=1):
            _click_map_at(page, box, x, y, f"{k} cell{'s' if k > 1 else ''} picked for reprocessing")
            wait_for_app(page)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1_000)
        assert sorted(state_cells(page.url)) == sorted(cells[:3])
        x, y = centres[3]
        _drag_plotly_box(page, x - 500, y - 500, x + 500, y + 500)
        page.get_by_text("4 cells picked for reprocessing").wait_for(timeout=30_000)
        wait_for_app(page)
        assert sorted(state_cells(page.url)) == sorted(cells)
        _shot(page, shots, "map_cells_clicked_and_boxed", full_page=True)
        page.get_by_text("Reprocess the picked cells").click()
        page.get_by_text("4 cells picked:").wait_for(timeout=30_000)
        page.get_by_text(re.compile(r"\(idle, seen \d+ s ago\)|running job")).first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Submit job").click()
        page.get_by_text("A worker is running and picks it up").wait_for(timeout=30_000)
        page.get_by_text(re.compile(r"Job\(s\) \d+ done")).wait_for(timeout=300_000)
        _shot(page, shots, "reprocess_done")
        job = JobQueue(products).list(limit=5)[0]
        assert job.status == "done" and sorted(job.tiles) == sorted(cells), (job.status, job.message)


def state_cells(url: str) -> list[str]:
    """The cell ids in a page URL's ``cells=`` parameter."""
    from urllib.parse import parse_qs, urlparse

    return state.parse_cell_list(parse_qs(urlparse(url).query).get("cells", [""])[0])[0]


def test_the_server_prepares_the_default_map_view_before_the_first_visit(chrome, tmp_path):
    """At start-up the server builds the Map page's default view (dashboard/asgi.py): the map
    data a first visitor's page asks for are the files that preparation already published."""
    out = tmp_path / "products"
    generate_products(out, 500, seed=int(time.time()) % 100_000)  # fresh payloads: new file names
    with running_dashboard(out, ready_line="default map view prepared") as url:
        before = {p.name for p in mapview.CACHE_DIR.glob("*.json")}
        ctx = chrome.new_context(viewport={"width": 1300, "height": 950})
        pg = ctx.new_page()
        asked = []
        pg.on("request", lambda r: asked.append(r.url.rsplit("/", 1)[-1]) if "/app/static/cache/" in r.url else None)
        pg.goto(url + "/")
        pg.locator("[data-testid='stDeckGlJsonChart'] canvas").first.wait_for(timeout=60_000)
        wait_for_app(pg)
        pg.wait_for_load_state("networkidle")
        ctx.close()
    points = [n for n in asked if n.startswith("pts-")]
    assert points, asked
    assert set(points) <= before, set(points) - before
