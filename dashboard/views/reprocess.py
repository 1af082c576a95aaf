"""Reprocess page: choose cells (ids, a box, or the map's focus box), submit a job to the
queue (``data_products.queue``), watch its progress; the products refresh when jobs finish.

If an access token is configured (environment ``RTS_DASHBOARD_TOKEN`` or the Streamlit
secret of the same name), submitting and cancelling require it. Input is validated before
anything is written: invalid cell ids or boxes give a message and queue nothing.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import state
from dashboard.auth import Throttle, TokenError, configured_token
from data_products.catalog import QueryError, parse_bbox
from data_products.queue import JobQueue, QueueError

MAX_CELLS = 2_000
MAX_BOX_SIDE_M = 500_000.0  # a job's box: at most 500 km on a side (about 62,500 cells)
MAX_PENDING_JOBS = 20
#: a worker announces itself every poll (2-5 s) and every heartbeat; unseen this long, it is gone
WORKER_ALIVE_S = 30.0
ss = st.session_state
state.filters_to_query(state.current_filters(), state.color_by(), state.selected_slump())

st.title("Reprocess")
products = state.products_dir()
if not products.is_dir():
    st.error(f"Products folder {products} does not exist: nothing to reprocess into. "
             "Start the dashboard with `rts dashboard --products DIR`.")
    st.stop()



@st.cache_resource(show_spinner=False)
def _throttle() -> Throttle:
    return Throttle()


@st.cache_resource(show_spinner=False)
def _queue(path: str):
    return JobQueue(path)


try:
    queue = _queue(str(products))
except (QueueError, OSError) as exc:
    st.error(f"The job queue in {products} cannot be opened: {exc}")
    st.stop()


def live_workers() -> list[dict]:
    try:
        return queue.workers(alive_within_s=WORKER_ALIVE_S)
    except QueueError:
        return []


def no_worker_help() -> str:
    return (f"No queue worker has been seen in the last {WORKER_ALIVE_S:.0f} s, so jobs stay pending. Start one on "
            f"the server: `rts jobs work --products {products} --strips <strips folder or STAC>` (or start the "
            "dashboard with `--worker-strips`, as `make run` does).")


try:
    token = configured_token(secrets=lambda: st.secrets)
except TokenError as exc:  # fail closed: a broken token disables submitting, it never opens the page
    st.error(f"Reprocessing is disabled: {exc}")
    st.stop()
picked = state.picked_cells()
MODES = ["Cells picked on the map", "Cell ids", "Box (EPSG:3413 m)", "The map's focus box"]
if "w_rp_mode" not in ss:
    ss["w_rp_mode"] = MODES[0] if picked else MODES[1]
mode = st.radio("Choose cells by", MODES, horizontal=True, key="w_rp_mode")
with st.form("submit_job", clear_on_submit=False):
    tiles = bbox = None
    if mode == MODES[0]:
        if picked:
            st.write(f"{len(picked)} cell{'s' if len(picked) != 1 else ''} picked: "
                     + ", ".join(f"`{c}`" for c in picked[:80]) + (" …" if len(picked) > 80 else ""))
        else:
            st.write("No cell picked yet: on the Map page, focus on an area and click its 2 km cells.")
    elif mode == "Cell ids":
        text = st.text_area("Cell ids (one per line or comma-separated)", placeholder="41_16_1_1_02_05",
                            key="w_rp_cells", max_chars=50_000)
    elif mode == "Box (EPSG:3413 m)":
        text = st.text_input("xmin,ymin,xmax,ymax", placeholder="-2450000,-250000,-2440000,-240000", key="w_rp_box",
                             max_chars=200)
    else:
        fb = ss.get("focus_box")
        text = ",".join(f"{v:.0f}" for v in fb) if fb else ""
        st.write(f"Focus box: `{text}`" if fb else "No focus box yet: set one on the Map page (View → Focus box).")
    force = st.checkbox("Force (recompute cells whose inputs did not change)", key="w_rp_force")
    who = st.text_input("Your name or e-mail (optional, recorded with the job)", max_chars=120, key="w_rp_who")
    given = st.text_input("Access token", type="password", key="w_rp_token", max_chars=200) if token else ""
    submitted = st.form_submit_button("Submit job", type="primary")

if submitted:
    problems = []
    ok, why = _throttle().check(given, token) if token else (True, "")
    if ok and token:
        ss["rp_authorised"] = True
    try:
        pending = queue.counts().get("pending", 0)
    except QueueError:
        pending = 0
    if not ok:
        problems.append(f"{why} Nothing was submitted.")
    elif pending >= MAX_PENDING_JOBS:
        problems.append(f"{pending} jobs are already waiting (at most {MAX_PENDING_JOBS}): try again when some "
                        "have run.")
    elif mode == MODES[0]:
        tiles = picked
        if not tiles:
            problems.append("No cell is picked: click cells on the Map page, or choose them by id or box.")
    elif mode == "Cell ids":
        tiles, errs = state.parse_cell_list(text, max_cells=None)
        problems += errs
        if not tiles and not errs:
            problems.append("Give at least one cell id.")
        if len(tiles) > MAX_CELLS:
            problems.append(f"At most {MAX_CELLS:,} cells a job; use a box for larger areas.")
    else:
        try:
            bbox = parse_bbox(text)
            if bbox is None:
                problems.append("Give a box xmin,ymin,xmax,ymax in EPSG:3413 metres.")
            elif max(bbox[2] - bbox[0], bbox[3] - bbox[1]) > MAX_BOX_SIDE_M:
                problems.append(f"At most {MAX_BOX_SIDE_M / 1000:,.0f} km on a side a job; split larger areas.")
                bbox = None
        except QueryError as exc:
            problems.append(str(exc))
    if problems:
        for p in problems[: state.MAX_MESSAGES]:
            st.error(state.plain(p))
        st.warning("Nothing was queued.")
    else:
        try:
            job = queue.submit(tiles=tiles or None, bbox=bbox, force=bool(force), submitted_by=who.strip()[:120])
            ss.setdefault("my_jobs", [])
            if job.id not in ss["my_jobs"]:
                ss["my_jobs"].append(job.id)
            if live_workers():
                st.success(f"Job {job.id} queued ({job.describe()}, status {job.status}). A worker is running and "
                           "picks it up; progress shows below.")
            else:
                st.warning(f"Job {job.id} queued ({job.describe()}). {no_worker_help()}")
        except QueueError as exc:
            st.error(f"The queue refused the job: {exc}")


def _jobs_frame(jobs) -> pd.DataFrame:
    """The queue as a table; who submitted a job only for a session that gave the token."""
    names = bool(token) and ss.get("rp_authorised", False)
    return pd.DataFrame([{"job": j.id, "status": j.status, "cells": j.describe(), "force": j.force,
                          "progress": float(j.progress or 0.0), "message": (j.message or "")[:200],
                          "worker": j.worker or "",
                          **({"submitted by": getattr(j, "submitted_by", "") or ""} if names else {}),
                          "created": j.created_at, "finished": j.finished_at or ""} for j in jobs])


@st.fragment(run_every=2.0)
def job_monitor() -> None:
    """The queue, refreshed every 2 s; reloads the products when one of this session's jobs finishes."""
    try:
        jobs = queue.list(limit=50)
    except QueueError as exc:
        st.error(f"Cannot read the queue: {exc}")
        return
    alive = live_workers()
    if alive:
        st.caption("Workers: " + "; ".join(
            f"{w['name']} ({'running job ' + str(w['job_id']) if w['job_id'] else 'idle'}, seen "
            f"{w['seen_s_ago']:.0f} s ago)" for w in alive[:5]))
    else:
        st.warning(no_worker_help())
    st.subheader("Jobs")
    if not jobs:
        st.info("The queue is empty.")
        return
    st.dataframe(_jobs_frame(jobs), hide_index=True, width="stretch", key="jobs_table",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0,
                                                                            max_value=1.0, format="percent")})
    mine = [j for j in jobs if j.id in ss.get("my_jobs", [])]
    done_now = {j.id for j in mine if j.status == "done"} - set(ss.get("jobs_seen_done", []))
    if done_now:
        ss["jobs_seen_done"] = sorted(set(ss.get("jobs_seen_done", [])) | done_now)
        st.success(f"Job(s) {', '.join(map(str, sorted(done_now)))} done: the products are reloaded.")
    for j in mine:
        if not j.finished and j.log_tail:
            with st.expander(f"Job {j.id} log"):
                st.code(j.log_tail[-4000:])


job_monitor()

with st.expander("Cancel a job"):
    active = [j for j in queue.list(status=["pending", "running"], limit=100)]
    if not token:
        st.caption("Cancelling from this page needs an access token (set RTS_DASHBOARD_TOKEN when starting the "
                   "dashboard); on the server, `rts jobs cancel ID` works.")
    elif not active:
        st.caption("No pending or running job.")
    else:
        jid = st.selectbox("Job", [j.id for j in active], format_func=lambda i: f"job {i}", key="w_rp_cancel")
        tok2 = st.text_input("Access token", type="password", key="w_rp_token2", max_chars=200) if token else ""
        if st.button("Cancel job"):
            ok, why = _throttle().check(tok2, token)
            if not ok:
                st.error(f"{why} Nothing was cancelled.")
            else:
                try:
                    j = queue.cancel(jid)
                    st.success(f"Job {j.id}: {j.status}{' (cancel requested)' if j.status == 'running' else ''}.")
                except QueueError as exc:
                    st.error(state.plain(exc))
