"""Strip metadata files: acquisition times, sensors and image ids from what PGC ships beside a strip.

Each ArcticDEM strip comes with a text file of its metadata next to the DEM:

* ``<stem>_mdf.txt`` (release 4.1): ODL-like ``key = value;`` lines in groups
  (``BEGIN_GROUP = STRIP_DEM`` … ``END_GROUP = STRIP_DEM``), among them ``platform1``/
  ``platform2`` (sensors), ``catId1``/``catId2`` (image ids), ``acqDate1``/``acqDate2``
  (``YYYY-MM-DD``) and ``avgAcqTime1``/``avgAcqTime2`` (``YYYY-MM-DD HH:MM:SS``, UTC);
* ``<stem>_meta.txt`` (release 3 and the scene metadata): ``key=value`` lines with, per
  component scene, ``Image_1_Acquisition_time`` (ISO 8601, UTC), ``Image_1_satID`` and
  ``Image 1=<path of the source image>`` whose name holds the image's catalog id.

:func:`read_strip_metadata` parses either into :class:`StripMetadata`;
:func:`apply_metadata` makes it the strip's date and sensor where it disagrees with the
file name, which stays the fallback when no file is there, and reports each disagreement.
The reference study took acquisition dates from these files.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.strips.names import StripName

#: metadata files looked for beside ``<stem>_dem.tif``, in this order
META_SUFFIXES = ("_mdf.txt", "_meta.txt")


class StripMetadataError(ValueError):
    """A metadata file that exists but cannot be parsed."""


@dataclass(frozen=True)
class StripMetadata:
    path: str
    acquired1: _dt.datetime | None  # UTC
    acquired2: _dt.datetime | None
    sensor1: str | None
    sensor2: str | None
    catid1: str | None
    catid2: str | None


def _clean(v: str) -> str:
    return v.strip().rstrip(";").strip().strip('"').strip("'").strip()


def parse_mdf(text: str) -> dict[str, str]:
    """``_mdf.txt`` as a flat dict: keys inside a group are prefixed ``<GROUP>_``."""
    out: dict[str, str] = {}
    groups: list[str] = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        k, v = (s.strip() for s in line.split("=", 1))
        v = _clean(v)
        if k == "BEGIN_GROUP":
            groups.append(v)
        elif k == "END_GROUP":
            if groups:
                groups.pop()
        elif k:
            out["_".join(groups + [k])] = v
    return out


def parse_meta_txt(text: str) -> dict[str, str]:
    """``_meta.txt`` as a dict of its ``key=value`` lines (the first of each key kept)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), _clean(v))
    return out


def _when(value: str | None) -> _dt.datetime | None:
    if not value:
        return None
    v = value.strip().rstrip("Z")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f",
                "%Y-%m-%d", "%Y%m%d%H%M%S"):
        try:
            return _dt.datetime.strptime(v, fmt)
        except ValueError:
            continue
    return None


_CATID = re.compile(r"_(\d{14})_([0-9A-F]{16})_", re.I)  # <sensor>_<YYYYMMDDhhmmss>_<catid>_... image names


def read_strip_metadata(path: str | Path) -> StripMetadata:
    """Acquisition times, sensors and image ids from a ``_mdf.txt`` or ``_meta.txt`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise StripMetadataError(f"{path}: unreadable ({exc})") from None
    if path.name.endswith("_mdf.txt"):
        d = parse_mdf(text)
        g = "STRIP_DEM_"
        t1 = _when(d.get(g + "avgAcqTime1")) or _when(d.get(g + "acqDate1")) or _when(d.get(g + "acqDate"))
        t2 = _when(d.get(g + "avgAcqTime2")) or _when(d.get(g + "acqDate2")) or t1
        md = StripMetadata(str(path), t1, t2, d.get(g + "platform1") or None, d.get(g + "platform2") or None,
                           d.get(g + "catId1") or None, d.get(g + "catId2") or None)
    else:
        d = parse_meta_txt(text)
        t1 = _when(d.get("Image_1_Acquisition_time") or d.get("Image 1 Acquisition time"))
        t2 = _when(d.get("Image_2_Acquisition_time") or d.get("Image 2 Acquisition time"))
        ids = []
        for key in ("Image 1", "Image_1", "Image 2", "Image_2"):
            m = _CATID.search(Path(d.get(key, "")).name)
            if m:
                ids.append((m.group(1), m.group(2)))
        if t1 is None and ids:
            t1 = _when(ids[0][0])
        if t2 is None and len(ids) > 1:
            t2 = _when(ids[1][0])
        cats = [c for _, c in ids]
        md = StripMetadata(str(path), t1, t2 or t1, d.get("Image_1_satID") or None, d.get("Image_2_satID") or None,
                           cats[0] if cats else None, cats[1] if len(cats) > 1 else None)
    if md.acquired1 is None:
        raise StripMetadataError(f"{path}: no acquisition time (looked for acqDate1/avgAcqTime1 or "
                                 "Image_1_Acquisition_time)")
    return md


def metadata_file(dem_path: str | Path) -> Path | None:
    """The metadata file beside a local ``<stem>_dem.tif``, if any."""
    dem = Path(dem_path)
    if not dem.name.endswith("_dem.tif"):
        return None
    stem = dem.name[: -len("_dem.tif")]
    for suffix in META_SUFFIXES:
        p = dem.with_name(stem + suffix)
        if p.is_file():
            return p
    return None


def apply_metadata(name: StripName, md: StripMetadata) -> tuple[StripName, list[str]]:
    """``name`` with the metadata's acquisition date, time and sensor, and one message per
    field on which the file name and the metadata disagree (the metadata wins)."""
    conflicts = []
    date = md.acquired1.date()
    if date != name.date:
        conflicts.append(f"acquisition date {date} (the name says {name.date})")
    sensor = name.sensor
    if md.sensor1 and name.version != "cross-track" and len(name.sensor) == 4 and name.sensor.startswith(("WV", "GE")):
        if md.sensor1 != name.sensor:
            conflicts.append(f"sensor {md.sensor1} (the name says {name.sensor})")
            sensor = md.sensor1
    cats = {c.upper() for c in (md.catid1, md.catid2) if c}
    if cats and cats != {name.catid1.upper(), name.catid2.upper()}:
        conflicts.append(f"image ids {', '.join(sorted(cats))} (the name says {name.catid1}, {name.catid2})")
    new = dataclasses.replace(name, date=date, sensor=sensor, acquired=md.acquired1)
    return new, [f"{md.path}: {c}; the metadata is used" for c in conflicts]
