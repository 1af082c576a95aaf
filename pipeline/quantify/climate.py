"""Summer air temperature at slumps and the response of yearly volume loss to it.

Readers for monthly or hourly 2 m temperature in the layouts users have:

* ERA5 from the CDS as GRIB (its default; read with cfgrib, shortName ``2t``) or NetCDF, new
  layout (``valid_time``, ``number``, ``expver``, ``latitude``, ``longitude``, ``t2m`` in K)
  and old layout (``time`` instead of ``valid_time``, ``expver`` possibly a dimension),
  monthly or hourly, as cfgrib writes it (scalar ``time``/``step``/``number``, or
  ``valid_time`` along ``step``); one file, a folder of them or a glob (one per year);
* CRU TS (``tmp`` in degrees C on ``time``, ``lat``, ``lon``).

Everything is returned as degrees C on (time, lat, lon) with longitudes in [-180, 180).
The summer temperature of a year is the mean of its July-August months (JJA optional), at
the grid cell nearest the slump (Dai et al. 2025 used ERA5 July-August, nearest cell).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from data_products import timebase

log = logging.getLogger(__name__)


class ClimateError(ValueError):
    """A climate file without the expected variable or grid."""


_TIME = ("valid_time", "time")
_LAT = ("latitude", "lat")
_LON = ("longitude", "lon")


def _pick(ds: xr.Dataset, names: tuple[str, ...], what: str, path: Path) -> str:
    for n in names:
        if n in ds.variables:
            return n
    raise ClimateError(f"{path}: no {what} coordinate (looked for {', '.join(names)}; "
                       f"found {', '.join(map(str, ds.variables))})")


#: file suffixes read as GRIB (with cfgrib and the eccodes wheels); others are tried as NetCDF
GRIB_SUFFIXES = (".grib", ".grib1", ".grib2", ".grb", ".grb2")
CLIMATE_SUFFIXES = (".nc", ".nc4", ".netcdf") + GRIB_SUFFIXES


def climate_files(source: str | Path) -> list[Path]:
    """The files of a climate source: one file, every NetCDF/GRIB file of a folder (CDS
    requests are often split, one file per year), or a glob pattern (``era5/*.grib``)."""
    src = Path(source)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in CLIMATE_SUFFIXES)
        if not files:
            raise ClimateError(f"{src}: no NetCDF or GRIB file in the folder (looked for {', '.join(CLIMATE_SUFFIXES)})")
        return files
    if any(ch in str(source) for ch in "*?["):
        files = sorted(p for p in src.parent.glob(src.name) if p.is_file())
        if not files:
            raise ClimateError(f"{source}: no file matches")
        return files
    if not src.exists():
        raise ClimateError(f"{src}: climate file not found")
    return [src]


def _is_grib(path: Path) -> bool:
    if path.suffix.lower() in GRIB_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GRIB"
    except OSError:
        return False


def _open_grib(path: Path) -> xr.Dataset:
    """The 2 m temperature messages of a GRIB file (shortName ``2t``) as cfgrib reads them;
    a file without them is an error listing what it holds."""
    try:
        import cfgrib  # noqa: F401 - the engine; the eccodes wheel carries the library
    except ImportError as exc:
        raise ClimateError(f"{path}: reading GRIB needs cfgrib and eccodes (pip install cfgrib eccodes): {exc}") from None
    kw = {"indexpath": ""}  # never write a .idx file beside the data (it may be read-only)
    try:
        ds = xr.open_dataset(path, engine="cfgrib", backend_kwargs={**kw, "filter_by_keys": {"shortName": "2t"}})
    except Exception as exc:  # noqa: BLE001 - eccodes/cfgrib raise many types for a broken file
        raise ClimateError(f"{path}: not a readable GRIB file ({type(exc).__name__}: {exc})") from None
    if ds.data_vars:
        return ds
    try:
        import cfgrib

        held = sorted({f"{v} ({', '.join(str(c) for c in d.coords if d[c].ndim == 0 and c not in _SCALAR_TIME)})"
                       for d in cfgrib.open_datasets(str(path), backend_kwargs=kw) for v in d.data_vars})
    except Exception:  # noqa: BLE001 - only for the message
        held = []
    raise ClimateError(f"{path}: no 2 m temperature (GRIB shortName '2t', ERA5 '2m_temperature') in the file"
                       + (f"; it holds {', '.join(held)}" if held else ""))


_SCALAR_TIME = ("time", "step", "valid_time", "number")


def open_temperature(source: str | Path) -> xr.DataArray:
    """2 m air temperature (deg C) as a DataArray on (time, lat, lon), monthly means, from
    one NetCDF or GRIB file, a folder of them or a glob (concatenated in time; a month given
    twice, e.g. ERA5T and final ERA5 in two requests, is kept once)."""
    files = climate_files(source)
    parts = [_open_one(p) for p in files]
    if len(parts) == 1:
        return parts[0]
    da = xr.concat(parts, dim="time", join="outer").sortby("time")
    keep = ~pd.Index(da.time.values).duplicated(keep="last")
    return da.isel(time=np.flatnonzero(keep))


def _open_one(path: Path) -> xr.DataArray:
    if _is_grib(path):
        ds = _open_grib(path)
    else:
        try:
            ds = xr.open_dataset(path)
        except Exception as exc:  # netCDF4/h5 errors vary
            raise ClimateError(f"{path}: not a readable NetCDF file ({exc})") from None
    if "t2m" in ds.data_vars or "tmp" in ds.data_vars:
        name = "t2m" if "t2m" in ds.data_vars else "tmp"
        da = _to_celsius(ds[name], name, path)
    else:
        raise ClimateError(f"{path}: no temperature variable (expected ERA5 't2m' or CRU TS 'tmp'; "
                           f"found {', '.join(map(str, ds.data_vars)) or 'none'})")
    t, la, lo = _pick(ds, _TIME, "time", path), _pick(ds, _LAT, "latitude", path), _pick(ds, _LON, "longitude", path)
    for c in (la, lo):
        if ds[c].ndim != 1:
            raise ClimateError(f"{path}: '{c}' is {ds[c].ndim}-D (a curvilinear or projected grid); "
                               "regrid to a regular latitude/longitude grid (e.g. `cdo remapbil`) first")
    if t not in da.dims and t in da.coords and da[t].ndim == 1:  # cfgrib: valid_time along 'step' (or 'time')
        da = da.swap_dims({da[t].dims[0]: t})
    elif t not in da.dims and t in da.coords and da[t].ndim == 2:  # cfgrib: valid_time (time, step)
        d0, d1 = da[t].dims
        da = da.stack(_obs=(d0, d1)).drop_vars([d0, d1, "_obs"], errors="ignore")
        da = da.assign_coords({t: ("_obs", da[t].values)}).swap_dims({"_obs": t})
    if t not in da.dims and t in da.coords and da[t].ndim == 0:  # one time step, kept as a scalar coordinate
        da = da.expand_dims(t)
    if t not in da.dims:
        raise ClimateError(f"{path}: '{da.name}' has no '{t}' dimension (dims {', '.join(map(str, da.dims))})")
    for d in [d for d in da.dims if d not in (t, la, lo)]:
        # 'expver' as a dimension (old CDS NetCDF mixing ERA5 and ERA5T): each month is in one
        # of them, so the NaN-skipping mean takes it; an ensemble 'number': its mean
        da = da.mean(d, skipna=True, keep_attrs=True)
    # cfgrib writes both 'valid_time' (what the value is for) and 'time' (the forecast's
    # reference time): the reference time goes, so that the renaming does not clash
    clash = [n for n, src in (("time", t), ("lat", la), ("lon", lo)) if n != src and n in da.coords]
    da = da.drop_vars(clash).rename({t: "time", la: "lat", lo: "lon"}).transpose("time", "lat", "lon")
    da = da.drop_vars([c for c in da.coords if c not in ("time", "lat", "lon")])
    if da.sizes["lat"] < 1 or da.sizes["lon"] < 1 or da.sizes["time"] < 1:
        raise ClimateError(f"{path}: empty temperature grid")
    da = da.assign_coords(lon=((da.lon + 180.0) % 360.0) - 180.0).sortby("lon").sortby("lat")
    times = _datetimes(da.time.values, path)
    da = da.assign_coords(time=times).sortby("time")
    if len(times) > 1 and np.diff(np.sort(times.values)).min() < np.timedelta64(27, "D"):  # hourly/daily
        da = da.resample(time="MS").mean()
    return da


def check_series(da: xr.DataArray, months: tuple[int, ...], source: str | Path, min_years: int = 2) -> None:
    """A temperature series the response can use: the ``months`` of at least ``min_years``
    years. A single field (one time step), or a file without those months, is an error
    saying what is missing."""
    times = pd.DatetimeIndex(da.time.values)
    s = pd.Series(1, index=times)
    s = s[s.index.month.isin(months)]
    full = int((s.groupby(s.index.year).count() == len(months)).sum())
    if full >= min_years:
        return
    span = f"{times.min():%Y-%m-%d}" + (f" to {times.max():%Y-%m-%d}" if len(times) > 1 else "")
    what = f"a single field ({span}), not a series" if len(times) == 1 else f"{len(times)} time steps ({span})"
    raise ClimateError(f"{source}: {what}; the temperature response needs months {','.join(map(str, months))} of at least "
                       f"{min_years} years (found {full}): request ERA5 monthly (or hourly) 2 m temperature for "
                       "every summer the strips span")


_KELVIN = {"k", "kelvin", "kelvins", "deg k", "degk", "degrees k", "degree k", "degrees kelvin"}
_CELSIUS = {"degc", "deg c", "celsius", "degrees celsius", "degree celsius", "°c", "c", "degrees c", "degree c"}
_FAHRENHEIT = {"degf", "deg f", "fahrenheit", "degrees fahrenheit", "degree fahrenheit", "°f", "f", "degrees f",
               "degree f"}
PLAUSIBLE_C = (-90.0, 60.0)  # monthly-mean 2 m air temperature anywhere on Earth (deg C)


def _to_celsius(da: xr.DataArray, name: str, path: Path) -> xr.DataArray:
    """``da`` in degrees C from its ``units`` attribute (K, degC or degF in their usual
    spellings); a missing or unknown unit, or values outside :data:`PLAUSIBLE_C` after
    conversion, is an error naming the file (never a silent assumption)."""
    units = da.attrs.get("units")
    if not isinstance(units, str) or not units.strip():
        raise ClimateError(f"{path}: '{name}' has no units attribute; expected K or degC (set it, e.g. "
                           f"`ncatted -a units,{name},o,c,K {path.name}`)")
    u = " ".join(units.strip().lower().replace("_", " ").split())
    if u in _KELVIN:
        out = da - 273.15
    elif u in _CELSIUS:
        out = da
    elif u in _FAHRENHEIT:
        out = (da - 32.0) * (5.0 / 9.0)
    else:
        raise ClimateError(f"{path}: '{name}' has units '{units}'; expected K, degC or degF")
    lo, hi = float(out.min(skipna=True)), float(out.max(skipna=True))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ClimateError(f"{path}: '{name}' has no finite values")
    if lo < PLAUSIBLE_C[0] or hi > PLAUSIBLE_C[1]:
        raise ClimateError(f"{path}: '{name}' in '{units}' gives {lo:.1f} to {hi:.1f} deg C, outside the plausible "
                           f"{PLAUSIBLE_C[0]:.0f} to {PLAUSIBLE_C[1]:.0f} deg C (wrong units attribute?)")
    return out.assign_attrs(units="degC")


def _datetimes(values, path: Path) -> pd.DatetimeIndex:
    """Timestamps of the time axis; non-standard calendars (``noleap``, ``360_day``, read by
    xarray as cftime objects) are mapped to the same year, month, day (capped at 28) and
    hour, which is all a monthly summer mean needs."""
    if np.issubdtype(np.asarray(values).dtype, np.datetime64):
        return pd.DatetimeIndex(values)
    try:
        return pd.DatetimeIndex([pd.Timestamp(int(v.year), int(v.month), min(int(v.day), 28), int(v.hour))
                                 for v in values])
    except (AttributeError, TypeError, ValueError) as exc:
        raise ClimateError(f"{path}: time values are not dates ({exc})") from None


def summer_temperature(da: xr.DataArray, lat: float, lon: float, months: tuple[int, ...] = (7, 8),
                       max_distance_deg: float = 1.0) -> pd.Series:
    """Mean temperature of ``months`` per year at the nearest grid cell (deg C, index: year).

    Raises ClimateError when the point lies outside the grid (farther than
    ``max_distance_deg`` from every cell)."""
    lon = ((lon + 180.0) % 360.0) - 180.0
    cell = da.sel(lat=lat, lon=lon, method="nearest")
    if abs(float(cell.lat) - lat) > max_distance_deg or abs(float(cell.lon) - lon) > max_distance_deg:
        raise ClimateError(f"({lat:.3f}, {lon:.3f}) is outside the climate grid "
                           f"(lat {float(da.lat.min()):.2f}..{float(da.lat.max()):.2f}, "
                           f"lon {float(da.lon.min()):.2f}..{float(da.lon.max()):.2f})")
    s = cell.to_series()
    s.index = pd.DatetimeIndex(s.index)
    s = s[s.index.month.isin(months)]
    counts = s.groupby(s.index.year).count()
    means = s.groupby(s.index.year).mean()
    return means[counts == len(months)]


# the time base and thaw seasons are part of the product contract (data_products.timebase)
THAW_SEASON = timebase.THAW_SEASON
thaw_season_of = timebase.thaw_season_of
season_coverage = timebase.season_coverage
seasons_covered = timebase.seasons_covered


def interval_temperature_response(intervals: pd.DataFrame, summer_c: pd.Series, min_intervals: int = 6
                                  ) -> tuple[float, float, int, str]:
    """Pearson r and p of the loss rate against summer temperature, over the intervals
    between DEM epochs (:func:`pipeline.quantify.volume.interval_losses`).

    An interval's rate is its volume per thaw season (m3 per season-equivalent) and its
    temperature the mean of the summers it covers, weighted by how much of each thaw season
    lies inside it: the record's own resolution. A yearly series interpolated across a gap
    of several summers has as many values as years but no more information than the gap;
    a sparse record (a High-Arctic site with 6 DEMs resolves 4 intervals) gives no r.
    (Dai et al. 2025 bin by t2 and average July-August temperature within the bin's median
    t1-t2 span, the same idea per bin.)

    Returns (r, p, n_intervals, reason); r and p are NaN with a reason when fewer than
    ``min_intervals`` intervals have both a rate and a temperature, or a series is constant."""
    x, y = [], []
    for cov, seasons, vol in zip(intervals.coverage, intervals.seasons, intervals.volume_m3):
        t = [summer_c.get(yr, np.nan) for yr in cov]
        if not cov or seasons <= 0 or not np.all(np.isfinite(t)):
            continue
        w = np.fromiter(cov.values(), float)
        x.append(float(np.dot(w, t) / w.sum()))
        y.append(vol / seasons)
    n = len(x)
    if n < min_intervals:
        return (float("nan"), float("nan"), n,
                f"the record resolves {n} interval(s) with loss and temperature (need {min_intervals})")
    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan"), float("nan"), n, "constant series"
    r, p = stats.pearsonr(y, x)
    return float(r), float(p), n, ""


def seasons_spanned(t1: float, t2: float, min_fraction: float = 0.25) -> int:
    """Number of thaw seasons counted between two dates (:func:`seasons_covered`); at least 1."""
    return max(len(seasons_covered(t1, t2, min_fraction)), 1)


# --------------------------------------------------------------------------- a run's climate source


@dataclass
class Climate:
    """Summer temperatures for the slumps, or the reason there are none."""

    data: object | None  # xarray.DataArray (deg C on time, lat, lon)
    note: str
    months: tuple[int, ...] = (7, 8)

    def summer_at(self, lat: float, lon: float) -> tuple[pd.Series, str]:
        """Summer mean temperature per year at a point (deg C), or an empty series and why."""
        if self.data is None:
            return pd.Series(dtype=float), self.note
        try:
            s = summer_temperature(self.data, lat, lon, self.months)
        except ClimateError as exc:
            return pd.Series(dtype=float), str(exc)
        if s.isna().all() or not len(s):
            return pd.Series(dtype=float), f"no complete summer (months {self.months}) with valid temperatures"
        return s, ""


def load_climate(path: str | Path | None, months: tuple[int, ...] = (7, 8)) -> Climate:
    """The climate source of a run. A missing or unusable file is logged with its reason and
    gives a Climate whose note explains the empty r in every row (the run goes on)."""
    if not path:
        return Climate(None, "no climate file given (--climate)", months)
    try:
        da = open_temperature(path).load()
        check_series(da, months, path)
    except ClimateError as exc:
        log.error("temperature response skipped: %s", exc)
        return Climate(None, str(exc), months)
    except Exception as exc:  # anything else a malformed file raises: the run still goes on
        msg = f"{path}: unusable climate file ({type(exc).__name__}: {exc})"
        log.error("temperature response skipped: %s", msg)
        return Climate(None, msg, months)
    return Climate(da, "", months)
