"""Shared dashboard state: the products folder, the cached catalog, the filters and the URL.

The dashboard imports only :mod:`data_products`. The products folder comes from
``--products DIR`` after ``--`` on the ``streamlit run`` command line (what
``rts dashboard`` passes), else the ``RTS_PRODUCTS`` environment variable, else
``./products``.

Filters and the selected slump live in ``st.session_state`` while a user moves between
pages and are mirrored into the URL query parameters (``region``, ``years``, ``size``,
``vmin``/``vmax`` in m³, ``rmin``/``rmax``, ``score``, ``q``, ``bbox`` in EPSG:3413 m,
``color``, ``slump``) so a view can be shared by copying the address. Values from the URL
are validated like typed input; a bad one is reported and ignored.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import streamlit as st

from data_products import schema
from data_products.catalog import (
    METRICS,
    SIZE_CLASSES,
    Catalog,
    Filters,
    ProductsError,
    QueryError,
    check_rts_id,
    parse_bbox,
)
from data_products.grid import TileIdError, parse_cell_id

DEFAULT_COLOR = "volume_m3"
#: cells picked on the map for reprocessing: at most this many (the URL holds them)
MAX_PICKED_CELLS = 400


_MD_SPECIAL = re.compile(r"([\\`*\[\]()<>~$#|])")
MAX_MESSAGES = 3  # at most this many messages about one input


def plain(text: object, max_chars: int = 300) -> str:
    """``text`` safe to pass to ``st.error``/``st.warning`` (which render Markdown): every
    Markdown and HTML character escaped, so user input never becomes a link or markup;
    shortened to ``max_chars``."""
    t = str(text)
    if len(t) > max_chars:
        t = t[: max_chars - 1] + "…"
    # brackets, parentheses, emphasis, code, HTML, maths and headings escaped; "://" broken so
    # that no bare URL is turned into a link
    return _MD_SPECIAL.sub(r"\\\1", t).replace("://", ":\\/\\/").replace("\n", " ")


def products_dir() -> Path:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--products")
    args, _ = ap.parse_known_args(sys.argv[1:])
    return Path(args.products or os.environ.get("RTS_PRODUCTS") or "products").expanduser().resolve()


@st.cache_resource(max_entries=4, show_spinner=False)
def open_catalog(path: str, version: tuple) -> Catalog:
    return Catalog(Path(path))


def _file_versions(p: Path) -> tuple:
    out = []
    for name in (schema.INVENTORY, schema.TIMESERIES, schema.TILES, schema.MATCHES):  # crossref adds matches later
        try:
            out.append((p / name).stat().st_mtime_ns)
        except OSError:
            out.append(0)
    return tuple(out)


def catalog() -> tuple[Catalog | None, str | None]:
    """The catalog of the products folder (reopened when the pipeline republishes), or an error text."""
    p = products_dir()
    try:
        return open_catalog(str(p), _file_versions(p)), None
    except ProductsError as exc:
        return None, str(exc)
    except Exception as exc:  # unreadable files: say so, change nothing
        return None, f"cannot read the products in {p}: {exc}"


def require_catalog() -> Catalog:
    """The catalog, or an error message and the end of this page's run."""
    cat, err = catalog()
    if cat is None:
        st.error(plain(err))
        st.info("Start the dashboard on a products folder: `rts dashboard --products DIR` "
                "(a folder written by `rts run`, e.g. after `make pipeline`).")
        st.stop()
    return cat


# --------------------------------------------------------------------------- URL <-> filters
def _qp_get(name: str) -> str | None:
    v = st.query_params.get(name)
    return v if v not in (None, "") else None


def filters_from_query() -> tuple[Filters, list[str]]:
    """Filters from the URL query parameters; values that do not validate are dropped and reported."""
    errors: list[str] = []
    f = Filters()
    parts = {
        "regions": lambda: tuple(st.query_params.get_all("region")),
        "years": lambda: tuple(int(v) for v in _qp_get("years").split("-", 1)) if _qp_get("years") else None,
        "size_classes": lambda: tuple(st.query_params.get_all("size")),
        "volume": lambda: (_qp_get("vmin"), _qp_get("vmax")),
        "r": lambda: (_qp_get("rmin"), _qp_get("rmax")),
        "min_score": lambda: _qp_get("score"),
        "search": lambda: _qp_get("q") or "",
        "bbox": lambda: _qp_get("bbox"),
    }
    for name, get in parts.items():
        try:
            candidate = replace(f, **{name: get()})
            candidate.validate()
            f = candidate
        except (QueryError, ValueError, TypeError) as exc:
            errors.append(f"URL parameter ignored: {exc}")
    return f.validate(), errors


def filters_to_query(f: Filters, color: str | None = None, slump: str | None = None) -> None:
    """Mirror the filters (and colour, selected slump) into the URL; defaults are left out."""
    qp: dict[str, object] = {}
    if f.regions:
        qp["region"] = list(f.regions)
    if f.years:
        qp["years"] = f"{f.years[0]}-{f.years[1]}"
    if f.size_classes:
        qp["size"] = list(f.size_classes)
    for key, v in (("vmin", f.volume[0]), ("vmax", f.volume[1]), ("rmin", f.r[0]), ("rmax", f.r[1]),
                   ("score", f.min_score)):
        if v is not None:
            qp[key] = f"{v:g}"
    if f.search:
        qp["q"] = f.search
    if f.bbox:
        qp["bbox"] = ",".join(f"{v:.0f}" for v in f.bbox)
    if color and color != DEFAULT_COLOR:
        qp["color"] = color
    if slump:
        qp["slump"] = slump
    picked = st.session_state.get("picked_cells") or []
    if picked:
        qp["cells"] = ",".join(picked)
    current = {k: st.query_params.get_all(k) for k in st.query_params}
    wanted = {k: (v if isinstance(v, list) else [v]) for k, v in qp.items()}
    if current != wanted:
        st.query_params.from_dict(qp)


def current_filters() -> Filters:
    """The session's filters; taken from the URL on a session's first run."""
    if "filters" not in st.session_state:
        f, errors = filters_from_query()
        st.session_state["filters"] = f
        st.session_state["url_errors"] = errors
        color = _qp_get("color")
        st.session_state["color"] = color if color in METRICS else DEFAULT_COLOR
        sl = _qp_get("slump")
        sl = sl.replace(" ", "+") if sl else sl  # an unencoded '+' in a hand-made link arrives as a space
        try:
            st.session_state["slump"] = check_rts_id(sl) if sl else None
        except QueryError as exc:
            st.session_state["slump"] = None
            st.session_state["url_errors"].append(f"URL parameter ignored: {exc}")
        picked, bad = parse_cell_list(_qp_get("cells") or "")
        st.session_state["picked_cells"] = picked
        st.session_state["url_errors"] += [f"URL parameter cells: {b}" for b in bad[:MAX_MESSAGES]]
    return st.session_state["filters"]


def parse_cell_list(text: str, max_cells: int | None = MAX_PICKED_CELLS) -> tuple[list[str], list[str]]:
    """Canonical 2 km cell ids (sorted, unique, at most ``max_cells`` unless None) from a text of
    ids separated by commas, spaces or lines, and a message for each token that is not one."""
    ids, errors = set(), []
    for tok in [t for t in re.split(r"[\s,;]+", text or "") if t]:
        try:
            ids.add(parse_cell_id(tok).id)
        except TileIdError as exc:
            errors.append(str(exc)[:200])
    out = sorted(ids)
    if max_cells is not None and len(out) > max_cells:
        errors.append(f"at most {max_cells} cells can be picked; the first {max_cells} are kept")
        out = out[:max_cells]
    return out, errors


def picked_cells() -> list[str]:
    """The cells picked on the map (canonical ids), from the URL on a session's first run."""
    current_filters()
    return list(st.session_state.get("picked_cells") or [])


def toggle_cell(cell_id: str) -> bool:
    """Add ``cell_id`` to the picked cells, or remove it if it was picked; False when the
    list is full and nothing was added."""
    picked = picked_cells()
    if cell_id in picked:
        picked.remove(cell_id)
    elif len(picked) >= MAX_PICKED_CELLS:
        return False
    else:
        picked.append(cell_id)
    st.session_state["picked_cells"] = sorted(picked)
    return True


def set_picked_cells(ids: list[str]) -> None:
    st.session_state["picked_cells"] = sorted(set(ids))[:MAX_PICKED_CELLS]


def selected_slump() -> str | None:
    current_filters()
    return st.session_state.get("slump")


def select_slump(rts_id: str | None) -> None:
    st.session_state["slump"] = rts_id


def color_by() -> str:
    current_filters()
    return st.session_state.get("color", DEFAULT_COLOR)


# --------------------------------------------------------------------------- sidebar
def _fmt_m3(v: float) -> str:
    return f"{v:,.0f}"


def sidebar_filters(cat: Catalog) -> Filters:
    """Render the filter widgets; return the validated filters (the previous ones if input is bad).

    Widget values are seeded from the session's filters, so the filters survive page changes and
    a shared URL reproduces them.
    """
    f = current_filters()
    ss = st.session_state
    for e in (ss.pop("url_errors", []) or [])[:MAX_MESSAGES]:
        st.sidebar.warning(plain(e))
    regions = cat.regions()
    yr = cat.year_range() or (2012, 2022)
    seed = {
        "w_regions": [r for r in f.regions if r in regions],
        "w_years": tuple(f.years) if f.years else yr,
        "w_sizes": list(f.size_classes),
        "w_vmin": "" if f.volume[0] is None else f"{f.volume[0]:g}",
        "w_vmax": "" if f.volume[1] is None else f"{f.volume[1]:g}",
        "w_r": (f.r[0] if f.r[0] is not None else -1.0, f.r[1] if f.r[1] is not None else 1.0),
        "w_score": float(f.min_score or 0.0),
        "w_search": f.search,
        "w_bbox": ",".join(f"{v:.0f}" for v in f.bbox) if f.bbox else "",
        "w_color": color_by(),
    }
    for k, v in seed.items():
        if k not in ss:
            ss[k] = v
    sb = st.sidebar
    sb.header("Filters")
    sb.selectbox("Colour by", list(METRICS)[:3], format_func=METRICS.get, key="w_color")
    sb.multiselect("Region", regions, key="w_regions", placeholder="all regions")
    lo, hi = min(yr[0], ss["w_years"][0]), max(yr[1], ss["w_years"][1])
    if lo < hi:
        sb.slider("Active in thaw seasons", lo, hi, key="w_years")
    sb.multiselect("Size class (area)", list(SIZE_CLASSES), key="w_sizes", placeholder="all sizes")
    c1, c2 = sb.columns(2)
    c1.text_input("Volume min (m³)", key="w_vmin", max_chars=200)
    c2.text_input("Volume max (m³)", key="w_vmax", max_chars=200)
    sb.slider("r with summer temperature", -1.0, 1.0, step=0.05, key="w_r",
              help="Pearson r of yearly volume against summer temperature; narrowing it hides slumps without r.")
    sb.slider("Detector score at least", 0.0, 1.0, step=0.05, key="w_score")
    sb.text_input("Search id", key="w_search", placeholder="RTS_-0245678_+0012345 or a cell id", max_chars=200)
    sb.text_input("Box xmin,ymin,xmax,ymax (EPSG:3413 m)", key="w_bbox", max_chars=200)
    if sb.button("Reset filters"):
        for k in list(seed):
            ss.pop(k, None)
        ss["filters"] = Filters()
        ss["color"] = DEFAULT_COLOR
        st.rerun()

    years = tuple(ss["w_years"]) if "w_years" in ss and tuple(ss["w_years"]) != tuple(yr) else None
    rr = tuple(ss["w_r"])
    new = Filters(regions=tuple(ss["w_regions"]), years=years, size_classes=tuple(ss["w_sizes"]),
                  volume=(ss["w_vmin"].strip() or None, ss["w_vmax"].strip() or None),
                  r=(None if rr[0] <= -1.0 else rr[0], None if rr[1] >= 1.0 else rr[1]),
                  min_score=ss["w_score"] or None, search=ss["w_search"], bbox=ss["w_bbox"].strip() or None)
    try:
        f = new.validate()
    except QueryError as exc:
        sb.error(f"{exc}. The previous filters stay in force.")
    ss["filters"] = f
    ss["color"] = ss["w_color"]
    filters_to_query(f, ss["color"], ss.get("slump"))
    return f


def describe(f: Filters) -> str:
    """A one-line description of the active filters."""
    parts = []
    if f.regions:
        parts.append(", ".join(f.regions))
    if f.years:
        parts.append(f"active {f.years[0]}-{f.years[1]}")
    if f.size_classes:
        parts.append(" / ".join(f.size_classes))
    if f.volume != (None, None):
        parts.append(f"volume {f.volume[0] or 0:g}-{f.volume[1] if f.volume[1] is not None else '∞'} m³")
    if f.r != (None, None):
        parts.append(f"r {f.r[0] if f.r[0] is not None else -1:g}..{f.r[1] if f.r[1] is not None else 1:g}")
    if f.min_score:
        parts.append(f"score ≥ {f.min_score:g}")
    if f.search:
        parts.append(f"id contains '{f.search}'")
    if f.bbox:
        parts.append("box " + ",".join(f"{v / 1000:.0f}" for v in f.bbox) + " km")
    return "; ".join(parts) or "all slumps"


def why_no_slumps(counts: dict[str, int]) -> str:
    """Why an inventory is empty, from ``tiles.parquet``'s status counts ({status: cells})."""
    n = sum(counts.values())
    if n == 0:
        return "No work cell has been processed yet: `rts run --strips SRC --out PRODUCTS` processes them."
    parts = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in sorted(counts.items()))
    ok = counts.get("ok", 0)
    if ok == 0 and counts.get("failed", 0) == n:
        why = "every cell failed: see the error column of tiles.parquet (Summary page) and logs/"
    elif ok == 0:
        why = "no cell had enough DEMs for a change model (no data, or fewer than the minimum of DEMs)"
    else:
        why = f"the {ok:,} processed cell{'s' if ok != 1 else ''} held no loss that passed detection"
    return f"{n:,} work cells: {parts}. No slump was found because {why}."


__all__ = ["products_dir", "catalog", "require_catalog", "current_filters", "sidebar_filters", "describe",
           "selected_slump", "select_slump", "color_by", "parse_bbox"]

