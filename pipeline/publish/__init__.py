"""Publishing: per-cell slump parts assembled into the products (inventory, time series,
tiles, summaries, STAC, manifest) and cross-referencing against published inventories."""
