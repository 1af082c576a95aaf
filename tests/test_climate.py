"""Climate readers (ERA5 new/old layouts, hourly, CRU TS) and the temperature response."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipeline.climate import (ClimateError, open_temperature, seasons_spanned, summer_temperature,
                              temperature_response, thaw_season_of)
from pipeline.volume import yearly_volumes


def _era5(tmp_path, time_name="valid_time", freq="MS", periods=48):
    times = pd.date_range("2015-01-01", periods=periods, freq=freq)
    lat = np.arange(72.0, 66.0, -0.25)
    lon = np.arange(0.0, 360.0, 0.25)
    base = 260.0 + 15 * np.cos(2 * np.pi * (times.month.values - 7.5) / 12)
    data = np.broadcast_to(base[:, None, None], (len(times), lat.size, lon.size)).astype(np.float32)
    ds = xr.Dataset({"t2m": ((time_name, "latitude", "longitude"), data, {"units": "K"})},
                    coords={time_name: times, "latitude": lat, "longitude": lon})
    p = tmp_path / f"era5_{time_name}_{freq}.nc"
    ds.to_netcdf(p)
    return p


@pytest.mark.parametrize("time_name", ["valid_time", "time"])
def test_era5_layouts_read_as_celsius_on_ascending_lat_and_signed_lon(tmp_path, time_name):
    da = open_temperature(_era5(tmp_path, time_name))
    assert da.dims == ("time", "lat", "lon")
    assert float(da.lon.min()) < 0 < float(da.lon.max()) < 180 and da.lat.values[0] < da.lat.values[-1]
    ja = summer_temperature(da, 67.25, -135.2)
    assert list(ja.index) == [2015, 2016, 2017, 2018]
    assert np.allclose(ja, 260.0 + 15 * np.cos(2 * np.pi * np.array([-0.5, 0.5]) / 12).mean() - 273.15, atol=1e-3)


def test_hourly_era5_is_averaged_to_months(tmp_path):
    da = open_temperature(_era5(tmp_path, "valid_time", freq="6h", periods=4 * 365))
    assert da.sizes["time"] == 12


def test_cru_ts_reads_in_celsius(sample):
    out, _ = sample
    da = open_temperature(out / "climate" / "cru_ts_tmp.nc")
    era = open_temperature(out / "climate" / "era5_t2m_monthly.nc")
    a, b = summer_temperature(da, 67.25, -135.2), summer_temperature(era, 67.25, -135.2)
    years = a.index.intersection(b.index)
    assert np.corrcoef(a[years], b[years])[0, 1] > 0.9 and abs((a[years] - b[years]).mean()) < 1.0


def test_a_file_without_temperature_names_the_file_and_what_it_has(tmp_path):
    p = tmp_path / "precip.nc"
    xr.Dataset({"tp": (("time",), np.zeros(3))}, coords={"time": pd.date_range("2020", periods=3)}).to_netcdf(p)
    with pytest.raises(ClimateError, match="precip.nc: no temperature variable.*found tp"):
        open_temperature(p)
    with pytest.raises(ClimateError, match="not found"):
        open_temperature(tmp_path / "missing.nc")


def test_a_slump_outside_the_grid_is_a_clear_error(tmp_path):
    da = open_temperature(_era5(tmp_path))
    with pytest.raises(ClimateError, match="outside the climate grid"):
        summer_temperature(da, 80.5, 10.0)


def test_response_needs_three_years_and_skips_nan_temperatures():
    v = pd.Series({2015: 100.0, 2016: 200.0, 2017: 300.0, 2018: 250.0})
    t = pd.Series({2015: 5.0, 2016: 6.0, 2017: np.nan, 2018: 6.5})
    r, p, n, why = temperature_response(v, t)
    assert n == 3 and r > 0.9 and why == ""
    r, p, n, why = temperature_response(v.iloc[:2], t)
    assert np.isnan(r) and "need 3" in why


def test_thaw_seasons_and_yearly_binning():
    d = lambda s: (pd.Timestamp(s) - pd.Timestamp("2000-01-01")).days  # noqa: E731
    assert list(thaw_season_of(np.array([d("2016-06-19"), d("2016-06-20"), d("2016-09-30")]))) == [2015, 2016, 2016]
    assert seasons_spanned(d("2015-08-01"), d("2016-08-01")) == 2  # 52 + 42 days covered
    assert seasons_spanned(d("2015-09-10"), d("2016-07-01")) == 1
    dh = np.array([[-2.0, -2.0], [-4.0, 0.0]])
    t1 = np.array([[d("2015-07-01")] * 2, [d("2016-07-01"), d("2016-07-01")]])
    t2 = np.array([[d("2015-08-15")] * 2, [d("2016-08-01"), d("2016-08-01")]])
    y = yearly_volumes(dh, t1, t2, np.ones(dh.shape, bool), 2.0)
    assert y.to_dict() == {2015: 16.0, 2016: 16.0}
