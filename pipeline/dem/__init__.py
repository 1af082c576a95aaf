"""The DEM stage, arrays in and arrays out: coregistration and bundle adjustment of a cell's
stack (Nuth & Kääb 2011), the per-pixel step model of elevation change, snow-season trust and
terrain derivatives; :mod:`pipeline.dem.cell` runs them for one cell and writes its rasters."""
