"""Strips: ArcticDEM strip names, discovery (folders, STAC, PGC's strip index), metadata files
and windowed reads of a cell's stack (local files or COGs by URL)."""
