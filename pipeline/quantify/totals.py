"""Regional and Arctic-wide totals: yearly losses with their σ, and the volume-temperature slope
(ordinary least squares of the yearly totals on the yearly mean summer temperature)."""

from __future__ import annotations


import numpy as np
import pandas as pd
from scipy import stats




def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS slope of y on x and its standard error (NaN with fewer than 3 points)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return float("nan"), float("nan")
    fit = stats.linregress(x[ok], y[ok])
    return float(fit.slope), float(fit.stderr)


def regional_totals(inventory: pd.DataFrame, timeseries: pd.DataFrame, temperature_driven_r: float = 0.5
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Yearly totals per region and Arctic-wide, and the volume-temperature slope.

    Returns (yearly, summary):

    * yearly: region ('Arctic' for all), year, volume_m3, volume_sigma_m3 (errors of
      different slumps taken as independent), n_slumps, summer_t2m_c (mean over the
      region's slumps);
    * summary: per region, n_slumps, area_m2, volume_m3, carbon_kg_yr, share of slumps with
      r >= ``temperature_driven_r`` (of those with an r), and slope_m3_per_degc with its
      standard error from the yearly totals against the yearly mean summer temperature.
    """
    ts = timeseries.merge(inventory[["rts_id", "region"]], on="rts_id", how="inner")
    frames = [ts, ts.assign(region="Arctic")]
    ts = pd.concat(frames, ignore_index=True)
    yearly = (ts.groupby(["region", "year"])
              .agg(volume_m3=("volume_m3", "sum"), volume_var=("volume_sigma_m3", lambda s: float((s**2).sum())),
                   n_slumps=("rts_id", "nunique"), summer_t2m_c=("summer_t2m_c", "mean"))
              .reset_index())
    yearly["volume_sigma_m3"] = np.sqrt(yearly.pop("volume_var"))
    inv = pd.concat([inventory, inventory.assign(region="Arctic")], ignore_index=True)
    rows = []
    for region, g in inv.groupby("region"):
        y = yearly[yearly.region == region]
        slope, se = _slope(y.summer_t2m_c.to_numpy(float), y.volume_m3.to_numpy(float))
        r = pd.to_numeric(g.r_temperature, errors="coerce")
        rows.append({"region": region, "n_slumps": len(g), "area_m2": float(g.area_m2.sum()),
                     "volume_m3": float(g.volume_m3.sum()),
                     "volume_sigma_m3": float(np.sqrt((g.volume_sigma_m3**2).sum())),
                     "carbon_kg_yr": float(g.carbon_kg_yr.sum(min_count=1)),  # NaN when none is known
                     "n_without_carbon": int(g.carbon_kg_yr.isna().sum()),
                     "n_with_r": int(r.notna().sum()),
                     "share_r_ge": float((r >= temperature_driven_r).sum() / r.notna().sum()) if r.notna().any()
                     else float("nan"),
                     "slope_m3_per_degc": slope, "slope_se_m3_per_degc": se})
    summary = pd.DataFrame(rows, columns=["region", "n_slumps", "area_m2", "volume_m3", "volume_sigma_m3",
                                          "carbon_kg_yr", "n_without_carbon", "n_with_r", "share_r_ge",
                                          "slope_m3_per_degc", "slope_se_m3_per_degc"])
    return yearly.sort_values(["region", "year"]).reset_index(drop=True), summary
