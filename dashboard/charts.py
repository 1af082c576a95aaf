"""Charts shared by the dashboard's pages."""

from __future__ import annotations

import plotly.graph_objects as go


def volume_against_temperature(year, volume, sigma, temperature, *, volume_label: str, volume_axis: str,
                               temperature_label: str, temperature_axis: str = "temperature (°C)",
                               height: int = 360) -> go.Figure:
    """Yearly volume bars with their 1-sigma error bars against a summer-temperature line on a
    second axis (drawn only when some temperature is known)."""
    fig = go.Figure()
    fig.add_trace(go.Bar(x=year, y=volume, name=volume_label, marker_color="#8c510a",
                         error_y=dict(type="data", array=sigma, visible=True)))
    if temperature.notna().any():
        fig.add_trace(go.Scatter(x=year, y=temperature, name=temperature_label, yaxis="y2", mode="lines+markers",
                                 line=dict(color="#d6604d")))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), legend=dict(orientation="h", y=1.12),
                      xaxis=dict(title="thaw season", dtick=1), yaxis=dict(title=volume_axis),
                      yaxis2=dict(title=temperature_axis, overlaying="y", side="right", showgrid=False))
    return fig
