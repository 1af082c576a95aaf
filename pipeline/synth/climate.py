"""Synthetic monthly 2 m air temperature in the ERA5 and CRU TS file layouts.

The field is a latitude-dependent climatology with a seasonal cycle, plus yearly
summer anomalies centred on each sample site (Gaussian in distance, 400 km) and a
weaker smooth background. The July-August anomaly at a site is the one that drives
its temperature-driven slumps, so the pipeline's r(volume, temperature) can be
checked against the truth.

* ERA5 (new CDS layout): ``t2m`` in K on ``valid_time``, ``latitude`` (descending),
  ``longitude`` (0-359.75), 0.25 degrees, packed int16 with scale/offset as CDS does.
* CRU TS: ``tmp`` in degrees C on ``time`` (mid-month), ``lat``, ``lon`` (-179.75-179.75),
  0.5 degrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

SUMMER_ANOMALY_SIGMA_C = 1.2
SITE_RADIUS_KM = 400.0


def site_anomalies(rng: np.random.Generator, years: range) -> dict[int, float]:
    """July-August temperature anomalies (deg C) of one site, one per year."""
    return {int(y): float(rng.normal(0.0, SUMMER_ANOMALY_SIGMA_C)) for y in years}


def _great_circle_km(lat0, lon0, lat, lon):
    p0, p = np.radians(lat0), np.radians(lat)
    dl = np.radians(lon - lon0)
    c = np.sin(p0) * np.sin(p) + np.cos(p0) * np.cos(p) * np.cos(dl)
    return 6371.0 * np.arccos(np.clip(c, -1, 1))


def temperature_field(
    lat: np.ndarray, lon: np.ndarray, times: pd.DatetimeIndex, sites: list[tuple[float, float, dict[int, float]]], seed: int
) -> np.ndarray:
    """Monthly mean 2 m temperature (deg C) on (time, lat, lon)."""
    rng = np.random.default_rng([seed, 991])
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    t_ann = -8.0 - 0.6 * (la - 66.0)
    out = np.empty((len(times), len(lat), len(lon)), np.float32)
    weights = [np.exp(-0.5 * (_great_circle_km(s_lat, s_lon, la, lo) / SITE_RADIUS_KM) ** 2) for s_lat, s_lon, _ in sites]
    # a smooth background anomaly per month (low-order harmonics in longitude)
    for k, t in enumerate(times):
        seasonal = 19.0 * np.cos(2 * np.pi * (t.month - 7.5) / 12.0)
        bg = 0.6 * rng.normal() * np.cos(np.radians(lo) + rng.uniform(0, 6)) + 0.4 * rng.normal()
        field = t_ann + seasonal + bg
        if t.month in (7, 8):
            for w, (_, _, anom) in zip(weights, sites):
                field = field + w * (anom.get(t.year, 0.0) - 0.4 * (bg if np.isscalar(bg) else 0.0))
        elif t.month == 6:
            for w, (_, _, anom) in zip(weights, sites):
                field = field + w * 0.5 * anom.get(t.year, 0.0)
        out[k] = field
    return out


def write_climate(out_dir: Path, sites, years: range, seed: int) -> dict[str, Path]:
    """Write ``era5_t2m_monthly.nc`` and ``cru_ts_tmp.nc``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    times = pd.date_range(f"{years.start}-01-01", f"{years.stop - 1}-12-01", freq="MS")
    lat_min = min(s[0] for s in sites) - 4.0
    lat_max = max(s[0] for s in sites) + 4.0
    lat_min, lat_max = np.floor(lat_min), np.ceil(lat_max)

    # ERA5: 0.25 deg, latitude descending, longitude 0..359.75, K packed int16
    lat_e = np.arange(lat_max, lat_min - 0.125, -0.25)
    lon_e = np.arange(0.0, 360.0, 0.25)
    t_e = temperature_field(lat_e, np.where(lon_e > 180, lon_e - 360, lon_e), times, sites, seed) + 273.15
    era5 = xr.Dataset(
        {"t2m": (("valid_time", "latitude", "longitude"), t_e, {"units": "K", "long_name": "2 metre temperature",
                                                                 "standard_name": "air_temperature", "GRIB_paramId": 167})},
        coords={
            "valid_time": ("valid_time", times.values, {"standard_name": "time", "long_name": "time"}),
            "latitude": ("latitude", lat_e, {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": ("longitude", lon_e, {"units": "degrees_east", "standard_name": "longitude"}),
            "number": 0,
            "expver": ("valid_time", np.array(["0001"] * len(times))),
        },
        attrs={"Conventions": "CF-1.7", "institution": "synthetic sample (ERA5 monthly averaged layout)",
               "history": "rts synth"},
    )
    lo, hi = float(t_e.min()) - 1, float(t_e.max()) + 1
    scale = (hi - lo) / 65000.0
    era5_path = out_dir / "era5_t2m_monthly.nc"
    era5.to_netcdf(era5_path, engine="netcdf4", encoding={
        "t2m": {"dtype": "int16", "scale_factor": scale, "add_offset": (hi + lo) / 2, "_FillValue": -32767,
                "zlib": True, "complevel": 4},
        "valid_time": {"units": "seconds since 1970-01-01", "dtype": "int64"},
    })

    # CRU TS: 0.5 deg, lat ascending, lon -179.75..179.75, degC, mid-month times
    lat_c = np.arange(lat_min + 0.25, lat_max, 0.5)
    lon_c = np.arange(-179.75, 180.0, 0.5)
    t_c = temperature_field(lat_c, lon_c, times, sites, seed) + np.random.default_rng([seed, 7]).normal(
        0, 0.2, (len(times), len(lat_c), len(lon_c))).astype(np.float32)
    cru = xr.Dataset(
        {"tmp": (("time", "lat", "lon"), t_c.astype(np.float32), {"units": "degrees Celsius",
                                                                  "long_name": "near-surface temperature"})},
        coords={"time": times + pd.Timedelta(days=15), "lat": lat_c, "lon": lon_c},
        attrs={"title": "synthetic sample (CRU TS layout)"},
    )
    cru_path = out_dir / "cru_ts_tmp.nc"
    cru.to_netcdf(cru_path, engine="netcdf4", encoding={"tmp": {"zlib": True, "complevel": 4, "_FillValue": 9.96921e36},
                                                         "time": {"units": "days since 1900-1-1"}})
    return {"era5": era5_path, "cru": cru_path}
