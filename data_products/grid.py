"""The fixed EPSG:3413 work grid: 2 km cells aligned with the ArcticDEM mosaic tiling.

ArcticDEM mosaic tiles are 100 km squares counted from the origin
(-4,000,000 m, -4,000,000 m) of EPSG:3413 and named ``<row>_<col>`` (1-based; row
along y northwards, col along x eastwards); the 2 m mosaic splits each into four 50 km
subtiles ``_<i>_<j>`` (i along x, j along y, 1 = west/south). A work cell is one of the
25 x 25 cells of 2 km in a subtile, numbered the same way, so its id

    ``<row>_<col>_<i>_<j>_<cx>_<cy>``    e.g. ``36_25_2_1_07_13``

names one 2 km square anywhere in the Arctic. Cell edges fall on multiples of 2 m,
so every 2 m strip pixel belongs to exactly one cell.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rasterio.transform import Affine, from_origin

CRS = "EPSG:3413"
ORIGIN_M = -4_000_000.0
TILE_M = 100_000.0
SUBTILE_M = 50_000.0
CELL_M = 2_000.0
CELLS_PER_SUBTILE = int(SUBTILE_M // CELL_M)  # 25
RESOLUTION_M = 2.0

_CELL_RE = re.compile(r"^(\d{1,2})_(\d{1,2})_([12])_([12])_(\d{2})_(\d{2})$")


class TileIdError(ValueError):
    """A string that is not a valid cell id of the work grid."""


@dataclass(frozen=True, order=True)
class Cell:
    """One 2 km work cell: its indices counted from the grid origin."""

    ix: int  # global cell column (x), 0-based from ORIGIN_M
    iy: int  # global cell row (y), 0-based from ORIGIN_M

    @property
    def id(self) -> str:
        per_tile = int(TILE_M // CELL_M)
        col, rx = divmod(self.ix, per_tile)
        row, ry = divmod(self.iy, per_tile)
        i, cx = divmod(rx, CELLS_PER_SUBTILE)
        j, cy = divmod(ry, CELLS_PER_SUBTILE)
        return f"{row + 1}_{col + 1}_{i + 1}_{j + 1}_{cx + 1:02d}_{cy + 1:02d}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in EPSG:3413 metres."""
        x0 = ORIGIN_M + self.ix * CELL_M
        y0 = ORIGIN_M + self.iy * CELL_M
        return (x0, y0, x0 + CELL_M, y0 + CELL_M)

    def transform(self, resolution_m: float = RESOLUTION_M, halo_m: float = 0.0) -> Affine:
        xmin, _, _, ymax = self.bounds
        return from_origin(xmin - halo_m, ymax + halo_m, resolution_m, resolution_m)

    def shape(self, resolution_m: float = RESOLUTION_M, halo_m: float = 0.0) -> tuple[int, int]:
        n = int(round((CELL_M + 2 * halo_m) / resolution_m))
        return (n, n)

    def __str__(self) -> str:
        return self.id


def parse_cell_id(cell_id: str) -> Cell:
    """The cell named by ``cell_id``; a clear error if it is not one."""
    m = _CELL_RE.match(str(cell_id).strip())
    if not m:
        raise TileIdError(
            f"{cell_id!r} is not a cell id: expected <row>_<col>_<i>_<j>_<cx>_<cy>, "
            "e.g. 36_25_2_1_07_13 (row, col 1-80; i, j 1-2; cx, cy 01-25)"
        )
    row, col, i, j, cx, cy = (int(g) for g in m.groups())
    n_tiles = int((-2 * ORIGIN_M) // TILE_M)
    if not (1 <= row <= n_tiles and 1 <= col <= n_tiles):
        raise TileIdError(f"{cell_id!r}: tile row/col must be within 1-{n_tiles}")
    if not (1 <= cx <= CELLS_PER_SUBTILE and 1 <= cy <= CELLS_PER_SUBTILE):
        raise TileIdError(f"{cell_id!r}: cell indices must be within 01-{CELLS_PER_SUBTILE}")
    per_tile = int(TILE_M // CELL_M)
    ix = (col - 1) * per_tile + (i - 1) * CELLS_PER_SUBTILE + (cx - 1)
    iy = (row - 1) * per_tile + (j - 1) * CELLS_PER_SUBTILE + (cy - 1)
    return Cell(ix, iy)


def cell_at(x: float, y: float) -> Cell:
    """The cell containing EPSG:3413 point (x, y) (a point on an edge goes east/north)."""
    return Cell(int(math.floor((x - ORIGIN_M) / CELL_M)), int(math.floor((y - ORIGIN_M) / CELL_M)))


def cells_in_bounds(bounds: tuple[float, float, float, float]) -> list[Cell]:
    """Every cell intersecting (xmin, ymin, xmax, ymax) with a non-zero area."""
    xmin, ymin, xmax, ymax = bounds
    ix0 = int(math.floor((xmin - ORIGIN_M) / CELL_M))
    iy0 = int(math.floor((ymin - ORIGIN_M) / CELL_M))
    ix1 = int(math.ceil((xmax - ORIGIN_M) / CELL_M))
    iy1 = int(math.ceil((ymax - ORIGIN_M) / CELL_M))
    return [Cell(ix, iy) for iy in range(iy0, iy1) for ix in range(ix0, ix1)]


def snap_down(v: float, step: float = RESOLUTION_M) -> float:
    return math.floor(v / step) * step


class BBoxError(ValueError):
    """A box that is not four finite numbers xmin < xmax, ymin < ymax on the work grid."""


def parse_bbox(value, *, clip: bool = False) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) in EPSG:3413 metres from a 4-sequence or an 'xmin,ymin,xmax,ymax'
    text (commas, semicolons or spaces): four finite numbers (not booleans), xmin < xmax and
    ymin < ymax, on the work grid (+-4,000 km from the pole). With ``clip`` a box reaching
    beyond the grid is cut to it (one wholly outside is still an error); without, it is an
    error. The one check of a box for every caller (CLI, queue, catalog)."""
    if isinstance(value, str):
        parts = value.replace(",", " ").replace(";", " ").split()
    else:
        try:
            parts = list(value)
        except TypeError:
            raise BBoxError(f"bbox must be 4 numbers xmin, ymin, xmax, ymax, got {str(value)[:40]!r}") from None
    if len(parts) != 4:
        raise BBoxError(f"bbox must be 4 numbers xmin, ymin, xmax, ymax (EPSG:3413 m), got {len(parts)} values")
    vals = []
    for p in parts:
        if isinstance(p, bool):
            raise BBoxError(f"bbox value {p!r} is not a number")
        try:
            v = float(p)
        except (TypeError, ValueError):
            raise BBoxError(f"bbox value {str(p)[:40]!r} is not a number") from None
        if not math.isfinite(v):
            raise BBoxError(f"bbox value {p!r} is not finite")
        vals.append(v)
    xmin, ymin, xmax, ymax = vals
    if not (xmin < xmax and ymin < ymax):
        raise BBoxError(f"bbox {vals} is empty or inverted: need xmin < xmax and ymin < ymax")
    lo, hi = ORIGIN_M, -ORIGIN_M
    outside = xmin < lo or ymin < lo or xmax > hi or ymax > hi
    if outside and (not clip or xmax < lo or xmin > hi or ymax < lo or ymin > hi):
        raise BBoxError(f"bbox {vals} extends beyond the work grid ({lo:.0f} to {hi:.0f} m in EPSG:3413)")
    return (max(xmin, lo), max(ymin, lo), min(xmax, hi), min(ymax, hi))

