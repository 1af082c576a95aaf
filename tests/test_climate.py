"""Climate readers (ERA5 new/old layouts, hourly, CRU TS) and the temperature response."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipeline.quantify.climate import (ClimateError, interval_temperature_response, open_temperature, season_coverage,
                              seasons_spanned, summer_temperature, thaw_season_of)
from pipeline.quantify.volume import interval_losses, yearly_loss, yearly_volumes


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


def _day(s: str) -> int:
    return (pd.Timestamp(s) - pd.Timestamp("2000-01-01")).days


def test_interval_losses_follow_the_epochs_and_share_a_gap_by_thaw_season():
    # epochs mid-summer 2015, 2016, 2016 + 1 day, 2019; one pixel changed 2015-2016, one
    # between 2016 and 2019 (three seasons' worth), one across the whole record
    ep = [_day(x) for x in ("2015-08-06", "2016-08-06", "2016-08-07", "2019-08-06")]
    dh = np.array([[-2.0, -3.0, -4.0]])
    t1 = np.array([[ep[0], ep[2], ep[0]]])
    t2 = np.array([[ep[1], ep[3], ep[3]]])
    iv = interval_losses(dh, t1, t2, np.ones(dh.shape, bool), 2.0, ep, min_seasons=0.5)
    # the one-day interval is merged forward: two intervals, one season and three seasons
    assert len(iv) == 2 and iv.start.iloc[0] == ep[0] and iv.end.iloc[-1] == ep[3]
    assert iv.seasons.iloc[0] == pytest.approx(1.0, abs=0.02) and iv.seasons.iloc[1] == pytest.approx(3.0, abs=0.02)
    # the whole-record pixel's 16 m3 goes where the others show the ground falling, rate
    # for rate (Turnbull's self-consistency): with x the first interval's total, x = 8 + 16 x / 36,
    # x = 14.4 m3; the volumes add up to the total
    assert iv.volume_m3.iloc[0] == pytest.approx(14.4, rel=0.01)
    assert iv.volume_m3.sum() == pytest.approx(36.0)
    assert set(iv.coverage.iloc[1]) == {2016, 2017, 2018, 2019}
    # alone, with nothing to tell the intervals apart, it is shared by thaw season, 1:3
    alone = interval_losses(dh[:, 2:], t1[:, 2:], t2[:, 2:], np.ones((1, 1), bool), 2.0, ep, min_seasons=0.5)
    assert alone.volume_m3.iloc[0] == pytest.approx(16 / 4, rel=0.02)


@pytest.mark.parametrize("n_clouded", [10, 90, 99])
def test_a_gap_in_some_pixels_record_does_not_date_their_loss_before_the_slump_began(n_clouded):
    """A slump that began in summer 2012, seen every summer 2010-2015 (epochs 1 Sep): 90
    pixels dropped 2 m in 2012, 2 m in 2013 and 2 m in 2014 each; 10, 90 or 99 of its 2012
    pixels were under cloud in 2011, so their record brackets the drop 2010-2012. Their loss
    belongs to 2012, where every pixel seen that year shows the ground falling (however few
    they are), not to the 2011 they could not see; the yearly series and the intervals both
    say so."""
    ep = [_day(f"{y}-09-01") for y in range(2010, 2016)]
    n = 100
    dh = np.full((1, 3 * n), -2.0)
    t1 = np.array([[ep[1]] * n + [ep[2]] * n + [ep[3]] * n])
    t2 = np.array([[ep[2]] * n + [ep[3]] * n + [ep[4]] * n])
    t1[0, :n_clouded] = ep[0]  # bracketed 2010-2012 by the cloud of 2011
    mask = np.ones(dh.shape, bool)
    y = yearly_loss(dh, t1, t2, mask, 2.0)
    # 2011 has no row (a season the record shows inactive), and no year has an empty area
    assert 2011 not in y.index and (y.area_m2 > 0).all()
    assert y.volume_m3[2012] == pytest.approx(800.0, rel=1e-3) and y.volume_m3.sum() == pytest.approx(3 * n * 8.0)
    iv = interval_losses(dh, t1, t2, mask, 2.0, ep, min_seasons=0.5)
    assert iv.volume_m3.iloc[0] == pytest.approx(0.0, abs=1e-3) and iv.volume_m3.iloc[1] == pytest.approx(800.0, rel=1e-3)
    assert iv.volume_m3.sum() == pytest.approx(3 * n * 8.0)


def test_temperature_response_over_intervals_finds_a_driven_loss_and_needs_enough_intervals():
    rng = np.random.default_rng(4)
    summer = pd.Series(rng.normal(8, 1.2, 14), index=range(2008, 2022))
    ep = [_day(f"{y}-09-25") for y in range(2007, 2021)]
    # epochs after each thaw season: interval k holds season 2008 + k, whose loss rate
    # follows its summer temperature plus noise
    years = list(range(2008, 2021))
    rate = [200 + 80 * (summer[y] - 8) + rng.normal(0, 10) for y in years]
    cov = [season_coverage(ep[k], ep[k + 1]) for k in range(len(years))]
    iv = pd.DataFrame({"seasons": [sum(c.values()) for c in cov], "coverage": cov,
                       "volume_m3": [r * sum(c.values()) for r, c in zip(rate, cov)]})
    r, p, n, why = interval_temperature_response(iv, summer, 6)
    assert n == len(years) and r > 0.9 and p < 0.001 and why == ""
    # an interval whose summers have no temperature is left out; too few give no r
    r, p, n, why = interval_temperature_response(iv.iloc[:5], summer, 6)
    assert np.isnan(r) and n == 5 and "need 6" in why
    r, p, n, why = interval_temperature_response(iv, summer.drop([2010]), 6)
    assert n == len(years) - 1


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


def _t2m_file(tmp_path, data_k, units, name="t2m.nc", calendar=None, curvilinear=False):
    times = pd.date_range("2015-01-01", periods=24, freq="MS")
    lat, lon = np.array([68.0, 68.25]), np.array([-135.0, -134.75])
    vals = np.broadcast_to(np.asarray(data_k, float)[:, None, None], (24, 2, 2)).astype(np.float32)
    attrs = {} if units is None else {"units": units}
    if curvilinear:
        la2, lo2 = np.meshgrid(lat, lon, indexing="ij")
        ds = xr.Dataset({"t2m": (("time", "y", "x"), vals, attrs)},
                        coords={"time": times, "latitude": (("y", "x"), la2), "longitude": (("y", "x"), lo2)})
    else:
        ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), vals, attrs)},
                        coords={"time": times, "latitude": lat, "longitude": lon})
    enc = {}
    if calendar:
        enc = {"time": {"calendar": calendar, "units": "days since 2000-01-01"}}
    p = tmp_path / name
    ds.to_netcdf(p, encoding=enc)
    return p


def _seasonal_k(n=24):
    m = np.arange(n) % 12 + 1
    return 260.0 + 15 * np.cos(2 * np.pi * (m - 7.5) / 12)


@pytest.mark.parametrize("units,scale", [("K", lambda k: k), ("deg K", lambda k: k),
                                         ("degC", lambda k: k - 273.15), ("degrees Celsius", lambda k: k - 273.15),
                                         ("degF", lambda k: (k - 273.15) * 9 / 5 + 32)])
def test_temperature_units_are_read_from_the_file_in_their_usual_spellings(tmp_path, units, scale):
    k = _seasonal_k()
    da = open_temperature(_t2m_file(tmp_path, scale(k), units))
    assert float(da.isel(lat=0, lon=0).max()) == pytest.approx(k.max() - 273.15, abs=1e-3)


@pytest.mark.parametrize("units,match", [(None, "no units attribute"), ("furlongs", "units 'furlongs'"),
                                         ("degC", "outside the plausible")])
def test_missing_unknown_or_implausible_units_are_an_error_naming_the_file(tmp_path, units, match):
    p = _t2m_file(tmp_path, _seasonal_k(), units)  # Kelvin values: labelled degC they are implausible
    with pytest.raises(ClimateError, match=match) as err:
        open_temperature(p)
    assert str(p) in str(err.value)


def test_a_noleap_calendar_gives_the_same_summers(tmp_path):
    k = _seasonal_k()
    std = summer_temperature(open_temperature(_t2m_file(tmp_path, k, "K", "std.nc")), 68.0, -135.0)
    nol = summer_temperature(open_temperature(_t2m_file(tmp_path, k, "K", "noleap.nc", calendar="noleap")), 68.0, -135.0)
    assert list(std.index) == list(nol.index) == [2015, 2016]
    assert np.allclose(std.values, nol.values)


def test_a_curvilinear_grid_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(ClimateError, match="curvilinear.*regrid"):
        open_temperature(_t2m_file(tmp_path, _seasonal_k(), "K", curvilinear=True))


def test_an_unusable_climate_file_never_stops_the_run(tmp_path):
    from pipeline.quantify.climate import load_climate

    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"\x89HDF\r\n garbage")
    clim = load_climate(bad)
    s, note = clim.summer_at(68.0, -135.0)
    assert s.empty and str(bad) in note


SHARED_ERA5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "era5"


@pytest.mark.skipif(not (SHARED_ERA5 / "test_single.nc").exists(), reason="../shared/data/era5 not present")
def test_a_real_cfgrib_netcdf_with_valid_time_and_time_reads():
    # cfgrib keeps the reference 'time' beside 'valid_time' and one step as a scalar coordinate
    da = open_temperature(SHARED_ERA5 / "test_single.nc")
    assert da.dims == ("time", "lat", "lon") and da.sizes["time"] == 1
    assert -60 < float(da.min()) < float(da.max()) < 45


def _grib_series(path: Path, times: list[pd.Timestamp], *, by_step: bool = False, kelvin_of=None) -> Path:
    """A GRIB file of 2 m temperature built from the real cfgrib test message (its grid and
    keys), one message per time: each with its own dataDate (as CDS monthly means), or one
    reference date and growing forecast steps (``by_step``, valid_time along 'step')."""
    import eccodes

    with open(SHARED_ERA5 / "test_single.grib", "rb") as fh:
        tmpl = eccodes.codes_grib_new_from_file(fh)
    n = eccodes.codes_get(tmpl, "Ni") * eccodes.codes_get(tmpl, "Nj")
    with open(path, "wb") as out:
        for k, t in enumerate(times):
            h = eccodes.codes_clone(tmpl)
            if by_step:
                eccodes.codes_set(h, "dataDate", int(times[0].strftime("%Y%m%d")))
                eccodes.codes_set(h, "dataTime", 0)
                eccodes.codes_set(h, "stepType", "instant")
                eccodes.codes_set(h, "step", int((t - times[0]) / pd.Timedelta(hours=1)))
            else:
                eccodes.codes_set(h, "dataDate", int(t.strftime("%Y%m%d")))
                eccodes.codes_set(h, "dataTime", 0)
            eccodes.codes_set_values(h, np.full(n, kelvin_of(t) if kelvin_of else 273.15 + k, dtype=float))
            eccodes.codes_write(h, out)
            eccodes.codes_release(h)
    eccodes.codes_release(tmpl)
    return path


def _summer_k(t: pd.Timestamp) -> float:
    return 273.15 + (5.0 + 0.5 * (t.year - 2015) if t.month in (7, 8) else -10.0)


needs_grib = pytest.mark.skipif(not (SHARED_ERA5 / "test_single.grib").exists(), reason="../shared/data/era5 not present")


@needs_grib
def test_a_real_cfgrib_grib_field_reads_and_is_not_taken_for_a_series(tmp_path):
    from pipeline.quantify.climate import load_climate

    g = open_temperature(SHARED_ERA5 / "test_single.grib")
    n = open_temperature(SHARED_ERA5 / "test_single.nc")  # the same field as cfgrib wrote it to NetCDF
    assert g.dims == ("time", "lat", "lon") and g.sizes["time"] == 1
    np.testing.assert_allclose(g.values, n.values, atol=1e-4)
    clim = load_climate(SHARED_ERA5 / "test_single.grib")
    assert clim.data is None and "a single field (2017-04-27), not a series" in clim.note
    assert "months 7,8 of at least 2 years" in clim.note


@needs_grib
def test_a_grib_without_2m_temperature_says_what_it_holds():
    with pytest.raises(ClimateError, match=r"t_time_series.grib: no 2 m temperature .*it holds t \(isobaricInhPa\)"):
        open_temperature(SHARED_ERA5 / "t_time_series.grib")


@needs_grib
@pytest.mark.parametrize("by_step", [False, True])
def test_grib_monthly_series_give_the_summer_means(tmp_path, by_step):
    times = list(pd.date_range("2015-01-01", "2018-12-01", freq="MS"))
    p = _grib_series(tmp_path / "era5_2t.grib", times, by_step=by_step, kelvin_of=_summer_k)
    da = open_temperature(p)
    assert da.sizes["time"] == len(times)
    s = summer_temperature(da, 60.0, -120.0)  # a node of the template's 30 deg grid
    np.testing.assert_allclose(s.values, [5.0, 5.5, 6.0, 6.5], atol=1e-3)
    assert list(s.index) == [2015, 2016, 2017, 2018]


@needs_grib
def test_one_file_per_year_in_a_folder_or_a_glob_make_one_series(tmp_path):
    folder = tmp_path / "era5"
    folder.mkdir()
    for y in (2015, 2016, 2017):
        _grib_series(folder / f"era5_2t_{y}.grib", list(pd.date_range(f"{y}-01-01", f"{y}-12-01", freq="MS")),
                     kelvin_of=_summer_k)
    # a NetCDF year beside the GRIB ones, as when a request was redone in another format
    t18 = pd.date_range("2018-01-01", periods=12, freq="MS")
    lat, lon = np.arange(90.0, -91.0, -30.0), np.arange(0.0, 360.0, 30.0)  # the GRIB messages' grid
    k = np.array([_summer_k(t) for t in t18], np.float32)[:, None, None] + np.zeros((1, lat.size, lon.size), np.float32)
    ds = xr.Dataset({"t2m": (("valid_time", "latitude", "longitude"), k, {"units": "K"})},
                    coords={"valid_time": t18, "latitude": lat, "longitude": lon,
                            "expver": ("valid_time", ["0001"] * 12), "number": 0})
    ds.to_netcdf(folder / "era5_2t_2018.nc")
    for src in (folder, str(folder / "era5_2t_*")):
        s = summer_temperature(open_temperature(src), 60.0, -120.0)
        np.testing.assert_allclose(s.values, [5.0, 5.5, 6.0, 6.5], atol=1e-3)
    with pytest.raises(ClimateError, match="no file matches"):
        open_temperature(str(folder / "cru_*.nc"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClimateError, match="empty: no NetCDF or GRIB file in the folder"):
        open_temperature(tmp_path / "empty")


def test_an_expver_dimension_takes_each_month_from_the_version_holding_it(tmp_path):
    # the old CDS NetCDF of a request spanning ERA5 and ERA5T: 'expver' (1, 5) is a dimension,
    # each month is NaN in one of them
    times = pd.date_range("2019-01-01", periods=36, freq="MS")
    vals = np.array([_summer_k(t) for t in times], np.float32)
    data = np.full((len(times), 2, 2, 2), np.nan, np.float32)
    data[:30, 0] = vals[:30, None, None]
    data[30:, 1] = vals[30:, None, None]
    ds = xr.Dataset({"t2m": (("time", "expver", "latitude", "longitude"), data, {"units": "K"})},
                    coords={"time": times, "expver": [1, 5], "latitude": [71.0, 69.0], "longitude": [229.0, 231.0]})
    ds.to_netcdf(tmp_path / "era5_expver.nc")
    s = summer_temperature(open_temperature(tmp_path / "era5_expver.nc"), 70.0, -130.0)
    np.testing.assert_allclose(s.values, [7.0, 7.5, 8.0], atol=1e-3)
