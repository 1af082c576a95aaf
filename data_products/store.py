"""The layout of a products folder, owned in one place.

A products folder holds the published products at its top level (file names in
:mod:`data_products.schema`), the DEM stage's per-cell rasters and ``cell.json`` under
``tiles/<cell id>/``, the slump stage's per-cell parts (``slumps.parquet``,
``timeseries.parquet``, ``candidates.parquet``, ``part.json``) under ``parts/<cell id>/``, and a
``failure.json`` beside either when that stage failed for the cell. The pipeline, the
dashboard, the evaluation and the benchmarks find every path through :class:`ProductsStore`,
so the layout can change here alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from . import grid, schema

log = logging.getLogger(__name__)

#: the DEM stage's per-cell folders
TILES_DIR = "tiles"
#: the slump stage's per-cell folders
PARTS_DIR = "parts"
#: written beside a stage's outputs when it failed for the cell, removed when it succeeds
FAILURE = "failure.json"
#: the rasters of a cell the slump stage reads (and the dashboard shows)
DH_RASTER = "dh.tif"


@dataclass(frozen=True)
class ProductsStore:
    """Paths of one products folder ``root``; nothing is created until written."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # published products (top level)
    @property
    def inventory(self) -> Path:
        return self.root / schema.INVENTORY

    @property
    def candidates(self) -> Path:
        return self.root / schema.CANDIDATES

    @property
    def manifest(self) -> Path:
        return self.root / schema.MANIFEST

    # the DEM stage: tiles/<cell>/
    @property
    def tiles_dir(self) -> Path:
        return self.root / TILES_DIR

    def tile_dir(self, cell_id: str) -> Path:
        return self.root / TILES_DIR / cell_id

    @staticmethod
    def tile_key(cell_id: str, name: str) -> str:
        """The products-relative path of a cell's DEM-stage file, as links and the dashboard
        name it (``tiles/<cell id>/<name>``)."""
        return f"{TILES_DIR}/{cell_id}/{name}"

    def tile_file(self, cell_id: str, name: str) -> Path:
        """A file of a cell's DEM products (a raster such as ``dh.tif``, ``cell.json``)."""
        return self.root / TILES_DIR / cell_id / name

    def cell_meta_path(self, cell_id: str) -> Path:
        return self.tile_file(cell_id, schema.CELL_META)

    def tile_failure_path(self, cell_id: str) -> Path:
        return self.tile_file(cell_id, FAILURE)

    def read_cell_meta(self, cell_id: str) -> dict:
        """A cell's ``cell.json``; OSError or ValueError (JSON) when missing or unreadable."""
        return json.loads(self.cell_meta_path(cell_id).read_text())

    def tile_folders(self) -> list[tuple[grid.Cell, Path]]:
        """(cell, folder) of every folder under ``tiles/`` named by a valid cell id, sorted."""
        out = []
        for folder in sorted(p for p in self.tiles_dir.glob("*") if p.is_dir()):
            try:
                out.append((grid.parse_cell_id(folder.name), folder))
            except ValueError:
                continue
        return out

    def live_cells(self) -> list[str]:
        """Cells with published DEM products (a ``tiles/<cell id>/cell.json``); other folders
        under ``tiles/`` are ignored with a warning."""
        ids = []
        for p in self.tiles_dir.glob(f"*/{schema.CELL_META}"):
            try:
                if grid.parse_cell_id(p.parent.name).id == p.parent.name:
                    ids.append(p.parent.name)
            except ValueError:
                log.warning("%s is not a cell folder; ignored", p.parent)
        return sorted(ids)

    def raster_cells(self, name: str = DH_RASTER) -> list[str]:
        """Cells whose folder holds the raster ``name`` (default ``dh.tif``), sorted."""
        return sorted(p.parent.name for p in self.tiles_dir.glob(f"*/{name}"))

    # the slump stage: parts/<cell>/
    @property
    def parts_dir(self) -> Path:
        return self.root / PARTS_DIR

    def part_dir(self, cell_id: str) -> Path:
        return self.root / PARTS_DIR / cell_id

    def part_file(self, cell_id: str, name: str) -> Path:
        return self.root / PARTS_DIR / cell_id / name

    def part_meta_path(self, cell_id: str) -> Path:
        return self.part_file(cell_id, schema.PART_META)

    def part_failure_path(self, cell_id: str) -> Path:
        return self.part_file(cell_id, FAILURE)

    def part_cells(self) -> list[str]:
        """Cells with a ``part.json`` (whole or not), sorted."""
        return sorted(p.parent.name for p in self.parts_dir.glob(f"*/{schema.PART_META}"))

    def part_files(self, name: str) -> list[Path]:
        """The file ``name`` of every part that has one, sorted by cell."""
        return sorted(self.parts_dir.glob(f"*/{name}"))
