"""``rts jobs work``: the worker loop that carries out reprocessing jobs from the queue.

The queue (:mod:`data_products.queue`, SQLite in WAL mode in the products folder) is
filled by ``rts jobs submit`` or the dashboard. A worker claims the oldest pending job,
runs it through the same :func:`pipeline.orchestration.run.run` as ``rts run`` (restricted to the job's
cells or bounding box), renews its lease while it works (a background heartbeat, plus one
after every cell with the progress and a log line), and marks the job done or failed with
the reason. A job whose worker dies stops heartbeating and is marked failed by the next
queue access once its lease expires; a cancelled job is stopped after the cells in flight.
Several workers may serve one queue: a job is claimed by exactly one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

from data_products.queue import JobQueue, QueueError

from pipeline import console
from pipeline.config import Config
from pipeline.orchestration.run import Cancelled, run

log = logging.getLogger(__name__)

#: consecutive queue errors a worker rides out (with backoff) before it stops
MAX_QUEUE_ERRORS = 10


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Heartbeat(threading.Thread):
    """Renews a job's lease every ``period_s`` while the run works on a long cell."""

    def __init__(self, queue: JobQueue, job_id: int, worker: str, period_s: float):
        super().__init__(daemon=True)
        self.queue, self.job_id, self.worker, self.period_s = queue, job_id, worker, period_s
        self.stopped = threading.Event()
        self.cancelled = False

    def run(self) -> None:
        while not self.stopped.wait(self.period_s):
            try:
                if not self.queue.heartbeat(self.job_id, self.worker):
                    self.cancelled = True
                self.queue.announce(self.worker, self.job_id)
            except Exception as exc:  # a busy database must not kill the worker
                log.warning("heartbeat for job %s failed: %s", self.job_id, exc)


def _announce(queue: JobQueue, worker: str, job_id: int | None = None, stopped: bool = False) -> None:
    """Tell the queue this worker is alive (the dashboard shows it); never fatal."""
    try:
        queue.announce(worker, job_id, stopped=stopped)
    except QueueError as exc:
        log.warning("worker %s: could not announce itself: %s", worker, exc)


def work_one(queue: JobQueue, strips: str, climate: str | None, cfg: Config, *, workers: int = 1,
             scheduler: str | None = None, worker: str | None = None, progress: bool = False) -> int | None:
    """Claim and run one job; returns its id, or None when the queue had nothing pending."""
    worker = worker or worker_name()
    job = queue.claim(worker)
    if job is None:
        return None
    log.info("job %d claimed by %s: %s", job.id, worker, job.describe())
    _announce(queue, worker, job.id)
    beat = _Heartbeat(queue, job.id, worker, max(1.0, queue.lease_s / 3.0))
    beat.start()

    def on_progress(fraction: float, message: str) -> bool:
        try:
            ok = queue.heartbeat(job.id, worker, progress=min(max(fraction, 0.0), 1.0), message=message,
                                 log_line=message)
        except Exception as exc:  # a busy queue must not abort the run; the background beat goes on
            log.warning("progress of job %s not recorded: %s", job.id, exc)
            ok = True
        return ok and not beat.cancelled

    def finish(ok: bool, message: str) -> None:
        try:
            queue.finish(job.id, worker, ok=ok, message=message)
        except QueueError as exc:  # e.g. the lease expired and the job was reaped meanwhile
            log.error("job %s: could not record its end (%s): %s", job.id, message, exc)

    try:
        summary = run(strips, queue.products_dir, cfg, tiles=job.tiles, bbox=job.bbox, climate=climate,
                      workers=workers, scheduler=scheduler, force=job.force, progress=progress,
                      on_progress=on_progress)
        failures = summary["failures"]
        msg = (f"{summary['done']} cells processed, {summary['skipped']} up to date, {summary['failed']} failed; "
               f"{summary['slumps']} slumps published")
        if failures:
            msg += "; " + "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:5])
        ok = summary["cells"] > 0 and summary["failed"] < max(summary["cells"], 1)
        if summary["cells"] == 0:
            msg = "no strip covers the requested cells"
        finish(ok, msg)
    except Cancelled as exc:
        finish(False, f"cancelled: {exc}")
    except Exception as exc:  # the job fails with its reason; the worker goes on
        log.exception("job %d failed", job.id)
        finish(False, f"{type(exc).__name__}: {exc}")
    finally:
        beat.stopped.set()
    return job.id


def work(products: str | Path, strips: str, climate: str | None, cfg: Config, *, workers: int = 1,
         scheduler: str | None = None, once: bool = False, poll_s: float = 5.0, max_jobs: int | None = None,
         progress: bool = False) -> int:
    """Serve the queue: run jobs until it is empty (``once``) or forever, polling every
    ``poll_s``. Returns the number of jobs run."""
    queue = JobQueue(products)
    worker = worker_name()
    console.say(f"rts jobs work: {worker} serving {queue.path}")
    try:
        return _serve(queue, worker, strips, climate, cfg, workers, scheduler, once, poll_s, max_jobs, progress)
    finally:
        _announce(queue, worker, stopped=True)


def _serve(queue: JobQueue, worker: str, strips: str, climate: str | None, cfg: Config, workers: int,
           scheduler: str | None, once: bool, poll_s: float, max_jobs: int | None, progress: bool) -> int:
    n = 0
    errors = 0
    while max_jobs is None or n < max_jobs:
        _announce(queue, worker)
        try:
            jid = work_one(queue, strips, climate, cfg, workers=workers, scheduler=scheduler, worker=worker,
                           progress=progress)
            errors = 0
        except QueueError as exc:  # a busy or briefly unavailable queue: wait and try again
            errors += 1
            if errors > MAX_QUEUE_ERRORS:
                raise
            wait = min(poll_s * 2 ** (errors - 1), 60.0)
            console.say(f"rts jobs work: queue error ({exc}); retrying in {wait:.0f} s "
                        f"({errors} of {MAX_QUEUE_ERRORS})")
            time.sleep(wait)
            continue
        if jid is None:
            if once:
                break
            time.sleep(poll_s)
            continue
        n += 1
        try:
            job = queue.get(jid)
            console.say(f"rts jobs work: job {jid} {job.status}: {job.message}")
        except QueueError as exc:
            console.say(f"rts jobs work: job {jid} ran; its state could not be read back ({exc})")
    return n
