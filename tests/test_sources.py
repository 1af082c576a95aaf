"""Strip sources: ArcticDEM names, discovery (folder, STAC) and masked cell reads."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from data_products import grid
from pipeline.strips.names import Strip, StripNameError, parse_strip_name
from pipeline.strips.read import StripReadError, cells_for_strips, read_cell, read_cell_array, read_cell_stack, strip_bounds
from pipeline.strips.sources import NoStripsError, discover_strips
from pipeline.strips.stac import write_stac_catalog

# A real work cell on the Peel Plateau (NW Canada, ~67.3 N 135 W; UTM zone 8N).
_TO_3413 = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)
CELL = grid.cell_at(*_TO_3413.transform(-135.0, 67.3))
X0, Y0, X1, Y1 = CELL.bounds
RES = 2.0

V41 = "SETSM_s2s041_WV01_20170714_10200100612345A0_1020010061234500_2m_lsf_seg1"


def plane(x, y):
    """The synthetic terrain: a tilted plane, elevation in metres at EPSG:3413 (x, y)."""
    return 50.0 + (x - X0) / 100.0 + (y - Y0) / 1000.0


def write_tif(path, arr, transform, crs="EPSG:3413", nodata=None):
    profile = dict(
        driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype.name,
        transform=transform, compress="deflate", tiled=True, blockxsize=256, blockysize=256,
    )
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)
    return path


def make_strip(folder: Path, name: str, *, x_left: float, y_top: float, shape=(600, 600),
               bitmask=None, matchtag=None, siblings=("bitmask", "matchtag")) -> Path:
    """A 2 m EPSG:3413 strip whose elevations follow ``plane``; returns the DEM path."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = shape
    t = from_origin(x_left, y_top, RES, RES)
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    xs, ys = t @ (cols + 0.5, rows + 0.5)
    z = plane(xs, ys).astype(np.float32)
    z[:, :5] = -9999.0  # nodata margin on the west edge
    dem = write_tif(folder / f"{name}_dem.tif", z, t, nodata=-9999.0)
    if "bitmask" in siblings:
        bm = np.zeros(shape, np.uint8) if bitmask is None else bitmask
        write_tif(folder / f"{name}_bitmask.tif", bm, t)
    if "matchtag" in siblings:
        mt = np.ones(shape, np.uint8) if matchtag is None else matchtag
        write_tif(folder / f"{name}_matchtag.tif", mt, t)
    return dem


def strip_for(dem: Path) -> Strip:
    [s] = [s for s in discover_strips(dem.parent) if s.dem == str(dem.resolve())]
    return s


def cell_centres(sw):
    h, w = sw.z.shape
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    return sw.transform @ (cols + 0.5, rows + 0.5)


# --------------------------------------------------------------------------- names


def test_v41_name_gives_sensor_date_catalog_ids_and_segment():
    n = parse_strip_name(f"/data/strips/{V41}_dem.tif")
    assert n.name == V41
    assert n.version == "v4.1"
    assert n.sensor == "WV01"
    assert n.date == dt.date(2017, 7, 14)
    assert (n.catid1, n.catid2) == ("10200100612345A0", "1020010061234500")
    assert n.segment == 1
    assert n.resolution_m == 2.0


def test_v41_name_without_lsf_parses_too():
    n = parse_strip_name("SETSM_s2s041_WV03_20200801_104001005F2A3B00_104001005E1C2D00_2m_seg12_dem.tif")
    assert (n.version, n.sensor, n.segment, n.date) == ("v4.1", "WV03", 12, dt.date(2020, 8, 1))


def test_v3_names_with_and_without_segment():
    n = parse_strip_name("SETSM_WV02_20150628_1030010044B6A600_1030010044CC4F00_seg1_2m_v3.0_dem.tif")
    assert (n.version, n.sensor, n.date, n.segment) == ("v3", "WV02", dt.date(2015, 6, 28), 1)
    assert (n.catid1, n.catid2) == ("1030010044B6A600", "1030010044CC4F00")
    n = parse_strip_name("SETSM_GE01_20120705_1050410001A2B300_1050410001A2B400_2m_v3.0_dem.tif")
    assert (n.version, n.sensor, n.segment) == ("v3", "GE01", None)


def test_cross_track_names_use_the_sensor_pair_code():
    n = parse_strip_name("W1W2_20160715_1020010052F1E400_10300100575B5A00_seg2_2m_v3.0_dem.tif")
    assert (n.version, n.sensor, n.date, n.segment) == ("cross-track", "W1W2", dt.date(2016, 7, 15), 2)
    assert parse_strip_name("G1W1_20130802_105041000A0B0C00_1020010023D4E500_2m_v3.0_dem.tif").sensor == "G1W1"


@pytest.mark.parametrize(
    "bad",
    ["random_dem.tif", "SETSM_WV01_2017071_AB_CD_2m_v3.0_dem.tif", "SETSM_s2s041_WV01_20170714_2m_lsf_seg1_dem.tif"],
)
def test_unparsable_names_raise_naming_the_file(bad):
    with pytest.raises(StripNameError, match=bad.split("_dem")[0]):
        parse_strip_name(f"/x/{bad}")


def test_an_impossible_date_is_a_name_error():
    bad = "SETSM_s2s041_WV01_20171345_10200100612345A0_1020010061234500_2m_lsf_seg1_dem.tif"
    with pytest.raises(StripNameError, match="20171345"):
        parse_strip_name(bad)


# --------------------------------------------------------------------------- discovery


def test_folder_discovery_is_recursive_sorted_and_skips_bad_names_with_one_warning(tmp_path, caplog):
    a = make_strip(tmp_path / "2019", "SETSM_s2s041_WV02_20190720_10300100AAAAAA00_10300100BBBBBB00_2m_lsf_seg1",
                   x_left=X0, y_top=Y1, shape=(20, 20))
    b = make_strip(tmp_path / "2016" / "deep", "W1W2_20160715_1020010052F1E400_10300100575B5A00_seg2_2m_v3.0",
                   x_left=X0, y_top=Y1, shape=(20, 20))
    (tmp_path / "notes_dem.tif").write_bytes(b"not a strip")
    with caplog.at_level(logging.WARNING, logger="pipeline.strips.sources"):
        strips = discover_strips(tmp_path)
    assert [s.dem for s in strips] == [str(b.resolve()), str(a.resolve())]  # by date
    assert all(s.bitmask and s.matchtag for s in strips)
    bad_warnings = [r for r in caplog.records if "notes_dem.tif" in r.getMessage()]
    assert len(bad_warnings) == 1


def test_missing_sibling_is_warned_about_and_the_strip_still_reads(tmp_path, caplog):
    dem = make_strip(tmp_path, V41, x_left=X0, y_top=Y1, siblings=("matchtag",))
    with caplog.at_level(logging.WARNING, logger="pipeline.strips.sources"):
        [s] = discover_strips(tmp_path)
    assert s.bitmask is None and s.matchtag is not None
    assert any("_bitmask.tif" in r.getMessage() and V41 in r.getMessage() for r in caplog.records)
    sw = read_cell(s, CELL)
    assert sw is not None and sw.valid.sum() == 600 * 595
    assert str(dem.resolve()) == s.dem


def test_empty_folder_raises_no_strips_naming_it(tmp_path):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(NoStripsError, match="nothing_here"):
        discover_strips(empty)


def test_stac_catalog_round_trips_through_discovery(tmp_path):
    d1 = make_strip(tmp_path / "strips", V41, x_left=X0, y_top=Y1)
    d2 = make_strip(tmp_path / "strips", "SETSM_WV02_20150628_1030010044B6A600_1030010044CC4F00_seg1_2m_v3.0",
                    x_left=X0 + 400, y_top=Y1 - 200, siblings=("bitmask",))
    strips = discover_strips(tmp_path / "strips")
    cat = write_stac_catalog(strips, tmp_path / "stac", catalog_id="sample", description="test strips")
    assert cat == tmp_path / "stac" / "catalog.json"

    again = discover_strips(tmp_path / "stac")
    assert [s.dem for s in again] == [s.dem for s in strips] == [str(d2.resolve()), str(d1.resolve())]
    assert [s.bitmask for s in again] == [s.bitmask for s in strips]
    assert [s.matchtag for s in again] == [s.matchtag for s in strips]
    assert [s.meta for s in again] == [s.meta for s in strips]
    # footprints known from the catalog (proj:bbox), equal to the DEM header bounds
    assert again[1].bounds == pytest.approx((X0, Y1 - 1200, X0 + 1200, Y1))
    assert discover_strips(cat)[0].dem == again[0].dem

    item_file = next((tmp_path / "stac").rglob(f"{V41}.json"))
    item = json.loads(item_file.read_text())
    assert item["properties"]["proj:code"] == "EPSG:3413"
    assert item["properties"]["datetime"].startswith("2017-07-14T12:00:00")
    assert not Path(item["assets"]["dem"]["href"]).is_absolute()  # self-contained
    assert item["assets"]["mask"]["type"].startswith("image/tiff; application=geotiff")


# --------------------------------------------------------------------------- reading


def test_aligned_strip_gives_exactly_its_pixels_and_nan_outside(tmp_path):
    # 600x600 px = 1.2 km, 400 m east and 200 m south of the cell's NW corner
    dem = make_strip(tmp_path, V41, x_left=X0 + 400, y_top=Y1 - 200)
    sw = read_cell(strip_for(dem), CELL)
    assert sw.z.shape == (1000, 1000) and sw.z.dtype == np.float32
    assert sw.transform == CELL.transform()
    xs, ys = cell_centres(sw)
    inside = (xs > X0 + 400 + 10) & (xs < X0 + 1600) & (ys < Y1 - 200) & (ys > Y1 - 1400)
    np.testing.assert_allclose(sw.z[inside], plane(xs, ys)[inside].astype(np.float32), rtol=0, atol=1e-4)
    assert np.isnan(sw.z[~inside]).all()  # outside the strip and its -9999 margin
    assert (sw.valid == inside).all()
    # the pixel at a known coordinate holds the value written there
    col, row = ~sw.transform @ (X0 + 1001.0, Y1 - 301.0)
    assert (int(row), int(col)) == (150, 500)
    assert sw.z[150, 500] == pytest.approx(plane(X0 + 1001.0, Y1 - 301.0), abs=1e-4)


def test_halo_extends_the_window_on_the_same_grid(tmp_path):
    dem = make_strip(tmp_path, V41, x_left=X0 - 100, y_top=Y1 + 100, shape=(100, 100))
    s = strip_for(dem)
    assert read_cell(s, CELL, halo_m=100.0).z.shape == (1100, 1100)
    sw = read_cell(s, CELL, halo_m=100.0)
    assert sw.valid[:100, 5:100].all() and not sw.valid[100:, :].any()
    no_halo = read_cell(s, CELL)
    assert no_halo.valid.sum() == 50 * 50  # only the strip's SE quarter lies in the cell


def test_bitmask_bits_drop_pixels_and_matchtag_zero_is_flagged(tmp_path):
    bm = np.zeros((600, 600), np.uint8)
    bm[10, 10], bm[20, 20], bm[30, 30], bm[40, 40] = 1, 2, 4, 8  # edge, water, cloud, unused bit
    mt = np.ones((600, 600), np.uint8)
    mt[50:60, 50:60] = 0
    dem = make_strip(tmp_path, V41, x_left=X0, y_top=Y1, bitmask=bm, matchtag=mt)
    s = strip_for(dem)
    sw = read_cell(s, CELL)
    assert np.isnan(sw.z[10, 10]) and np.isnan(sw.z[20, 20]) and np.isnan(sw.z[30, 30])
    assert not np.isnan(sw.z[40, 40])  # bit 3 is not a drop bit
    assert not sw.matched[50:60, 50:60].any() and sw.matched[60:600, 60:600].all()
    assert not np.isnan(sw.z[55, 55])  # interpolated pixels are kept, only flagged
    only_cloud = read_cell(s, CELL, drop_bits=0b100)
    assert not np.isnan(only_cloud.z[10, 10]) and np.isnan(only_cloud.z[30, 30])


def test_strip_in_utm_is_reprojected_onto_the_cell_grid(tmp_path):
    to_utm = Transformer.from_crs("EPSG:3413", "EPSG:32608", always_xy=True)
    cx, cy = (X0 + X1) / 2, (Y0 + Y1) / 2
    ux, uy = to_utm.transform(cx, cy)
    left, top = round(ux) - 1500, round(uy) + 1500
    t = from_origin(left, top, RES, RES)
    cols, rows = np.meshgrid(np.arange(1500), np.arange(1500))
    xs, ys = t @ (cols + 0.5, rows + 0.5)
    z = (200.0 + (xs - left) / 50.0 - (top - ys) / 200.0).astype(np.float32)  # plane in UTM metres
    write_tif(tmp_path / f"{V41}_dem.tif", z, t, crs="EPSG:32608", nodata=-9999.0)
    write_tif(tmp_path / f"{V41}_bitmask.tif", np.zeros(z.shape, np.uint8), t, crs="EPSG:32608")
    write_tif(tmp_path / f"{V41}_matchtag.tif", np.ones(z.shape, np.uint8), t, crs="EPSG:32608")
    [s] = discover_strips(tmp_path)
    sw = read_cell(s, CELL)
    assert sw is not None and sw.transform == CELL.transform()
    # the cell centre: pixel (500, 500) has its corner there; test a few pixel centres
    for r, c in [(500, 500), (300, 700), (700, 250)]:
        px, py = sw.transform @ (c + 0.5, r + 0.5)
        qx, qy = to_utm.transform(px, py)
        expected = 200.0 + (qx - left) / 50.0 - (top - qy) / 200.0
        assert sw.z[r, c] == pytest.approx(expected, abs=0.02)
        assert sw.matched[r, c]
    assert sw.valid.mean() > 0.5
    assert 0 < len(cells_for_strips([s])) <= 9


def test_dem_without_crs_is_a_read_error_naming_it(tmp_path):
    z = np.ones((50, 50), np.float32)
    write_tif(tmp_path / f"{V41}_dem.tif", z, from_origin(X0, Y1, RES, RES), crs=None, nodata=-9999.0)
    s = Strip(str(tmp_path / f"{V41}_dem.tif"), None, None, parse_strip_name(V41))
    with pytest.raises(StripReadError, match=f"{V41}_dem.tif.*CRS"):
        read_cell(s, CELL)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_dem_is_a_read_error_naming_it(tmp_path):
    dem = make_strip(tmp_path, V41, x_left=X0, y_top=Y1)
    s = strip_for(dem)
    _truncate(dem)
    with pytest.raises(StripReadError, match=V41):
        read_cell(s, CELL)


def test_a_truncated_strip_does_not_stop_the_others_being_read(tmp_path, caplog):
    good = make_strip(tmp_path / "a", V41, x_left=X0, y_top=Y1)
    bad_name = "SETSM_s2s041_WV02_20180701_10300100CCCCCC00_10300100DDDDDD00_2m_lsf_seg1"
    bad = make_strip(tmp_path / "b", bad_name, x_left=X0, y_top=Y1)
    _truncate(bad)
    strips = discover_strips(tmp_path)
    assert len(strips) == 2
    with caplog.at_level(logging.WARNING, logger="pipeline.strips.read"):
        windows = read_cell_stack(strips, CELL)
    assert [w.strip.dem for w in windows] == [str(good.resolve())]
    assert any(bad_name in r.getMessage() for r in caplog.records)


def test_the_stack_is_read_in_date_order_without_copies_and_skips_what_it_cannot_use(tmp_path):
    """read_cell_array: every usable strip in one (n, H, W) stack, oldest first, each slot what
    read_cell gives alone; an unreadable strip and one the caller rejects are warned and leave
    no slot behind."""
    late = make_strip(tmp_path / "a", V41, x_left=X0, y_top=Y1)  # 2017-07-14
    early_name = "SETSM_s2s041_WV02_20150701_10300100AAAAAA00_10300100BBBBBB00_2m_lsf_seg1"
    early = make_strip(tmp_path / "b", early_name, x_left=X0 + 200.0, y_top=Y1)
    bad_name = "SETSM_s2s041_WV02_20160701_10300100CCCCCC00_10300100DDDDDD00_2m_lsf_seg1"
    _truncate(make_strip(tmp_path / "c", bad_name, x_left=X0, y_top=Y1))
    small_name = "SETSM_s2s041_WV03_20190701_10400100EEEEEE00_10400100FFFFFF00_2m_lsf_seg1"
    make_strip(tmp_path / "d", small_name, x_left=X0, y_top=Y1, shape=(50, 50))
    strips = discover_strips(tmp_path)
    warned = []
    keep, z, matched = read_cell_array(strips, CELL, halo_m=100.0, warn=warned.append,
                                       accept=lambda w: "" if w.valid.sum() > 10_000 else "too small")
    assert [w.strip.dem for w in keep] == [str(early.resolve()), str(late.resolve())]
    assert z.shape == matched.shape == (2, 1100, 1100) and z.dtype == np.float32 and matched.dtype == bool
    for k, dem in enumerate((early, late)):
        alone = read_cell(strip_for(dem), CELL, halo_m=100.0)
        np.testing.assert_array_equal(z[k], alone.z)
        np.testing.assert_array_equal(matched[k], alone.matched)
    assert any(bad_name in m for m in warned) and any(small_name in m and "too small" in m for m in warned)


def test_sibling_with_a_different_shape_is_a_read_error_naming_it(tmp_path):
    dem = make_strip(tmp_path, V41, x_left=X0, y_top=Y1, siblings=("matchtag",))
    write_tif(tmp_path / f"{V41}_bitmask.tif", np.zeros((10, 10), np.uint8), from_origin(X0, Y1, RES, RES))
    s = strip_for(dem)
    with pytest.raises(StripReadError, match="_bitmask.tif"):
        read_cell(s, CELL)


def test_strip_outside_the_cell_or_all_nodata_gives_none(tmp_path):
    far = make_strip(tmp_path / "far", V41, x_left=X1 + 10_000, y_top=Y1)
    assert read_cell(strip_for(far), CELL) is None
    cloudy = make_strip(tmp_path / "cloudy", V41, x_left=X0, y_top=Y1, bitmask=np.full((600, 600), 4, np.uint8))
    assert read_cell(strip_for(cloudy), CELL) is None


def test_strip_bounds_and_cells_for_strips(tmp_path):
    dem = make_strip(tmp_path, V41, x_left=X0 + 1000, y_top=Y1 - 1000, shape=(1000, 1000))  # 2 km square
    s = strip_for(dem)
    assert strip_bounds(s) == pytest.approx((X0 + 1000, Y1 - 3000, X0 + 3000, Y1 - 1000))
    cells = cells_for_strips([s, s])
    assert cells == sorted(cells) and len(cells) == 4
    assert CELL in cells and grid.Cell(CELL.ix + 1, CELL.iy - 1) in cells


def test_a_cell_whose_strips_all_fail_to_open_fails_naming_a_file(tmp_path):
    """A cell none of whose strips can be read is a failure naming the first unreadable file,
    not an empty cell ("no valid pixels"), so a moved or unmounted strip folder is seen."""
    from pipeline.config import Config
    from pipeline.orchestration.run import run_cell

    a = make_strip(tmp_path / "a", V41, x_left=X0, y_top=Y1)
    b = make_strip(tmp_path / "b", V41.replace("20170714", "20180714"), x_left=X0, y_top=Y1)
    strips = discover_strips(tmp_path)
    a.unlink()
    b.unlink()
    r = run_cell(CELL.id, strips, tmp_path / "products", Config(), "digest")
    assert r["status"] == "failed"
    assert "none of its 2 strips could be read" in r["error"] and "_dem.tif" in r["error"]
