"""The product contract: file names, columns, types, units and meanings.

One place for what the pipeline writes and the dashboard reads. The data dictionary
(``data_dictionary.md`` / ``.json`` in every products folder) and the STAC
``table:columns`` are generated from these tables, and the writers check frames against
them, so the documentation cannot drift from the files.

All geometries are EPSG:3413 (NSIDC Sea Ice Polar Stereographic North), metres.
Dates are calendar dates (UTC) of DEM acquisitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from . import timebase

CRS = "EPSG:3413"

INVENTORY = "rts_inventory.parquet"
TIMESERIES = "rts_timeseries.parquet"
TILES = "tiles.parquet"
INVENTORY_CSV = "rts_inventory.csv"
TIMESERIES_CSV = "rts_timeseries.csv"
STAC_COLLECTION = "stac/collection.json"
DICTIONARY_MD = "data_dictionary.md"
DICTIONARY_JSON = "data_dictionary.json"
QUEUE = "jobs.sqlite"
MATCHES = "inventory_matches.parquet"
CANDIDATES = "candidates.parquet"
REGION_SUMMARY_CSV = "rts_region_summary.csv"
YEARLY_TOTALS_CSV = "rts_yearly_totals.csv"
#: per-cell side files: ``tiles/<cell>/cell.json`` (DEM stage) and ``parts/<cell>/part.json`` (slump stage)
CELL_META = "cell.json"
PART_META = "part.json"
#: day zero of the t1/t2 rasters (their values are days since this date; data_products.timebase)
DATE_EPOCH = timebase.EPOCH_ISO
#: the t1/t2 rasters' nodata (no step, or undefined)
NODATA_DATE = -9999
#: the DEM stage's rasters of a cell (``tiles/<cell id>/<name>.tif``, COGs in EPSG:3413 at the
#: grid resolution): name -> (dtype, nodata, description with its unit last)
CELL_RASTERS = {
    "dh": ("float32", float("nan"), "elevation change of the dominant step, m (negative: ground dropped)"),
    "dh_sigma": ("float32", float("nan"), "1-sigma uncertainty of dh, m"),
    "t1": ("int32", NODATA_DATE, "date of the last observation before the step, days since 2000-01-01"),
    "t2": ("int32", NODATA_DATE, "date of the first observation after the step, days since 2000-01-01"),
    "n_obs": ("int16", -1, "number of observations used"),
    "n_before": ("int16", -1, "trusted observations supporting the level before the step"),
    "n_after": ("int16", -1, "trusted observations supporting the level after the step"),
    "confidence": ("uint8", 255, "1 confident step, 0 not confident, 255 undefined"),
    "curvature": ("float32", float("nan"), "total curvature of the recent surface, m^-2"),
    "elevation": ("float32", float("nan"), "recent surface: median of the latest coregistered DEMs, m"),
}
#: the thaw season, ((month, day), (month, day)): 20 June - 22 September (Dai et al. 2025)
THAW_SEASON = timebase.THAW_SEASON
#: slumps with a Pearson r of loss rate against summer temperature at least this are called
#: temperature-driven, unless the products record another value (``manifest.json`` ->
#: ``config.quantify.temperature_driven_r``, written from the run's configuration)
DEFAULT_TEMPERATURE_DRIVEN_R = 0.5
#: written last by publishing: checksums of every product file and the resolved configuration
MANIFEST = "manifest.json"
#: published inventories converted for the dashboard's reference layers (``rts dashboard --reference``)
REFERENCE_DIR = "reference"


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    unit: str
    description: str
    nullable: bool = False


_F = pa.float64()

INVENTORY_COLUMNS: tuple[Column, ...] = (
    Column("rts_id", pa.string(), "", "Stable slump id derived from its location: 'RTS' + the EPSG:3413 x and y "
           "(decametres, signed) of the cell-grid point nearest the polygon's centroid; identical across reruns."),
    Column("tile_id", pa.string(), "", "Id of the 2 km work cell that owns the slump (holds its centroid), "
           "'<row>_<col>_<i>_<j>_<cx>_<cy>' on the ArcticDEM mosaic grid."),
    Column("region", pa.string(), "", "Named Arctic RTS region the centroid falls in (data_products.regions), "
           "else a broad sector."),
    Column("geometry", pa.binary(), "EPSG:3413 m", "Active area: the ground that dropped by at least the change "
           "threshold during the record (polygon, WKB)."),
    Column("centroid_lat", _F, "degree", "Latitude of the polygon centroid (WGS 84)."),
    Column("centroid_lon", _F, "degree", "Longitude of the polygon centroid (WGS 84, -180..180)."),
    Column("area_m2", _F, "m2", "Planimetric area of the polygon."),
    Column("volume_m3", _F, "m3", "Material lost inside the polygon between first and last observation: "
           "V = -A_px * sum(dh) (positive for loss)."),
    Column("volume_sigma_m3", _F, "m3", "1-sigma uncertainty of volume_m3: spatially correlated elevation errors "
           "(a two-range variogram on stable ground integrated over the area; Rolstad et al. 2009, Hugonnet et al. "
           "2022), the outline's position and the step model's own sigma, in quadrature."),
    Column("mean_dh_m", _F, "m", "Mean elevation change inside the polygon (negative for loss)."),
    Column("max_loss_m", _F, "m", "Largest elevation loss inside the polygon (positive)."),
    Column("first_change", pa.date32(), "date", "Earliest date at which part of the slump is seen changed "
           "(earliest t2 in the polygon).", nullable=True),
    Column("last_change", pa.date32(), "date", "Latest date at which part of the slump is seen changed "
           "(latest t2 in the polygon).", nullable=True),
    Column("n_dems", pa.int32(), "count", "Largest number of DEM observations of a pixel in the polygon."),
    Column("volume_rate_m3_yr", _F, "m3/yr", "volume_m3 divided by the interval over which the loss happened "
           "(latest t2 - earliest t1 in the polygon, in years)."),
    Column("carbon_kg_yr", _F, "kg C/yr", "volume_rate_m3_yr times the soil carbon density (default 12 kg C/m3, "
           "Dai et al. 2025, or a gridded soil-carbon raster)."),
    Column("carbon_density_kg_m3", _F, "kg C/m3", "Carbon density used for carbon_kg_yr."),
    Column("r_temperature", _F, "", "Pearson r of the loss rate (m3 per thaw season) against the summer air "
           "temperature, over the intervals between the cell's DEMs (each at least half a thaw season; at least "
           "6 intervals); empty when the record does not resolve enough intervals.", nullable=True),
    Column("p_temperature", _F, "", "Two-sided p-value of r_temperature.", nullable=True),
    Column("temperature_note", pa.string(), "", "Why r_temperature is empty (too few intervals, outside the climate "
           "grid, NaN temperatures, no climate file); empty otherwise.", nullable=True),
    Column("n_years", pa.int32(), "count", "Thaw seasons with a yearly volume (rows in rts_timeseries)."),
    Column("detector", pa.string(), "", "What accepted the slump: 'maskrcnn' or 'rules' (criteria 1-3)."),
    Column("detector_score", _F, "0-1", "Detector confidence (Mask R-CNN instance score; 1.0 for rules)."),
    Column("criteria", pa.int8(), "0-3", "Reference-study criteria met by the underlying cluster: 1 size and "
           "confidence, 2 progressive retreat, 3 geomorphic consistency."),
    Column("pipeline_version", pa.string(), "", "Version of the pipeline that produced the row."),
    Column("processed_at", pa.timestamp("ms", tz="UTC"), "UTC", "When the owning cell's slumps were computed."),
)

TIMESERIES_COLUMNS: tuple[Column, ...] = (
    Column("rts_id", pa.string(), "", "Slump id (rts_inventory.rts_id)."),
    Column("year", pa.int16(), "year", "Thaw season (20 Jun - 22 Sep of this year)."),
    Column("volume_m3", _F, "m3", "Volume lost in this thaw season: loss binned on t2, spread evenly over the "
           "seasons between t1 and t2 when they span several."),
    Column("volume_sigma_m3", _F, "m3", "1-sigma uncertainty of volume_m3 (correlated-error model over the "
           "area that changed this season)."),
    Column("summer_t2m_c", _F, "degC", "Summer (July-August by default) mean 2 m air temperature at the slump.",
           nullable=True),
)

TILES_COLUMNS: tuple[Column, ...] = (
    Column("tile_id", pa.string(), "", "Cell id on the ArcticDEM mosaic grid."),
    Column("geometry", pa.binary(), "EPSG:3413 m", "Cell footprint (2 km square, WKB)."),
    Column("status", pa.string(), "", "ok, too_few_dems, no_data or failed."),
    Column("n_strips", pa.int32(), "count", "DEM strips used in the cell."),
    Column("n_slumps", pa.int32(), "count", "Slumps the cell owns in rts_inventory."),
    Column("volume_m3", _F, "m3", "Total volume of the cell's slumps."),
    Column("inputs_digest", pa.string(), "", "Hash of the strips' names and the configuration; an unchanged "
           "digest means the cell is skipped on rerun.", nullable=True),
    Column("seconds", _F, "s", "Processing time of the cell's last run (DEM stage and slump stage).",
           nullable=True),
    Column("processed_at", pa.timestamp("ms", tz="UTC"), "UTC", "When the cell was last processed.", nullable=True),
    Column("error", pa.string(), "", "Why the cell failed or has no data; empty when ok.", nullable=True),
)

MATCHES_COLUMNS: tuple[Column, ...] = (
    Column("rts_id", pa.string(), "", "Slump id (rts_inventory.rts_id)."),
    Column("reference", pa.string(), "", "File name of the published inventory matched against."),
    Column("reference_row", pa.int64(), "", "0-based row of the matching feature in that file."),
    Column("reference_id", pa.string(), "", "The feature's own id in that file, when it has one.", nullable=True),
    Column("iou", _F, "0-1", "Intersection over union of the two polygons (empty for a point reference: the "
           "point lies inside the slump).", nullable=True),
)

TABLES: dict[str, tuple[Column, ...]] = {
    INVENTORY: INVENTORY_COLUMNS,
    TIMESERIES: TIMESERIES_COLUMNS,
    TILES: TILES_COLUMNS,
}
#: written only on request (``rts crossref --products``); documented in the dictionary too
OPTIONAL_TABLES: dict[str, tuple[Column, ...]] = {MATCHES: MATCHES_COLUMNS}


# --------------------------------------------------------------------------- side files
#: ``candidates.parquet`` (GeoParquet, EPSG:3413): every candidate loss cluster, the reference
#: criteria it meets, and its ``ev_*`` evidence features (all float64); columns not listed may follow
CANDIDATE_COLUMNS = {
    "cell_id": "string", "geometry": "geometry", "area_m2": "float64", "loss_m3": "float64",
    "volume_sigma_m3": "float64", "gain_m3": "float64", "max_loss_m": "float64", "time_spread_days": "float64",
    "confident": "bool", "progressive": "bool", "loss_upslope": "bool", "loss_exceeds_gain": "bool",
    "geomorphic": "bool", "touches_edge": "bool", "criteria": "int64",
}
#: ``rts_region_summary.csv``: one row per region and one "Arctic" row
REGION_SUMMARY_HEADER = ("region", "n_slumps", "area_m2", "volume_m3", "volume_sigma_m3", "carbon_kg_yr",
                         "n_without_carbon", "n_with_r", "share_r_ge", "slope_m3_per_degc", "slope_se_m3_per_degc")
#: ``rts_yearly_totals.csv``: one row per region and thaw season
YEARLY_TOTALS_HEADER = ("region", "year", "volume_m3", "n_slumps", "summer_t2m_c", "volume_sigma_m3")

_DIGEST = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
_CHECKSUMS = {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{16,64}$"}}
_CELL_ID = {"type": "string", "pattern": r"^\d+_\d+_\d_\d_\d{2}_\d{2}$"}
_WHEN = {"type": "string", "format": "date-time"}

#: JSON Schema (2020-12) of ``cell.json``: what the DEM stage of a cell used and found
CELL_META_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "cell.json", "type": "object",
    "required": ["cell_id", "status", "bounds_3413", "strips", "dates", "coregistration", "timings_s", "warnings",
                 "config_digest", "inputs_digest", "processed_at", "date_encoding", "files"],
    "properties": {
        "cell_id": _CELL_ID,
        "status": {"enum": ["ok", "no_data", "too_few_dems"]},
        "bounds_3413": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
        "strips": {"type": "array", "items": {"type": "string"}},
        "dates": {"type": "array", "items": {"type": "string", "format": "date"}},
        "coregistration": {"type": "array", "items": {
            "type": "object", "required": ["strip", "date", "dx_m", "dy_m", "dz_m", "used", "reason"],
            "properties": {"strip": {"type": "string"}, "sensor": {"type": ["string", "null"]},
                           "date": {"type": "string"},
                           "dx_m": {"type": ["number", "null"]}, "dy_m": {"type": ["number", "null"]},
                           "dz_m": {"type": ["number", "null"]}, "used": {"type": "boolean"},
                           "reason": {"type": ["string", "null"]}}}},
        "rejected_pairs": {"type": "array"},
        "timings_s": {"type": "object", "additionalProperties": {"type": "number"}},
        "warnings": {"type": "array", "items": {"type": "string"}},
        # inputs_digest is null for rasters written outside `rts run` (which then reprocesses the cell)
        "config_digest": _DIGEST, "inputs_digest": {"anyOf": [_DIGEST, {"type": "null"}]}, "processed_at": _WHEN,
        "date_encoding": {"type": "string"}, "files": _CHECKSUMS,
    },
}
#: JSON Schema (2020-12) of ``part.json``: a cell's slump-stage part, written last
PART_META_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "part.json", "type": "object",
    "required": ["cell_id", "digest", "n_slumps", "n_candidates", "volume_m3", "files", "processed_at"],
    "properties": {
        "cell_id": _CELL_ID, "digest": {"type": "string"},
        "n_slumps": {"type": "integer", "minimum": 0}, "n_candidates": {"type": "integer", "minimum": 0},
        "volume_m3": {"type": "number", "minimum": 0}, "seconds": {"type": "number", "minimum": 0},
        "files": _CHECKSUMS, "processed_at": _WHEN, "variogram": {"type": ["object", "null"]},
    },
}
#: JSON Schema (2020-12) of ``manifest.json``
MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "manifest.json", "type": "object",
    "required": ["pipeline_version", "files", "written_at"],
    "properties": {"pipeline_version": {"type": "string"}, "files": _CHECKSUMS, "written_at": _WHEN,
                   "config": {"type": "object", "properties": {"quantify": {"type": "object"}}}},
}


def names(columns: tuple[Column, ...]) -> list[str]:
    return [c.name for c in columns]


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    """The Arrow schema of a table (geometry as WKB binary)."""
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable or c.name == "geometry") for c in columns])


def dictionary_markdown() -> str:
    """The data dictionary as markdown (one table per product file)."""
    out = ["# Data dictionary", "",
           "Every product file, its columns, types and units. Geometries are EPSG:3413 (metres); "
           "`rts_inventory.csv` carries the geometry as WKT plus `centroid_lon`/`centroid_lat` (WGS 84).", ""]
    for fname, cols in {**TABLES, **OPTIONAL_TABLES}.items():
        out += [f"## `{fname}`", "", "| column | type | unit | description |", "|---|---|---|---|"]
        for c in cols:
            t = "WKB polygon" if c.name == "geometry" else str(c.type)
            out.append(f"| `{c.name}` | {t}{' (nullable)' if c.nullable else ''} | {c.unit} | {c.description} |")
        out.append("")
    return "\n".join(out)


def dictionary_json() -> dict:
    """The data dictionary, machine-readable: {file: [{name, type, unit, nullable, description}]}."""
    return {fname: [{"name": c.name, "type": "wkb" if c.name == "geometry" else str(c.type), "unit": c.unit,
                     "nullable": c.nullable, "description": c.description} for c in cols]
            for fname, cols in {**TABLES, **OPTIONAL_TABLES}.items()}
