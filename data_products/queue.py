"""The persistent reprocessing job queue: ``jobs.sqlite`` in the products folder.

The dashboard (and ``rts jobs submit``) asks for cells to be reprocessed by submitting a
job; a worker (``rts jobs work``) claims jobs one at a time and runs them through the same
code as ``rts run``. The queue is one SQLite file (``data_products.schema.QUEUE``) in WAL
mode, so it survives restarts (it is only the file), readers never block the writer, and
several worker processes on one machine can share it. Standard library only.

State machine of a job
----------------------
::

                submit
                  |
                  v            cancel
              pending ------------------------------> cancelled
                  |                                       ^
                  | claim (oldest first, one worker)      | finish (cancel was requested)
                  v                                       |
              running --- cancel: cancel_requested=1 -----+
               |  |  \\
   finish(ok)  |  |   \\ lease expired (worker stopped heartbeating): reap
               v  v    v
            done  failed   (back to pending while attempts < max_attempts, then failed with the
                            message 'worker <w> stopped heartbeating at <t> (lease expired)';
                            cancelled instead if a cancel had been requested)

``done``, ``failed`` and ``cancelled`` are final: nothing moves a job out of them.

- **submit** validates the request (cell ids of the work grid, or a bounding box in EPSG:3413
  metres) and stores a *pending* job. An identical request (same sorted cell ids or bbox and
  the same ``force``) that is still pending or running is not queued twice: the existing
  job is returned. A finished job never absorbs a new submission.
- **claim** atomically (``BEGIN IMMEDIATE``) takes the oldest pending job, marks it
  *running*, records the worker and gives it a lease of ``lease_s`` seconds. Two workers
  can never claim the same job.
- **heartbeat** renews the lease and records progress, a message and log lines (the last
  ``LOG_TAIL_LINES`` are kept). It returns False when the worker should stop: a cancel was
  requested, or the job is no longer the worker's (it was reaped or finished).
- **cancel** moves a pending job straight to *cancelled*; for a running job it only sets a
  flag, which the worker sees through ``heartbeat`` (False) or ``is_cancel_requested``;
  the worker then stops and calls ``finish``, which records *cancelled*.
- **reap** handles every running job whose lease expired (its worker died or hung): it goes
  back to *pending* for another worker while it has been claimed fewer than ``max_attempts``
  times (the reaping queue's setting, default 2), else *failed* with the reason, so no job
  stays *running* forever. ``claim`` reaps first, and ``list``
  / ``get`` reap too when they see an expired lease, so the dashboard shows the truth even
  when no worker is running.

Every call runs one short transaction on a connection of the calling thread (one per thread
and process, in autocommit mode between calls, so no lock is held between calls): a
``JobQueue`` may be shared between threads, pickled to other processes, and any number of
processes may open the same file. Like every SQLite database in WAL mode, the file must be
on a local file system (not NFS/SMB) and all processes must run on the same machine; leases
run on that machine's monotonic clock (tagged with its boot id), so wall-clock steps do not
move them.
Besides ``jobs.sqlite`` SQLite keeps ``jobs.sqlite-wal`` and ``jobs.sqlite-shm`` next to it
while the queue is in use; they belong to the queue, not to the data products.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from data_products import grid
from data_products.schema import QUEUE

SCHEMA_VERSION = 3  # 2: leases on the monotonic clock (lease_mono, boot_id); 3: the workers table
APPLICATION = "rts-volumetrics job queue"

STATUSES = ("pending", "running", "done", "failed", "cancelled")
ACTIVE = ("pending", "running")
FINAL = ("done", "failed", "cancelled")

LOG_TAIL_LINES = 50
MAX_LINE_CHARS = 2_000
MAX_MESSAGE_CHARS = 4_000
MAX_NAME_CHARS = 200
BUSY_TIMEOUT_S = 30.0



class QueueError(ValueError):
    """A bad request to the queue (invalid ids, unknown job, illegal transition) or an
    unusable queue file (not a queue database, corrupt, newer schema, unreadable)."""


@dataclass
class Job:
    """One reprocessing request and its state (see the module docstring for the states)."""

    id: int
    status: str  # 'pending', 'running', 'done', 'failed', 'cancelled'
    tiles: list[str] | None  # canonical cell ids, sorted; None for a bbox job
    bbox: tuple[float, float, float, float] | None  # EPSG:3413 metres xmin, ymin, xmax, ymax
    force: bool
    created_at: str  # ISO-8601 UTC
    started_at: str | None
    finished_at: str | None
    progress: float  # 0..1
    message: str
    log_tail: str  # the last LOG_TAIL_LINES log lines, newline-separated
    worker: str | None
    submitted_by: str
    attempts: int
    cancel_requested: bool = False
    heartbeat_at: str | None = None  # last claim or heartbeat (ISO-8601 UTC)
    lease_expires_at: str | None = None  # a running job whose lease passed is reaped

    @property
    def finished(self) -> bool:
        """True once the job is done, failed or cancelled (final states)."""
        return self.status in FINAL

    def describe(self) -> str:
        """What the job covers, in a few words: '3 cells' or 'bbox xmin,ymin,xmax,ymax'."""
        if self.tiles is not None:
            return f"{len(self.tiles)} cell{'s' if len(self.tiles) != 1 else ''}"
        return "bbox " + ",".join(f"{v:g}" for v in self.bbox)

    def to_dict(self) -> dict:
        """A JSON-ready dict (bbox as a list)."""
        d = asdict(self)
        d["bbox"] = list(self.bbox) if self.bbox is not None else None
        return d


def _boot_id() -> str | None:
    """This machine's boot id (Linux), so that a monotonic lease from before a reboot
    counts as expired; None elsewhere (leases then fall back to the wall clock)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


_BOOT_ID = _boot_id()
# a running job's lease has passed: on this boot by the monotonic clock (a wall-clock step
# neither reaps a live worker nor keeps a dead one); from another boot always (its worker
# died with it); without a monotonic lease (rows of schema 1) by the wall clock
_EXPIRED = ("status = 'running' AND ((boot_id IS NOT NULL AND boot_id = ? AND lease_mono < ?) "
            "OR (boot_id IS NOT NULL AND boot_id <> ?) "
            "OR ((boot_id IS NULL OR lease_mono IS NULL) AND (lease_expires IS NULL OR lease_expires < ?)))")


def _expired_args() -> tuple:
    return (_BOOT_ID or "", time.monotonic(), _BOOT_ID or "", time.time())


def _now() -> tuple[float, str]:
    t = time.time()
    return t, _iso(t)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")


def _short(value, n: int = 60) -> str:
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} characters)"


def _clip(text, n: int) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def normalise_tiles(tiles) -> list[str]:
    """Canonical, sorted, de-duplicated cell ids; QueueError naming the first bad id."""
    if isinstance(tiles, str):
        tiles = [tiles]
    try:
        items = list(tiles)
    except TypeError:
        raise QueueError(f"tiles must be a list of cell ids, got {type(tiles).__name__}") from None
    if not items:
        raise QueueError("tiles is empty: give at least one cell id")
    out = set()
    for t in items:
        if not isinstance(t, str):
            raise QueueError(f"tile id {_short(t)} is not a string")
        try:
            cell = grid.parse_cell_id(t)
        except grid.TileIdError as e:
            if len(t) <= 60:
                raise QueueError(f"invalid tile id: {e}") from None
            raise QueueError(f"invalid tile id {_short(t)!r}: expected <row>_<col>_<i>_<j>_<cx>_<cy>, "
                             "e.g. 36_25_2_1_07_13") from None
        out.add(cell.id)
    return sorted(out)


def normalise_bbox(bbox) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) as floats in EPSG:3413 metres, checked by
    :func:`data_products.grid.parse_bbox` (inside the work grid; a string 'xmin,ymin,xmax,ymax'
    is accepted too)."""
    try:
        return grid.parse_bbox(bbox)
    except grid.BBoxError as exc:
        raise QueueError(str(exc)) from None


def _job_id(job_id) -> int:
    if isinstance(job_id, bool):
        raise QueueError(f"job id {job_id!r} is not an integer")
    if isinstance(job_id, int):
        return job_id
    if isinstance(job_id, str) and job_id.strip().isdigit() and len(job_id.strip()) <= 18:
        return int(job_id.strip())
    raise QueueError(f"job id {_short(job_id)} is not an integer")


def _worker_name(worker) -> str:
    if not isinstance(worker, str) or not worker.strip():
        raise QueueError("worker must be a non-empty string naming the worker")
    return _clip(worker.strip(), MAX_NAME_CHARS)


#: workers announce themselves while they poll and work, so that a page can say whether any is alive
_WORKERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS workers (
    name       TEXT PRIMARY KEY,        -- host:pid
    started_at REAL NOT NULL,           -- unix seconds
    seen_at    REAL NOT NULL,           -- unix seconds of the last announcement
    seen_mono  REAL,                    -- CLOCK_MONOTONIC of that announcement (this boot)
    boot_id    TEXT,
    job_id     INTEGER,                 -- the job it is running, NULL when idle
    stopped    INTEGER NOT NULL DEFAULT 0
);
"""

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    status           TEXT NOT NULL CHECK (status IN ('pending','running','done','failed','cancelled')),
    tiles            TEXT,              -- JSON list of canonical cell ids, or NULL
    bbox             TEXT,              -- JSON [xmin, ymin, xmax, ymax], or NULL
    force            INTEGER NOT NULL DEFAULT 0,
    dedup_key        TEXT NOT NULL,     -- normalised request, for deduplication
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    progress         REAL NOT NULL DEFAULT 0,
    message          TEXT NOT NULL DEFAULT '',
    log_tail         TEXT NOT NULL DEFAULT '',
    worker           TEXT,
    submitted_by     TEXT NOT NULL DEFAULT '',
    attempts         INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    heartbeat_at     REAL,              -- unix seconds
    lease_expires    REAL,              -- unix seconds, running jobs only (shown, and the fallback)
    lease_mono       REAL,              -- CLOCK_MONOTONIC seconds of this boot: immune to clock steps
    boot_id          TEXT,              -- the boot the monotonic lease belongs to
    CHECK ((tiles IS NULL) <> (bbox IS NULL))
);
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_dedup ON jobs (dedup_key, status);
""" + _WORKERS_SCHEMA



_COLUMNS = ("id, status, tiles, bbox, force, created_at, started_at, finished_at, progress, message, "
            "log_tail, worker, submitted_by, attempts, cancel_requested, heartbeat_at, lease_expires")


def _row_to_job(r) -> Job:
    return Job(
        id=r[0], status=r[1],
        tiles=json.loads(r[2]) if r[2] is not None else None,
        bbox=tuple(json.loads(r[3])) if r[3] is not None else None,
        force=bool(r[4]), created_at=r[5], started_at=r[6], finished_at=r[7],
        progress=float(r[8]), message=r[9], log_tail=r[10], worker=r[11], submitted_by=r[12],
        attempts=int(r[13]), cancel_requested=bool(r[14]), heartbeat_at=_iso(r[15]),
        lease_expires_at=_iso(r[16]),
    )


class JobQueue:
    """The job queue stored in ``<products_dir>/jobs.sqlite`` (created when absent).

    ``lease_s`` is how long a claimed job stays the worker's without a heartbeat; a worker
    should heartbeat several times per lease. A job whose lease expires (its worker died) goes
    back to *pending* until it has been claimed ``max_attempts`` times, then fails. Raises
    QueueError when the file exists but is not a queue database (or is corrupt, or was written
    by a newer schema)."""

    def __init__(self, products_dir, *, lease_s: float = 60.0, max_attempts: int = 2):
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise QueueError(f"max_attempts must be a whole number >= 1, got {max_attempts!r}")
        self.max_attempts = max_attempts
        try:
            lease_s = float(lease_s)
        except (TypeError, ValueError):
            raise QueueError(f"lease_s must be a number of seconds, got {lease_s!r}") from None
        if not (math.isfinite(lease_s) and lease_s > 0):
            raise QueueError(f"lease_s must be a positive number of seconds, got {lease_s!r}")
        self.lease_s = lease_s
        self.products_dir = Path(products_dir)
        self._local = threading.local()
        self.path = self.products_dir / QUEUE
        try:
            self.products_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise QueueError(f"cannot create the products folder {self.products_dir}: {e}") from None
        if self.path.exists() and not self.path.is_file():
            raise QueueError(f"{self.path} is not a file: cannot hold the job queue")
        self._init_db()

    def __repr__(self) -> str:
        return f"JobQueue({str(self.products_dir)!r}, lease_s={self.lease_s})"

    # -- connection handling -------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                  check_same_thread=True)
        except sqlite3.Error as e:
            raise QueueError(f"cannot open the job queue {self.path}: {e}") from None
        try:
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; durable across app crashes
        except sqlite3.Error as e:
            con.close()
            raise _queue_error(self.path, e) from None
        return con

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (opened on first use, again after a fork or an error).
        It runs in autocommit mode: no transaction, hence no lock, outlives a call."""
        local = self._local
        con = getattr(local, "con", None)
        if con is None or getattr(local, "pid", None) != os.getpid():
            con = local.con = self._open()
            local.pid = os.getpid()
        try:
            yield con
        except sqlite3.Error as e:
            self.close()
            raise _queue_error(self.path, e) from None

    def close(self) -> None:
        """Close this thread's connection (the next call opens a new one)."""
        con = getattr(self._local, "con", None)
        self._local.con = None
        if con is not None and getattr(self._local, "pid", None) == os.getpid():
            try:
                con.close()
            except sqlite3.Error:
                pass

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d.pop("_local", None)
        return d

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taking the write lock at once (BEGIN IMMEDIATE)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _init_db(self) -> None:
        with self._connect() as con:
            mode = con.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise QueueError(f"cannot put the job queue {self.path} in WAL mode (got {mode!r}); "
                                     "is the products folder on a network file system?")
            con.execute("BEGIN IMMEDIATE")
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables:
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            con.execute(stmt)
                    con.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?), ('application', ?)",
                                (str(SCHEMA_VERSION), APPLICATION))
                else:
                    self._check_schema(con, tables)
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _check_schema(self, con, tables: set[str]) -> None:
        if "meta" not in tables or "jobs" not in tables:
            raise QueueError(f"{self.path} is an SQLite database but not a job queue "
                             f"(tables: {', '.join(sorted(tables))})")
        meta = dict(con.execute("SELECT key, value FROM meta"))
        version = meta.get("schema_version")
        if meta.get("application") != APPLICATION or version is None:
            raise QueueError(f"{self.path} is an SQLite database but not a job queue (no queue schema version)")
        try:
            v = int(version)
        except ValueError:
            raise QueueError(f"{self.path}: unreadable queue schema version {version!r}") from None
        if v > SCHEMA_VERSION:
            raise QueueError(f"{self.path} was written by a newer version of the queue (schema {v}; "
                             f"this code knows {SCHEMA_VERSION}): upgrade the software")
        if v < 2:  # schema 1 -> 2: monotonic leases (old rows keep their wall-clock lease)
            cols = {r[1] for r in con.execute("PRAGMA table_info(jobs)")}
            for col, typ in (("lease_mono", "REAL"), ("boot_id", "TEXT")):
                if col not in cols:
                    con.execute(f"ALTER TABLE jobs ADD COLUMN {col} {typ}")
        if v < 3:  # schema 2 -> 3: the workers table
            con.execute(_WORKERS_SCHEMA)
        if v < SCHEMA_VERSION:
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    # -- reading -------------------------------------------------------------------------

    def get(self, job_id) -> Job:
        """The job with this id; QueueError if there is none."""
        jid = _job_id(job_id)
        self._reap_if_due()
        with self._connect() as con:
            r = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (jid,)).fetchone()
        if r is None:
            raise QueueError(f"no job {jid} in the queue {self.path}")
        return _row_to_job(r)

    def list(self, status=None, limit=50) -> list[Job]:
        """Jobs, newest first; ``status`` one status or a list of them (None: all)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise QueueError(f"limit must be a positive integer, got {_short(limit)}")
        limit = min(limit, 100_000)
        statuses = self._statuses(status)
        self._reap_if_due()
        sql = f"SELECT {_COLUMNS} FROM jobs"
        args: list = []
        if statuses is not None:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args += statuses
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._connect() as con:
            rows = con.execute(sql, args).fetchall()
        return [_row_to_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present, zero when none)."""
        self._reap_if_due()
        with self._connect() as con:
            got = dict(con.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
        return {s: int(got.get(s, 0)) for s in STATUSES}

    def is_cancel_requested(self, job_id) -> bool:
        """True if the job was cancelled (or a cancel of the running job was requested),
        or it no longer exists."""
        jid = _job_id(job_id)
        with self._connect() as con:
            r = con.execute("SELECT status, cancel_requested FROM jobs WHERE id = ?", (jid,)).fetchone()
        return r is None or r[0] == "cancelled" or bool(r[1])

    @staticmethod
    def _statuses(status) -> list[str] | None:
        if status is None:
            return None
        items = [status] if isinstance(status, str) else list(status)
        for s in items:
            if s not in STATUSES:
                raise QueueError(f"unknown job status {_short(s)}: expected one of {', '.join(STATUSES)}")
        return items

    # -- submitting and cancelling -------------------------------------------------------

    def submit(self, tiles=None, bbox=None, force=False, submitted_by="") -> Job:
        """Queue a reprocessing job for cell ids ``tiles`` or for the EPSG:3413 box ``bbox``
        (exactly one). An identical pending or running job (same cells or box, same
        ``force``, no cancel requested) is returned instead of queueing a duplicate."""
        if (tiles is None) == (bbox is None):
            raise QueueError("give exactly one of tiles (cell ids) or bbox (xmin, ymin, xmax, ymax)")
        tiles_n = normalise_tiles(tiles) if tiles is not None else None
        bbox_n = normalise_bbox(bbox) if bbox is not None else None
        force = bool(force)
        who = _clip("" if submitted_by is None else str(submitted_by), MAX_NAME_CHARS)
        tiles_j = json.dumps(tiles_n) if tiles_n is not None else None
        bbox_j = json.dumps(list(bbox_n)) if bbox_n is not None else None
        key = json.dumps({"tiles": tiles_n, "bbox": list(bbox_n) if bbox_n else None, "force": force},
                         sort_keys=True)
        with self._write() as con:
            r = con.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE dedup_key = ? AND status IN ('pending', 'running') "
                "AND cancel_requested = 0 ORDER BY id LIMIT 1", (key,)).fetchone()
            if r is not None:
                return _row_to_job(r)
            _, now = _now()
            cur = con.execute(
                "INSERT INTO jobs (status, tiles, bbox, force, dedup_key, created_at, submitted_by) "
                "VALUES ('pending', ?, ?, ?, ?, ?, ?)", (tiles_j, bbox_j, int(force), key, now, who))
            r = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _row_to_job(r)

    def cancel(self, job_id) -> Job:
        """Cancel a job: a pending one becomes *cancelled* at once; for a running one a cancel
        is requested (the worker stops at its next heartbeat and finishes it as cancelled).
        QueueError for a finished or unknown job."""
        jid = _job_id(job_id)
        with self._write() as con:
            r = con.execute("SELECT status FROM jobs WHERE id = ?", (jid,)).fetchone()
            if r is None:
                raise QueueError(f"no job {jid} in the queue {self.path}")
            status = r[0]
            _, now = _now()
            if status == "pending":
                con.execute("UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = ?, "
                            "message = 'cancelled before it started' WHERE id = ?", (now, jid))
            elif status == "running":
                con.execute("UPDATE jobs SET cancel_requested = 1, message = 'cancel requested' WHERE id = ?",
                            (jid,))
            else:
                raise QueueError(f"job {jid} is already {status}: only pending or running jobs can be cancelled")
            r = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (jid,)).fetchone()
        return _row_to_job(r)

    # -- the worker side -----------------------------------------------------------------

    def claim(self, worker: str) -> Job | None:
        """Take the oldest pending job for ``worker`` (reaping dead jobs first): it becomes
        *running* with a lease of ``lease_s`` seconds. None when nothing is pending."""
        w = _worker_name(worker)
        with self._write() as con:
            self._reap(con)
            r = con.execute("SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1").fetchone()
            if r is None:
                return None
            t, now = _now()
            con.execute(
                "UPDATE jobs SET status = 'running', worker = ?, started_at = ?, heartbeat_at = ?, "
                "lease_expires = ?, lease_mono = ?, boot_id = ?, attempts = attempts + 1, progress = 0, "
                "message = 'started' WHERE id = ? AND status = 'pending'",
                (w, now, t, t + self.lease_s, time.monotonic() + self.lease_s, _BOOT_ID, r[0]))
            r = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (r[0],)).fetchone()
        return _row_to_job(r)

    def heartbeat(self, job_id, worker, progress=None, message=None, log_line=None) -> bool:
        """Renew the lease of a running job owned by ``worker`` and record progress (0..1),
        a status message and log lines (kept: the last LOG_TAIL_LINES). Returns False when
        the worker must stop: a cancel was requested (the update is still recorded), or the
        job is no longer this worker's running job (nothing is changed then)."""
        jid = _job_id(job_id)
        w = _worker_name(worker)
        if progress is not None:
            try:
                progress = float(progress)
            except (TypeError, ValueError):
                raise QueueError(f"progress must be a number in 0..1, got {_short(progress)}") from None
            progress = min(1.0, max(0.0, progress)) if math.isfinite(progress) else None
        with self._write() as con:
            r = con.execute("SELECT status, worker, cancel_requested, log_tail FROM jobs WHERE id = ?",
                            (jid,)).fetchone()
            if r is None or r[0] != "running" or r[1] != w:
                return False
            t, _ = _now()
            sets = ["heartbeat_at = ?", "lease_expires = ?", "lease_mono = ?", "boot_id = ?"]
            args: list = [t, t + self.lease_s, time.monotonic() + self.lease_s, _BOOT_ID]
            if progress is not None:
                sets.append("progress = ?")
                args.append(progress)
            if message is not None:
                sets.append("message = ?")
                args.append(_clip(message, MAX_MESSAGE_CHARS))
            if log_line is not None:
                sets.append("log_tail = ?")
                args.append(_append_log(r[3], log_line))
            con.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*args, jid))
            return not r[2]

    def finish(self, job_id, worker, ok: bool, message="") -> Job:
        """End a running job of ``worker``: *done* if ``ok`` else *failed*; *cancelled* when a
        cancel had been requested. QueueError if the job is not this worker's running job
        (for instance it was reaped after its lease expired)."""
        jid = _job_id(job_id)
        w = _worker_name(worker)
        with self._write() as con:
            r = con.execute("SELECT status, worker, cancel_requested FROM jobs WHERE id = ?", (jid,)).fetchone()
            if r is None:
                raise QueueError(f"no job {jid} in the queue {self.path}")
            if r[0] != "running" or r[1] != w:
                raise QueueError(f"job {jid} is not running for worker {w!r} (status {r[0]}, "
                                 f"worker {r[1]!r}): cannot finish it")
            t, now = _now()
            if r[2]:
                status = "cancelled"
                message = f"cancelled on request{': ' + str(message) if message else ''}"
            else:
                status = "done" if ok else "failed"
            sets = "status = ?, finished_at = ?, heartbeat_at = ?, lease_expires = NULL, lease_mono = NULL, message = ?"
            args = [status, now, t, _clip(message, MAX_MESSAGE_CHARS)]
            if status == "done":
                sets += ", progress = 1"
            con.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*args, jid))
            r = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (jid,)).fetchone()
        return _row_to_job(r)

    # -- workers -------------------------------------------------------------------------

    def announce(self, worker, job_id=None, stopped: bool = False) -> None:
        """Record that ``worker`` is alive (idle, or running ``job_id``), or that it stopped.
        A worker announces itself every poll and with every heartbeat."""
        w = _worker_name(worker)
        jid = None if job_id is None else _job_id(job_id)
        t = time.time()
        with self._write() as con:
            con.execute("INSERT INTO workers (name, started_at, seen_at, seen_mono, boot_id, job_id, stopped) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at, "
                        "seen_mono = excluded.seen_mono, boot_id = excluded.boot_id, job_id = excluded.job_id, "
                        "stopped = excluded.stopped",
                        (w, t, t, time.monotonic(), _BOOT_ID, jid, int(bool(stopped))))

    def workers(self, alive_within_s: float = 30.0) -> list[dict]:
        """Workers seen in the last ``alive_within_s`` seconds and not stopped, most recent
        first: ``name``, ``seen_s_ago``, ``job_id`` (None when idle), ``started_at`` (ISO).
        On this boot the age is measured on the monotonic clock (a wall-clock step does not
        revive or bury a worker); a worker of another boot is never alive."""
        with self._connect() as con:
            rows = con.execute("SELECT name, started_at, seen_at, seen_mono, boot_id, job_id FROM workers "
                               "WHERE stopped = 0").fetchall()
        out = []
        for name, started, seen, mono, boot, jid in rows:
            if boot is not None and _BOOT_ID is not None:
                age = time.monotonic() - mono if boot == _BOOT_ID and mono is not None else math.inf
            else:
                age = time.time() - seen
            if age <= alive_within_s:
                out.append({"name": name, "seen_s_ago": max(age, 0.0), "job_id": jid, "started_at": _iso(started)})
        return sorted(out, key=lambda w: w["seen_s_ago"])

    def reap(self) -> list[int]:
        """Every running job whose lease expired (its worker died or hung) goes back to
        *pending* while it has been claimed fewer than ``max_attempts`` times, else ends
        *failed* with the message 'worker <w> stopped heartbeating at <time> (lease expired)',
        or *cancelled* if a cancel had been requested. Returns their ids."""
        with self._write() as con:
            return self._reap(con)

    def _reap(self, con) -> list[int]:
        t, now = _now()
        rows = con.execute("SELECT id, worker, heartbeat_at, cancel_requested, log_tail, attempts FROM jobs "
                           f"WHERE {_EXPIRED} ORDER BY id", _expired_args()).fetchall()
        for jid, w, hb, cancel, tail, attempts in rows:
            reason = f"worker {w} stopped heartbeating at {_iso(hb) or 'an unknown time'} (lease expired)"
            if not cancel and int(attempts) < self.max_attempts:  # another worker may try again
                msg = f"{reason}; queued again (attempt {int(attempts) + 1} of {self.max_attempts})"
                con.execute("UPDATE jobs SET status = 'pending', worker = NULL, lease_expires = NULL, lease_mono = NULL, "
                            "message = ?, log_tail = ? WHERE id = ?",
                            (msg, _append_log(tail, f"{now} {msg}"), jid))
                continue
            status = "cancelled" if cancel else "failed"
            con.execute("UPDATE jobs SET status = ?, finished_at = ?, lease_expires = NULL, lease_mono = NULL, message = ?, "
                        "log_tail = ? WHERE id = ?",
                        (status, now, reason, _append_log(tail, f"{now} {reason}"), jid))
        return [r[0] for r in rows]

    def _reap_if_due(self) -> None:
        """Reap from a read call only when an expired lease exists (a cheap read first);
        a read-only products folder just skips it."""
        with self._connect() as con:
            due = con.execute(f"SELECT 1 FROM jobs WHERE {_EXPIRED} LIMIT 1", _expired_args()).fetchone()
        if due:
            try:
                self.reap()
            except QueueError as e:
                if "readonly" not in str(e).replace(" ", "").lower():
                    raise


def _queue_error(path: Path, e: sqlite3.Error) -> QueueError:
    text = str(e)
    if isinstance(e, sqlite3.OperationalError):
        if "locked" in text or "busy" in text:
            return QueueError(f"the job queue {path} stayed locked by another process for more than "
                              f"{BUSY_TIMEOUT_S:.0f} s: {text}")
        return QueueError(f"the job queue {path} cannot be used: {text}")
    return QueueError(f"the job queue {path} is not a usable queue database (not SQLite or corrupt): {text}")


def _append_log(tail: str, lines) -> str:
    """``tail`` plus ``lines`` (a string, possibly multi-line, or a list), keeping the last
    LOG_TAIL_LINES lines of at most MAX_LINE_CHARS characters each."""
    if isinstance(lines, str):
        new = lines.splitlines() or [""]
    elif isinstance(lines, Iterable):
        new = [ln for x in lines for ln in (str(x).splitlines() or [""])]
    else:
        new = str(lines).splitlines() or [""]
    old = tail.splitlines() if tail else []
    kept = (old + [_clip(ln, MAX_LINE_CHARS) for ln in new])[-LOG_TAIL_LINES:]
    return "\n".join(kept)
