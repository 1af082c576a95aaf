"""The products' time base: dates as days since 2000-01-01 (UTC calendar days), and the thaw season.

The ``t1``/``t2`` rasters, the step model's epochs and the truth files of the generated scenes
count days from :data:`EPOCH`. Yearly losses are binned by **thaw season**, 20 June - 22
September (Dai et al. 2025): a date before 20 June belongs to the previous year's season, and a
season counts for an interval when at least a quarter of it lies inside.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

#: day zero of every "days since" value in the products
EPOCH = dt.date(2000, 1, 1)
EPOCH_ISO = EPOCH.isoformat()
#: the thaw season, ((month, day), (month, day)): 20 June - 22 September (Dai et al. 2025)
THAW_SEASON = ((6, 20), (9, 22))


def days_since_epoch(d) -> int:
    """Days since :data:`EPOCH` of a date (``datetime.date``, ``datetime``, ISO string or Timestamp)."""
    if isinstance(d, dt.datetime):
        d = d.date()
    elif not isinstance(d, dt.date):
        d = pd.Timestamp(d).date()
    return (d - EPOCH).days


def date_of(days: float) -> dt.date | None:
    """The calendar date ``days`` after :data:`EPOCH`; None for NaN."""
    if not np.isfinite(days):
        return None
    return EPOCH + dt.timedelta(days=int(days))


def datetimes(days) -> np.ndarray:
    """``datetime64[D]`` of an array of days since :data:`EPOCH`."""
    return np.datetime64(EPOCH_ISO, "D") + np.asarray(days).astype("timedelta64[D]")


def day_of_year(days) -> np.ndarray:
    """Day of year (1-366) of an array of days since :data:`EPOCH`."""
    d = datetimes(days)
    return (d - d.astype("datetime64[Y]")).astype(int) + 1


def thaw_season_of(days) -> np.ndarray:
    """Thaw season (year) of dates given as days since :data:`EPOCH`: dates before the
    season's first day (20 June) count to the previous year's season."""
    d = pd.to_datetime(datetimes(days))
    m0, d0 = THAW_SEASON[0]
    after = (d.month > m0) | ((d.month == m0) & (d.day >= d0))
    return np.where(after, d.year, d.year - 1)


def season_coverage(t1: float, t2: float) -> dict[int, float]:
    """Fraction (0-1) of each thaw season lying between two dates (days since
    :data:`EPOCH`); seasons not touched are left out."""
    a = pd.Timestamp(EPOCH) + pd.Timedelta(days=float(t1))
    b = pd.Timestamp(EPOCH) + pd.Timedelta(days=float(t2))
    (m0, d0), (m1, d1) = THAW_SEASON
    out = {}
    for y in range(a.year, b.year + 1):
        s, e = pd.Timestamp(y, m0, d0), pd.Timestamp(y, m1, d1)
        covered = (min(e, b) - max(s, a)).days
        if covered > 0:
            out[y] = covered / (e - s).days
    return out


def seasons_covered(t1: float, t2: float, min_fraction: float = 0.25) -> list[int]:
    """Thaw seasons of which at least ``min_fraction`` lies between two dates (days since
    :data:`EPOCH`), the rule of Dai et al. (2025) for a season to count."""
    return [y for y, c in season_coverage(t1, t2).items() if c >= min_fraction]
