"""The work grid: 2 km cells of the ArcticDEM mosaic tiling, named once anywhere."""

import pytest
from pyproj import Transformer

from data_products import grid


def test_cell_id_round_trips_and_names_the_mosaic_tile():
    c = grid.cell_at(-2_497_000.0, 9_000.0)
    assert grid.parse_cell_id(c.id) == c
    row, col, i, j, cx, cy = c.id.split("_")
    # 100 km mosaic tile counted from (-4,000,000, -4,000,000), 1-based
    assert int(col) == int((-2_497_000 + 4_000_000) // 100_000) + 1
    assert int(row) == int((9_000 + 4_000_000) // 100_000) + 1
    xmin, ymin, xmax, ymax = c.bounds
    assert xmax - xmin == ymax - ymin == 2000.0
    assert xmin <= -2_497_000 < xmax and ymin <= 9_000 < ymax
    # edges on multiples of 2 m: every strip pixel belongs to one cell
    assert xmin % 2 == 0 and ymin % 2 == 0


def test_every_cell_of_a_subtile_has_a_distinct_id():
    base = grid.cell_at(-2_400_000.0 + 1, 100_000.0 + 1)
    ids = {grid.Cell(base.ix + a, base.iy + b).id for a in range(25) for b in range(25)}
    assert len(ids) == 625


def test_cells_in_bounds_cover_the_box_exactly():
    cells = grid.cells_in_bounds((0.0, 0.0, 4000.0, 2000.0))
    assert len(cells) == 2
    cells = grid.cells_in_bounds((1.0, 1.0, 4001.0, 2001.0))
    assert len(cells) == 6


@pytest.mark.parametrize("bad", ["", "41_16", "41_16_3_1_02_05", "41_16_1_1_26_05", "99_16_1_1_02_05",
                                 "41_16_1_1_02_05; DROP TABLE", "../etc/passwd"])
def test_invalid_cell_ids_are_rejected_with_a_clear_message(bad):
    with pytest.raises(grid.TileIdError, match="cell id|within"):
        grid.parse_cell_id(bad)


def test_peel_plateau_lands_in_its_real_polar_stereographic_position():
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True).transform(-135.2, 67.25)
    c = grid.cell_at(x, y)
    assert c.id.startswith("41_16_")


def test_one_box_check_for_every_caller():
    from data_products.catalog import QueryError, parse_bbox as catalog_bbox
    from data_products.grid import BBoxError, parse_bbox
    from data_products.queue import QueueError, normalise_bbox

    assert parse_bbox("1, 2 3;4") == (1.0, 2.0, 3.0, 4.0)
    for bad, why in [((3, 0, 1, 1), "inverted"), ((0, 0, float("nan"), 1), "not finite"), ((True, 0, 1, 1), "number"),
                     ((0, 0, 1), "4 numbers"), ((-5e6, 0, 10, 10), "beyond the work grid")]:
        with pytest.raises(BBoxError, match=why):
            parse_bbox(bad)
        with pytest.raises(QueueError, match=why):
            normalise_bbox(bad)
    # the catalog cuts a box reaching past the grid to it, and refuses one wholly outside
    assert catalog_bbox((-5e6, 0, 10, 10)) == (-4e6, 0.0, 10.0, 10.0)
    with pytest.raises(QueryError, match="box: .*beyond the work grid"):
        catalog_bbox((-6e6, 0, -5e6, 10))
