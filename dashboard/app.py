"""Dashboard: browse the per-cell products of a run (``rts dashboard --products DIR``).

Pages: an overview of processed cells, and a cell viewer with its dh / t2 / curvature
rasters and the coregistration table. Cell ids are validated against the work grid and
only files inside the products folder are read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import rasterio
import streamlit as st

from data_products.grid import TileIdError, parse_cell_id


def products_dir() -> Path:
    ap = argparse.ArgumentParser()
    ap.add_argument("--products", default="products")
    args, _ = ap.parse_known_args(sys.argv[1:])
    return Path(args.products).resolve()


def cell_folder(products: Path, cell_id: str) -> Path:
    """The folder of a validated cell id; never outside ``products``."""
    cell = parse_cell_id(cell_id)
    folder = (products / "tiles" / cell.id).resolve()
    if products not in folder.parents:
        raise TileIdError(f"{cell_id!r} does not name a folder inside the products")
    return folder


@st.cache_data
def load_cells(products: str) -> pd.DataFrame:
    rows = []
    for meta in sorted(Path(products, "tiles").glob("*/cell.json")):
        m = json.loads(meta.read_text())
        used = sum(r["used"] for r in m["coregistration"])
        rows.append({"cell_id": m["cell_id"], "status": m["status"], "strips": len(m["strips"]), "used": used,
                     "first": min(m["dates"]), "last": max(m["dates"]),
                     "seconds": round(sum(m["timings_s"].values()), 1)})
    return pd.DataFrame(rows)


def main() -> None:
    st.set_page_config(page_title="Thaw-slump volumetrics", layout="wide")
    products = products_dir()
    st.title("Retrogressive thaw slumps: DEM change products")
    if not products.is_dir():
        st.error(f"Products folder {products} does not exist. Run `rts run` first.")
        return
    cells = load_cells(str(products))
    if cells.empty:
        st.warning(f"No processed cells in {products}/tiles yet.")
        return
    st.caption(f"{len(cells)} cells in {products}")
    st.dataframe(cells, hide_index=True, use_container_width=True)
    choice = st.query_params.get("cell", cells.cell_id.iloc[0])
    cell_id = st.selectbox("Cell", cells.cell_id.tolist(),
                           index=cells.cell_id.tolist().index(choice) if choice in cells.cell_id.tolist() else 0)
    st.query_params["cell"] = cell_id
    try:
        folder = cell_folder(products, cell_id)
    except TileIdError as exc:
        st.error(str(exc))
        return
    cols = st.columns(3)
    for col, (name, label, rng) in zip(cols, [("dh", "dh (m)", (-6, 2)), ("t2", "t2 (days since 2000-01-01)", None),
                                               ("curvature", "total curvature (m⁻²)", None)]):
        with rasterio.open(folder / f"{name}.tif") as src:
            a = src.read(1, out_shape=(src.height // 4, src.width // 4)).astype(float)
            if src.nodata is not None and not np.isnan(src.nodata):
                a[a == src.nodata] = np.nan
        if name == "curvature":
            a = np.log10(a + 1e-8)
            label = "log10 total curvature"
        fig = px.imshow(a, color_continuous_scale="RdBu" if name == "dh" else "Viridis",
                        zmin=rng[0] if rng else None, zmax=rng[1] if rng else None, title=label)
        fig.update_layout(margin=dict(l=0, r=0, t=30, b=0), height=380)
        col.plotly_chart(fig, use_container_width=True)
    meta = json.loads((folder / "cell.json").read_text())
    st.subheader("Coregistration (displacement of each strip relative to the mean, m)")
    st.dataframe(pd.DataFrame(meta["coregistration"]), hide_index=True, use_container_width=True)


main()
