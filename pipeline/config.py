"""The pipeline's one typed configuration object.

Every threshold the pipeline uses lives here, with its unit in its name
(``min_area_m2``, ``max_slope_deg``). A run's configuration can be loaded from a
TOML file whose tables mirror the dataclasses below::

    [coreg]
    max_iterations = 8

    [change]
    min_step_m = 1.0

Unknown keys are an error (a misspelt threshold must not be silently ignored).
The configuration's hash is recorded with every processed cell so that a rerun
with changed parameters reprocesses it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SourcesConfig:
    """Reading strips (DESIGN step 1)."""

    #: bitmask bits that drop a pixel (bit 0 edge, bit 1 water, bit 2 cloud)
    bitmask_drop_bits: int = 0b111
    #: strips whose valid pixels cover less than this fraction of a cell are not used there
    min_cell_coverage_fraction: float = 0.01
    #: a cell is planned only if some strip's footprint covers at least this fraction of it
    #: (cells that strips merely graze are left out; 0 plans every touched cell)
    min_plan_coverage_fraction: float = 0.25


@dataclass(frozen=True)
class SelectionConfig:
    """Which strips a run uses (``rts run``/``rts plan`` flags override these). Dates, months,
    sensors and in-track apply to every source (from the strip names); cloud, valid area,
    matchtag density and RMSE to PGC's strip index, whose columns give them
    (:mod:`pipeline.strips.index`). Not part of the DEM-stage digest: a cell's result depends
    on the strips it gets, whose names are hashed."""

    #: first and last acquisition date kept (ISO ``YYYY-MM-DD``; empty = open)
    start_date: str = ""
    end_date: str = ""
    #: acquisition months kept (e.g. 6, 7, 8, 9 for the thaw season; empty = all)
    months: tuple[int, ...] = ()
    #: sensors kept (``WV01``, ``WV02``, ``WV03``, ``GE01``; empty = all)
    sensors: tuple[str, ...] = ()
    #: drop cross-track pairs (index ``is_xtrack``; names such as ``W1W2``)
    in_track_only: bool = False
    #: largest cloud fraction of the strip (index ``cloud_area_percent``, a fraction 0-1)
    max_cloud_fraction: float = 1.0
    #: smallest valid-area fraction (index ``valid_area_percent``, 0-1)
    min_valid_fraction: float = 0.0
    #: smallest matchtag density over the valid area (index ``valid_area_matchtag_density``, 0-1)
    min_matchtag_density: float = 0.0
    #: largest registration RMSE to altimetry (index ``rmse``, m; 0 = no limit; unknown passes)
    max_rmse_m: float = 0.0

    def __post_init__(self) -> None:
        for name in ("start_date", "end_date"):
            v = getattr(self, name)
            if v:
                try:
                    _dt.date.fromisoformat(v)
                except ValueError:
                    raise ValueError(f"{name} must be an ISO date YYYY-MM-DD, got {v!r}") from None
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError(f"start_date {self.start_date} is after end_date {self.end_date}")
        bad = [m for m in self.months if not 1 <= int(m) <= 12]
        if bad:
            raise ValueError(f"months must be 1-12, got {bad}")
        for name in ("max_cloud_fraction", "min_valid_fraction", "min_matchtag_density"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} is a fraction 0-1, got {v!r}")
        if self.max_rmse_m < 0:
            raise ValueError(f"max_rmse_m must be >= 0, got {self.max_rmse_m!r}")


@dataclass(frozen=True)
class CoregConfig:
    """Pairwise Nuth & Kääb (2011) coregistration and the bundle adjustment."""

    #: coregistration uses the cell plus this halo (more stable ground: better offsets)
    halo_m: float = 400.0
    #: the coregistered DEMs are resampled over the cell plus this margin, cropped at the end, so
    #: that horizontal corrections up to it never pull nodata into the cell
    resample_margin_m: float = 32.0
    #: solve twice, the second time without the ground the first solution shows changing
    second_pass: bool = False
    changing_threshold_m: float = 0.4
    changing_dilate_m: float = 10.0
    #: stable ground: slopes above this are excluded (m/m of unreliable elevation)
    max_slope_deg: float = 40.0
    #: stable ground: slopes below this carry no horizontal information in the fit
    min_slope_deg: float = 1.0
    #: random stable pixels used per pair (subsampling; accuracy is flat above ~20k)
    sample_size: int = 40_000
    max_iterations: int = 10
    #: horizontal shifts are solved on DEMs minus their Gaussian smoothing at this sigma
    #: (removes long-wavelength strip errors; 0 = off)
    highpass_sigma_m: float = 30.0
    #: when the filtered fit is less precise than this (smooth terrain), the unfiltered
    #: fit is made too and the more precise kept
    highpass_fallback_sigma_m: float = 0.15
    #: the reference DEM is smoothed by this Gaussian sigma before taking its gradients
    gradient_smoothing_m: float = 4.0
    #: stop when the horizontal update is smaller than this
    convergence_m: float = 0.01
    #: outliers beyond this many robust sigmas from the median are dropped each iteration
    outlier_nsigma: float = 3.0
    #: pairs overlapping less than this fraction of the smaller DEM are not coregistered
    min_overlap_fraction: float = 0.01
    #: the pair graph (:func:`pipeline.dem.coreg.pair_graph`): each DEM is paired with this many
    #: nearest overlapping DEMs in time and ``pair_long_baseline`` partners spread over the
    #: record, O(k n) pairs; 0 coregisters every overlapping pair, O(n^2)
    pair_neighbours: int = 3
    pair_long_baseline: int = 1
    min_stable_pixels: int = 500
    #: correlation length of DEM errors: pair precisions count one independent sample per
    #: pi * L^2 of overlap, not one per pixel
    error_correlation_m: float = 100.0
    #: a pair is rejected when its fit is this poor (reference study: 15 m)
    max_pair_sigma_m: float = 15.0
    max_pair_shift_m: float = 15.0
    #: weak zero-mean prior on absolute offsets (Dai et al. 2025: 4 m)
    prior_sigma_m: float = 4.0
    #: bundle adjustment: pairs whose residual exceeds this many times the robust
    #: residual scale (and at least ``min_residual_reject_m``) are dropped, iteratively
    residual_reject_nsigma: float = 4.0
    min_residual_reject_m: float = 0.3
    #: a DEM whose median pairwise NMAD exceeds this is dropped as a blunder
    max_dem_nmad_m: float = 3.0


@dataclass(frozen=True)
class ChangeConfig:
    """Per-pixel dominant-step model (DESIGN step 4; :mod:`pipeline.dem.change`)."""

    #: 1-sigma elevation precision of a matched (matchtag 1) observation
    sigma_matched_m: float = 0.3
    #: 1-sigma of an interpolated (matchtag 0) observation: kept, at low weight
    sigma_interpolated_m: float = 3.0
    #: 1-sigma (at best) of an acquisition outside the snow-free window (drifts, late snow)
    sigma_snow_season_m: float = 1.0
    #: snow-free window by latitude (:mod:`pipeline.dem.snow`): melt-out day of year at 60 deg N
    #: and its delay per degree further north ...
    melt_out_doy_at_60n: float = 140.0
    melt_out_days_per_deg: float = 2.4
    #: ... plus this many days for lee-slope snow banks to melt ...
    late_snow_lag_days: float = 10.0
    #: ... until the first lasting snow (day of year at 60 deg N, advance per degree north)
    snow_onset_doy_at_60n: float = 290.0
    snow_onset_days_per_deg: float = 2.2
    #: snow can only raise the surface: at a pixel where a matched acquisition from outside the
    #: snow-free window lies no more than this above the lowest of the nearest two snow-free
    #: acquisitions on either side of it, it is ground there, weighted and counted as support
    #: like any other (a record ending in an early-July strip still measures the scar it
    #: shows); 0 keeps thin snow out at the cost of trusting some ground less
    snow_rise_tolerance_m: float = 0.0
    #: the first days of the snow-free window, when late-lying banks can still lie in the lee of
    #: slopes: an acquisition of these days that sits above the snow-free ground around it in
    #: time (the lower of the later-season acquisitions before and after it) by more than
    #: ``snow_shoulder_min_m`` is snow at that pixel (low weight, no support)
    snow_shoulder_days: float = 30.0
    snow_shoulder_min_m: float = 0.3
    #: latitude assumed when the caller gives none (constructed series in tests)
    default_latitude_deg: float = 70.0
    #: consensus test: an observation is rejected when it disagrees with the median of its
    #: nearest ``consensus_neighbours`` observations on *both* sides by more than
    #: max(``consensus_min_m``, ``consensus_nsigma`` x its combined sigma) (clouds high or
    #: low, matching failures, snow); trusted neighbours are preferred
    consensus_neighbours: int = 3
    consensus_min_m: float = 1.0
    consensus_nsigma: float = 4.0
    #: residual outliers beyond this many sigmas are rejected (two iterations)
    outlier_nsigma: float = 3.0
    outlier_iterations: int = 2
    #: a step needs this many trusted epochs of observation on each side to be supported;
    #: a step resting on fewer (a change seen only by the first or last acquisition) is never
    #: confident, and is refitted without them unless it continues supported change
    min_support_obs: int = 2
    #: observations closer in time than this count as one epoch of support: strips of
    #: one day (or one week) can share a cloud, a drift, a matching failure; two
    #: acquisitions weeks apart cannot share an artefact at the same place
    support_epoch_days: int = 7
    #: unsupported steps are kept where they join supported change of the same sign and
    #: are no larger than this factor times the largest supported |dh| of the connected
    #: area they join, plus ``unsupported_margin_m``
    unsupported_magnitude_factor: float = 1.5
    unsupported_margin_m: float = 1.0
    #: unsupported steps smaller than this are left alone (they are noise either way)
    unsupported_min_dh_m: float = 1.0
    #: a first acquisition that the pixel's fit rejected, or kept at low weight without a step,
    #: but that lies at least this far above the surface that followed it is restored as the
    #: level before a drop where it joins supported drops within the magnitude limit above:
    #: the earliest band of a retreating headwall, seen by one acquisition only. Late snow on
    #: unchanged ground beside a scar is what this could mistake for such a band: on replays
    #: of fitting cells (B2, B29, B31) 1.5-2 m restores true bands and adds no loss on
    #: unchanged ground; 2 m keeps a 1.2 m bank with its noise out (tests/test_artefacts.py)
    first_witness_min_dh_m: float = 2.0
    #: ... and only where the first acquisition and the pixel's next observation at the lower
    #: level bound at least this many days of the snow-free window (the days an acquisition is
    #: trusted, from melt-out plus ``late_snow_lag_days``): ground drops while it thaws, so a first
    #: strip of late May and a next one of mid-June saw snow or a cloud melt, not a band fall. The
    #: same test refits steps with no trusted epoch before them (``change.spring_only_drops``).
    #: Counting from the trusted day, not from melt-out, can refuse a drop in the ten days after
    #: melt-out, when the active layer has barely begun to thaw (0 disables)
    first_witness_min_thaw_days: float = 1.0
    #: the surface that followed the first acquisition: the median of this many observations
    first_witness_next_obs: int = 3
    #: confidence: |dh| at least this many sigma, with at least ``min_obs`` DEMs ...
    confidence_nsigma: float = 3.0
    confidence_min_obs: int = 4
    #: ... a step sigma below this ...
    confidence_max_sigma_m: float = 2.0
    #: ... and a 3x3 spread of event time below this
    confidence_max_time_spread_days: float = 365.0
    #: cells with fewer DEMs than this get nodata change rasters
    min_dems: int = 3
    #: a headwall can pass a pixel twice (nested scars): where the dominant step drops by at
    #: least this, a further drop of at least this (and 3 sigma) before or after it is added
    #: to dh, so dh is the total change between the first and last level (0 disables)
    secondary_step_m: float = 1.0


@dataclass(frozen=True)
class TerrainConfig:
    """Total curvature of a recent median surface (DESIGN step 5)."""

    #: the median of the latest this many DEMs
    latest_dems: int = 4
    #: Gaussian pre-smoothing of the surface before second derivatives
    smoothing_sigma_m: float = 4.0


@dataclass(frozen=True)
class CandidatesConfig:
    """Rule-based slump candidates (DESIGN step 6; Dai et al. 2025 criteria 1-3)."""

    #: criterion 1: clusters of pixels that dropped at least this much ...
    max_dh_m: float = -1.0
    #: ... covering at least this area (the minimum mapping unit), with a confident pixel ...
    min_area_m2: float = 2000.0
    #: ... that lost at least this much (the reference study's confidence flag needs dh < -2 m;
    #: the published confidence raster also flags confident gains and shallower steps). Shallow
    #: confident loss alone (active-layer detachments, subsidence) does not make a slump: on the
    #: fitting samples every true slump unit lost at least 2.2 m somewhere
    confident_min_loss_m: float = 2.0
    #: criterion 2: progressive retreat - the spread (10th-90th percentile) of the time of
    #: change within the cluster exceeds this
    min_time_spread_days: float = 365.0
    #: criterion 3: the gain (debris) around a cluster: pixels rising at least this much ...
    gain_min_dh_m: float = 0.5
    #: ... within this distance of the cluster
    gain_search_m: float = 150.0
    #: at most this fraction of the gain may lie inside the (hole-filled) loss cluster
    max_gain_inside_fraction: float = 0.3
    #: clusters are found on the cell plus this halo of its neighbours' rasters; a cluster
    #: belongs to the cell holding its centroid, so a slump on a cell edge is found once
    halo_m: float = 400.0
    #: the dh error variogram (for volume uncertainty) is sampled to this lag on stable ground
    variogram_max_lag_m: float = 600.0
    #: ... from this many random pairs of stable pixels, binned into this many lags
    variogram_n_pairs: int = 200_000
    variogram_n_bins: int = 20
    #: a stable pixel is at least this many pixels from any loss or gain (the variogram's ground)
    variogram_stable_buffer_px: int = 5


@dataclass(frozen=True)
class DetectionConfig:
    """Slump detection (DESIGN step 7): a Mask R-CNN on 3-band chips around the candidates,
    or, without weights, the rule-based criteria alone."""

    #: model weights; empty = the weights shipped in ``pipeline/models/`` (rules alone if none)
    weights_path: str = ""
    #: "auto" (the detector recorded best on the held-out scene family in the evidence
    #: model file), "evidence" (physical-evidence classifier), "maskrcnn" or "rules"
    method: str = "auto"
    #: evidence model (JSON); empty = ``pipeline/models/evidence.json``
    evidence_path: str = ""
    #: accept candidates with P(slump) at least this; 0 = the model's own threshold
    evidence_min_probability: float = 0.0
    #: the evidence classifier sees only candidates passing at least this many of the
    #: reference criteria (2 = a confident pixel and progressive retreat: a scar that grew
    #: over two or more thaw seasons; one-event losses are detachments, landslides, drainage)
    evidence_min_criteria: int = 2
    #: ridge penalty of the evidence classifier's training (``rts train-evidence``), chosen by
    #: ``rts train-evidence --validate`` (:func:`pipeline.evaluation.families.choose_l2`) on
    #: validation samples that are neither trained on nor held-out seeds (docs/detection.md). A strong
    #: penalty keeps the model near the evidence every family shares
    evidence_l2: float = 20.0
    #: a drained lake, whatever the water flag says: a flat-floored basin (log of the new
    #: floor's 10-90 % relief over the median depth, each + 0.1 m, at most this) ...
    lake_max_floor_relief_ratio: float = -0.8
    #: ... without a change time that grows upslope (Spearman r of t2 against elevation) ...
    lake_max_t2_upslope_corr: float = 0.3
    #: ... on flat ground (median slope 8-24 m outside the unit, degrees)
    lake_max_ground_slope_deg: float = 5.0
    #: or, whatever its floor: a closed basin (at least this share of the ring around the unit
    #: stands above 90 % of its new floor) ...
    lake_min_closed_rim: float = 0.6
    #: ... with a low rim (mean slope of the ring's upper half on the new surface, degrees; a
    #: headwall is steep), t2 not growing upslope and flat ground as above. These branches were
    #: set on the fitting samples (A3, A7, A11, B1, B2: no slump of 150 vetoed), not on A5/B5
    lake_max_rim_slope_deg: float = 5.0
    #: or, on any ground: the surface before the change was a water level - the plane through
    #: it inside the unit (robust fit, 3 pixels in from the edge) slopes at most this (degrees) ...
    lake_max_pre_surface_slope_deg: float = 0.5
    #: ... and its residuals spread by at most this NMAD (m); t2 not growing upslope as above.
    #: Both set on the fitting samples A3, A7, A11, B1, B2 (29 drained lakes: slope <= 0.24 deg,
    #: NMAD <= 0.30 m; 149 slumps: slope >= 0.76 deg, and those under 2 deg have NMAD >= 0.57 m)
    lake_max_pre_surface_nmad_m: float = 0.45
    #: ... or at least this share of the unit's interior lay within one 0.5 m height band (set
    #: on the same samples: drained lakes 0.60-0.93, slumps at most 0.29)
    lake_min_pre_level_share: float = 0.45
    #: instances scoring below this are dropped
    min_score: float = 0.5
    #: a Mask R-CNN instance covers the pixels whose mask probability is at least this
    mask_probability: float = 0.5
    #: ... and belongs to the chip's candidate when at least this share of it lies on the candidate
    min_instance_overlap_fraction: float = 0.3
    #: candidates with at least this many criteria are shown to the detector (rules accept 3)
    min_criteria: int = 1
    #: holes smaller than this are filled and slivers narrower than half of it removed
    min_hole_m2: float = 200.0
    #: Mask R-CNN outlines are snapped to the 2 m pixels that dropped (dh <= -1 m) near the
    #: instance mask (the model sees 4 m pixels); off = the upsampled instance mask itself
    snap_to_loss: bool = True


@dataclass(frozen=True)
class QuantifyConfig:
    """Volumes, carbon and the temperature response (DESIGN steps 8-9)."""

    #: dh is integrated over the polygon plus this margin: a headwall's cliff is blurred over a
    #: pixel or two by the DEMs' effective resolution, so part of its loss lies just outside
    #: the thresholded outline (stable ground in the margin adds only zero-mean noise)
    volume_margin_m: float = 4.0
    #: where the outline lies (m): sigma_V adds, in quadrature, a band this wide along the
    #: polygon's perimeter at the depth of its rim (the mean loss of the two pixels inside the
    #: outline). Half a 2 m pixel: the headwall and the scar's edge are placed to a pixel
    outline_sigma_m: float = 1.0
    #: scale of the elevation term of sigma_V (the two-range stable-ground variogram integrated
    #: over the slump, Rolstad et al. 2009, Hugonnet et al. 2022). On stable ground the step
    #: model puts its step where the noise fits one best, so that variogram overstates the
    #: error of a real step's mean
    elevation_sigma_scale: float = 0.05
    #: scale of the step term of sigma_V: the step model's per-pixel sigma summed over the
    #: pixels that dropped (fully correlated within the scar), scaled for their partial
    #: correlation
    step_sigma_scale: float = 0.23
    #: the model term of sigma_V: this share of |V|, in quadrature with the three above, for
    #: the DEM record's own biases that no term built from the DEMs' scatter sees. Both scales
    #: were fitted by ``rts fit-sigma`` (``elevation_sigma_scale`` and ``outline_sigma_m`` held)
    #: on the twenty-three fitting samples of both scene families, A3 A7 A11 A29 A31 A33 A35 A37
    #: A47 A49 A51 A53 and B1 B2 B29 B31 B33 B35 B37 B47 B49 B51 B53 (per family, 1 sigma nearest
    #: 68 % and 2 sigma nearest 95 %: 68 / 94 % on A's 434 matched slumps, 68 / 91 % on B's
    #: 339), never on the held-out seeds the evaluation reports (docs/evaluation.md). The fit
    #: gives the model term next to nothing: the step term, not a share of V, carries the
    #: errors of both families
    model_sigma_fraction: float = 0.0025
    #: soil organic carbon density of the lost material (Dai et al. 2025)
    carbon_density_kg_m3: float = 12.0
    #: optional gridded soil-carbon raster (kg C m-3, any CRS) sampled at each slump centroid
    carbon_raster_path: str = ""
    #: summer months averaged for the temperature response (7, 8 = July-August; 6, 7, 8 = JJA)
    summer_months: tuple[int, ...] = (7, 8)
    #: fewest intervals between DEM epochs (each of at least ``min_interval_seasons`` of thaw
    #: season) for a Pearson r of loss rate against summer temperature. With fewer the r is
    #: not published: on the training seeds (A3, B2) records resolving 4-5 intervals agreed
    #: with the true response no better than chance (50-67 %), those with 8 or more in 93 %
    min_intervals: int = 6
    #: an interval between DEM epochs is merged with the next until it covers this much of
    #: a thaw season (20 Jun - 22 Sep)
    min_interval_seasons: float = 0.5
    #: slumps with r at least this are called temperature-driven (summary statistics)
    temperature_driven_r: float = 0.5


@dataclass(frozen=True)
class GridConfig:
    """The fixed EPSG:3413 work grid (DESIGN step 2): its 2 km cells are the product contract's
    (:mod:`data_products.grid`); the pixel size here is the grid the strips are read onto."""

    resolution_m: float = 2.0

    def __post_init__(self) -> None:
        if not self.resolution_m > 0:
            raise ValueError(f"resolution_m must be positive, got {self.resolution_m!r}")


@dataclass(frozen=True)
class Config:
    grid: GridConfig = field(default_factory=GridConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    coreg: CoregConfig = field(default_factory=CoregConfig)
    change: ChangeConfig = field(default_factory=ChangeConfig)
    terrain: TerrainConfig = field(default_factory=TerrainConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    quantify: QuantifyConfig = field(default_factory=QuantifyConfig)

    #: sections the per-cell DEM stage depends on (its rasters are reused when only others change)
    DEM_SECTIONS = ("grid", "sources", "coreg", "change", "terrain")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short stable hash of every parameter (recorded per processed cell)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def dem_digest(self) -> str:
        """A hash of the parameters the DEM stage (coregistration, change, terrain) uses."""
        d = self.to_dict()
        sections = {k: d[k] for k in self.DEM_SECTIONS}
        sections["revision"] = DEM_STAGE_REVISION
        for section, fields in _RETIRED_DEM_FIELDS.items():  # keeps existing DEM products valid
            sections[section] = {**fields, **sections[section]}
        blob = json.dumps(sections, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


#: the DEM stage's method revision: raised with every change to what it computes from the same
#: strips and configuration (2: out-of-season acquisitions trusted per pixel where they lie no
#: higher than the snow-free ground; residual outliers judged against the nested-drop fit; 3: snow
#: in the window's first weeks judged per pixel; trusted observations judged against trusted
#: neighbours only; 4: coregistration over the pair graph, fits sampled at candidate pixels; 5: a
#: rejected first acquisition restored as the level before a drop that joins a retreating scar;
#: the coregistration's gradient smoothing on 2 x 2 block means; 6: a first acquisition kept at
#: low weight in a fit without a step restored as well, from 2 m; 7: a drop needs snow-free days
#: between an acquisition above the later level and the next one at it, for first-witness bands
#: and for steps with no trusted epoch before them; 8: 7's rule asks it of every acquisition
#: above the later level, not the last alone, and such steps keep their after-side), so
#: that a products folder made by an earlier revision redoes its DEM stage
DEM_STAGE_REVISION = 8

#: fields that were removed from the DEM stage's sections without ever changing what it computes;
#: they stay in :meth:`Config.dem_digest` at their old values, so that a products folder made
#: before their removal is not reprocessed for nothing
_RETIRED_DEM_FIELDS = {"coreg": {"max_blunder_fraction": 0.5}, "grid": {"cell_size_m": 2000.0}}


class ConfigError(ValueError):
    """A configuration file names an unknown section or key, or a wrong type."""


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a table")
            kwargs[key] = _build(type(default), value, f"{where}.{key}")
        elif isinstance(default, tuple):
            if not isinstance(value, list):
                raise ConfigError(f"{where}.{key}: expected a list like {list(default)!r}, got {value!r}")
            kwargs[key] = tuple(_scalar(default[0], v, f"{where}.{key}") if default else v for v in value)
        else:
            kwargs[key] = _scalar(default, value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


#: settings that may be negative although their default is positive (correlations, ratios)
SIGNED_SUFFIXES = ("_corr", "_ratio", "_r")


def _scalar(default: Any, value: Any, where: str) -> Any:
    """``value`` checked against the type of ``default``: a bool is true or false (never the
    string "false"), an int an integer, a float a finite number; a setting whose default is
    positive cannot be negative (sizes, counts, resolutions)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if default > 0 and value < 0 and not where.rsplit(".", 1)[-1].endswith(SIGNED_SUFFIXES):
            raise ConfigError(f"{where}: must not be negative (default {default!r}), got {value!r}")
        return type(default)(value)
    return value


def load_config(path: str | Path | None = None) -> Config:
    """The default configuration, overridden by a TOML file if given."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8 TOML) file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return _build(Config, values, str(path))
