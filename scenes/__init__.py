"""Scene family B: an independent generator of ArcticDEM-like strip stacks with truth.

Written from its own specification (``docs/scene_family_b.md``) and sharing no code or
parameters with :mod:`pipeline.synth` (family A), so that passing on both families is not
passing one model of the world. It imports nothing from :mod:`pipeline`; it writes the
same *public* contract the pipeline reads (ArcticDEM strip files, a STAC catalog, ERA5
netCDF) and the same truth layout :mod:`pipeline.evaluation.evaluate` scores against.

- :mod:`scenes.terrain` - relief from a real SRTM tile (or a spectral surface when the tile
  is absent), rescaled to tundra relief, with ice-wedge polygon troughs.
- :mod:`scenes.ground` - what changes: thaw slumps (real inventory footprints when
  available, headwall retreat in time, polycyclic, stabilising, coalescing pairs) and
  progressive or one-off loss that is not a slump (gullies, river banks, thermokarst,
  drained lakes, detachments).
- :mod:`scenes.acquire` - what a strip sees: offsets, tilt and jitter, noise, voids,
  clouds high and low in any acquisition, late-lying snow, lakes mostly unflagged,
  partial strips.
- :mod:`scenes.build` - a whole scene family on disk (``python -m scenes`` or
  ``rts synth --family B``).
"""

FAMILY = "B"
GENERATOR_VERSION = "B2"  # B2: a unit's true volume is its surface's lowering
