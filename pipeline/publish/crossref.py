"""Cross-referencing the published inventory against a published one (``rts crossref``): matches
written to ``inventory_matches.parquet`` beside the products."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd

from data_products import schema, writers

from pipeline.publish.inventories import match_inventories, read_inventory


_ID_COLUMNS = ("RTSID", "Slump_ID", "id", "Id", "ID", "fid")


def publish_matches(products: str | Path, reference: str | Path, min_iou: float = 0.1) -> dict:
    """Cross-reference the published inventory against a published one (any format
    :func:`pipeline.publish.inventories.read_inventory` reads) and record the matches in
    ``PRODUCTS/inventory_matches.parquet``, replacing earlier rows for the same reference
    file. Returns the match summary (matched / new / missed, precision, recall, mean IoU)."""
    products, reference = Path(products), Path(reference)
    inv = gpd.read_parquet(products / schema.INVENTORY)
    ref = read_inventory(reference)
    pairs, summary = match_inventories(inv, ref, min_iou=min_iou)
    id_col = next((c for c in _ID_COLUMNS if c in ref.columns), None)
    rows = pd.DataFrame({
        "rts_id": inv.rts_id.to_numpy()[pairs.found_index.to_numpy(int)] if len(pairs) else [],
        "reference": reference.name,
        "reference_row": pairs.reference_index.to_numpy(int) if len(pairs) else [],
        "reference_id": ([None if pd.isna(v) else str(v) for v in ref.loc[pairs.reference_index, id_col]]
                         if id_col and len(pairs) else [None] * len(pairs)),
        "iou": pairs.iou.to_numpy(float) if len(pairs) else [],
    })
    path = products / schema.MATCHES
    if path.exists():
        old = pd.read_parquet(path)
        rows = pd.concat([old[old.reference != reference.name], rows], ignore_index=True)
    writers.write_parquet(rows, path, schema.MATCHES_COLUMNS)
    return summary
