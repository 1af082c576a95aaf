"""Summary page: totals per region, Arctic-wide yearly volume against temperature, the share of
slumps with r at least the products' temperature_driven_r, carbon."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import state
from dashboard.charts import volume_against_temperature

cat = state.require_catalog()
f = state.sidebar_filters(cat)

st.title("Summary")
st.caption(f"Selection: {state.describe(f)}")
tot = cat.totals(f)
if tot["n"] == 0:
    st.warning("No slump matches these filters: nothing to summarise. Widen them in the sidebar.")
    st.stop()

c = st.columns(5)
c[0].metric("Slumps", f"{tot['n']:,}")
c[1].metric("Volume lost (10⁶ m³)", f"{tot['volume_m3'] / 1e6:,.2f}",
            help=f"± {tot['volume_sigma_m3'] / 1e6:,.3f} × 10⁶ m³ (1σ, slumps' errors taken as independent)")
c[2].metric("Area (km²)", f"{tot['area_m2'] / 1e6:,.2f}")
c[3].metric("Carbon (10⁶ kg C/yr)", f"{tot['carbon_kg_yr'] / 1e6:,.2f}")
c[4].metric(f"Share with r ≥ {tot['r_threshold']:g}", f"{100 * tot['share_r_ge']:.1f} %",
            help=f"{tot['n_r_ge']:,} of {tot['n']:,} slumps; {tot['n_with_r']:,} have an r "
                 f"({100 * tot['share_r_ge_of_computable']:.1f} % of those). The threshold is the one the "
                 "products were made with (quantify.temperature_driven_r)." if tot["n_with_r"] else None)

st.subheader("Arctic-wide yearly volume against summer temperature")
y = cat.yearly(f)
if y.empty:
    st.info("No yearly volumes (rts_timeseries.parquet is absent or empty).")
else:
    fig = volume_against_temperature(y.year, y.volume_m3 / 1e6, y.volume_sigma_m3 / 1e6, y.summer_t2m_c,
                                     volume_label="volume lost (10⁶ m³)", volume_axis="10⁶ m³",
                                     temperature_label="mean summer 2 m temperature at the slumps (°C)",
                                     temperature_axis="°C", height=380)
    st.plotly_chart(fig, width="stretch", key="arctic_yearly")
    s = cat.volume_temperature_slope(f)
    if np.isfinite(s["slope_m3_per_c"]):
        st.caption(f"Least-squares slope of yearly volume on temperature: {s['slope_m3_per_c'] / 1e6:,.2f} ± "
                   f"{s['slope_sigma'] / 1e6:,.2f} × 10⁶ m³ per °C (r = {s['r']:.2f}, {s['n']} seasons).")

st.subheader("Per region")
reg = cat.region_totals(f)
fig = go.Figure(go.Bar(x=reg.region, y=reg.volume_m3 / 1e6, marker_color="#35978f",
                       error_y=dict(type="data", array=reg.volume_sigma_m3 / 1e6, visible=True)))
fig.update_layout(height=320, margin=dict(l=0, r=0, t=10, b=0), yaxis=dict(title="volume lost (10⁶ m³)"))
st.plotly_chart(fig, width="stretch", key="regions")
show = reg.assign(area_km2=reg.area_m2 / 1e6, volume_1e6_m3=reg.volume_m3 / 1e6, sigma_1e6_m3=reg.volume_sigma_m3 / 1e6,
                  carbon_t_yr=reg.carbon_kg_yr / 1e3, share_r_ge_pct=100 * reg.share_r_ge)
st.dataframe(show[["region", "slumps", "area_km2", "volume_1e6_m3", "sigma_1e6_m3", "volume_rate_m3_yr", "carbon_t_yr",
                   "share_r_ge_pct"]].round(3), hide_index=True, width="stretch", key="region_table")
counts = cat.tile_status_counts()
if counts:
    st.caption("Work cells: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
