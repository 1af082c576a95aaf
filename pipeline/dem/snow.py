"""When the ground is snow-free: the day-of-year window an acquisition is trusted in.

Snow sits on the ground in ArcticDEM strips: spring drifts metres deep in April and May,
and in the High Arctic late-lying snow banks in the lee of valley sides well into July,
recurring every year at the same places, so the early acquisitions of every summer sit
higher than the late ones. No bitmask flags it. The snow-free season depends on
latitude: snow melts out around 1 June at 65 deg N and about five weeks later at 80 deg N,
and the first lasting snow comes in early October at 65 deg N and early September at 80 deg N
(a linear fit through the melt-out and onset dates of Arctic tundra stations; e.g.
Bokhorst et al. 2016, Ambio 45, for the climatology).

An acquisition is *trusted* when it falls inside
``[melt_out + late_snow_lag_days, snow_onset]``. Outside it, the series itself decides,
pixel by pixel (:mod:`pipeline.dem.change`): snow only raises the surface, so where the
acquisition lies no higher than the snow-free ground on either side of it
(``ChangeConfig.snow_rise_tolerance_m``) it is ground and trusted; where it lies above, it
is kept at low weight (``ChangeConfig.sigma_snow_season_m``), never counts as support for a
step, and is rejected by the consensus test when it sits above the trusted acquisitions
both before and after it.
"""

from __future__ import annotations

import numpy as np

from data_products import timebase

from pipeline.config import ChangeConfig



def snow_free_window(lat_deg: float, cfg: ChangeConfig) -> tuple[float, float]:
    """(first, last) day of year on which the ground at ``lat_deg`` is trusted to be
    snow-free, lee-slope snow banks included."""
    lat = float(np.clip(lat_deg, 55.0, 85.0))
    melt = cfg.melt_out_doy_at_60n + cfg.melt_out_days_per_deg * (lat - 60.0)
    onset = cfg.snow_onset_doy_at_60n - cfg.snow_onset_days_per_deg * (lat - 60.0)
    return melt + cfg.late_snow_lag_days, onset


def snow_free_days_between(t_a, t_b, lat_deg: float, cfg: ChangeConfig) -> np.ndarray:
    """Days of the latitude's snow-free window (:func:`snow_free_window`) between two dates
    (days since 2000-01-01; scalars or arrays that broadcast): the thaw a drop between two
    acquisitions had to happen in. A day counts where :func:`trusted_acquisitions` would trust an
    acquisition taken on it, so the window's first day is one day after the day before it; two
    acquisitions of one spring, or of one winter, bound none. Symmetric in its dates. Day of year
    is the calendar's, so in leap years the window falls one calendar day earlier, as it does for
    :func:`trusted_acquisitions`."""
    first, last = snow_free_window(lat_deg, cfg)
    first_day, last_day = np.ceil(first), np.floor(last)
    length = max(last_day - first_day + 1.0, 0.0)

    def cumulative(t):
        t = np.asarray(t, dtype=np.int64)
        year = timebase.datetimes(t).astype("datetime64[Y]").astype(int)  # years since 1970
        return year * length + np.clip(timebase.day_of_year(t) - first_day + 1.0, 0.0, length)

    return np.abs(cumulative(t_b) - cumulative(t_a))


def trusted_acquisitions(dates_days: np.ndarray, lat_deg: float, cfg: ChangeConfig) -> np.ndarray:
    """True for acquisitions (days since 2000-01-01) inside the snow-free window."""
    first, last = snow_free_window(lat_deg, cfg)
    doy = timebase.day_of_year(np.asarray(dates_days, dtype=np.int64))
    return (doy >= first) & (doy <= last)


def shoulder_acquisitions(dates_days: np.ndarray, lat_deg: float, cfg: ChangeConfig) -> np.ndarray:
    """True for acquisitions in the first ``cfg.snow_shoulder_days`` of the snow-free window:
    trusted, but late-lying banks may still lie in the lee of slopes, so the change model
    checks them against the later acquisitions of the summers around them."""
    first, last = snow_free_window(lat_deg, cfg)
    doy = timebase.day_of_year(np.asarray(dates_days, dtype=np.int64))
    return (doy >= first) & (doy < first + cfg.snow_shoulder_days) & (doy <= last)


def untrusted_tail(dates_days: np.ndarray, lat_deg: float, cfg: ChangeConfig) -> np.ndarray:
    """The newest acquisitions (days since 2000-01-01, ascending input) after the last trusted
    one. Outside the snow-free window, they count as ground only where they lie no higher than
    the snow-free surface before them: a drop after the last trusted acquisition is measured,
    a rise (debris, or snow) is not (a High-Arctic record ending with an early-July strip).
    Empty when the newest acquisition is trusted."""
    d = np.asarray(dates_days, dtype=np.int64)
    ok = trusted_acquisitions(d, lat_deg, cfg)
    if not d.size or ok[-1]:
        return d[:0]
    last = np.flatnonzero(ok)
    return d[last[-1] + 1:] if last.size else d
