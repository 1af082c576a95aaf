"""The reprocessing job queue (data_products.queue): states, validation, deduplication,
several worker processes, dead workers, cancellation, persistence and bad files."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pytest

from data_products.queue import FINAL, LOG_TAIL_LINES, Job, JobQueue, QueueError
from data_products.schema import QUEUE

A = "36_25_2_1_07_13"
B = "36_25_2_1_07_14"
C = "36_25_2_1_08_13"


@pytest.fixture
def q(tmp_path):
    return JobQueue(tmp_path / "products")


def test_creates_folder_and_wal_db(tmp_path):
    q = JobQueue(tmp_path / "a" / "products")
    assert q.path == tmp_path / "a" / "products" / QUEUE and q.path.is_file()
    con = sqlite3.connect(q.path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert dict(con.execute("SELECT key, value FROM meta"))["schema_version"] == "3"
    finally:
        con.close()


def test_submit_list_get_cancel(q):
    j1 = q.submit(tiles=[B, A], submitted_by="alice")
    assert isinstance(j1, Job)
    assert j1.status == "pending" and j1.tiles == [A, B] and j1.bbox is None and not j1.force
    assert j1.submitted_by == "alice" and j1.attempts == 0 and j1.progress == 0.0
    assert j1.created_at.endswith("+00:00") and j1.started_at is None and j1.worker is None
    j2 = q.submit(bbox=(-2_000_000, -1_000_000, -1_990_000, -990_000), force=True)
    assert j2.bbox == (-2_000_000.0, -1_000_000.0, -1_990_000.0, -990_000.0) and j2.tiles is None and j2.force
    assert [j.id for j in q.list()] == [j2.id, j1.id]  # newest first
    assert [j.id for j in q.list(limit=1)] == [j2.id]
    assert q.get(j1.id) == j1
    assert q.get(str(j1.id)).id == j1.id
    c = q.cancel(j1.id)
    assert c.status == "cancelled" and c.finished_at is not None
    assert [j.id for j in q.list(status="pending")] == [j2.id]
    assert [j.id for j in q.list(status=["cancelled"])] == [j1.id]
    assert q.counts() == {"pending": 1, "running": 0, "done": 0, "failed": 0, "cancelled": 1}
    with pytest.raises(QueueError, match="already cancelled"):
        q.cancel(j1.id)
    with pytest.raises(QueueError, match="no job 999"):
        q.get(999)
    with pytest.raises(QueueError, match="no job 999"):
        q.cancel(999)
    assert j2.to_dict()["bbox"] == list(j2.bbox) and j1.describe() == "2 cells"


@pytest.mark.parametrize("tiles", [
    ["'; DROP TABLE jobs; --"],
    ["../../etc"],
    [A, "../../etc/passwd"],
    ["36_25_2_1_7_13"],       # cell index not zero-padded
    ["99_25_2_1_07_13"],      # tile row outside the grid
    ["36_25_3_1_07_13"],      # subtile index 3
    ["36_25_2_1_26_13"],      # cell index 26
    [A + "\n"  + "x"],
    ["x" * 100_000],
    [None],
    [36],
    [],
])
def test_invalid_tiles_rejected(q, tiles):
    with pytest.raises(QueueError) as e:
        q.submit(tiles=tiles)
    bad = [t for t in tiles if t != A]
    if bad and isinstance(bad[0], str):
        assert repr(bad[0][:20])[:-1] in str(e.value)  # names the bad id (shortened if huge)
    assert len(str(e.value)) < 400
    assert q.list() == []
    # the table is still there
    assert q.submit(tiles=[A]).status == "pending"


@pytest.mark.parametrize("bbox", [
    (0, 0, 0, 10),                 # xmin == xmax
    (10, 0, 0, 10),                # inverted
    (0, 10, 10, 0),
    (0, 0, float("nan"), 10),
    (0, 0, float("inf"), 10),
    (0, 0, 10),
    (0, 0, 10, 10, 20),
    ("0", "0", "x; DROP TABLE jobs", "10"),
    (True, 0, 10, 10),
    (-5e6, 0, 10, 10),             # beyond the grid
    "../../etc",
    42,
])
def test_invalid_bbox_rejected(q, bbox):
    with pytest.raises(QueueError, match="bbox"):
        q.submit(bbox=bbox)
    assert q.list() == []


def test_exactly_one_of_tiles_or_bbox_and_other_bad_arguments(q):
    with pytest.raises(QueueError, match="exactly one"):
        q.submit()
    with pytest.raises(QueueError, match="exactly one"):
        q.submit(tiles=[A], bbox=(0, 0, 10, 10))
    with pytest.raises(QueueError, match="status"):
        q.list(status="running; DROP TABLE jobs")
    with pytest.raises(QueueError, match="limit"):
        q.list(limit=0)
    with pytest.raises(QueueError, match="job id"):
        q.get("1 OR 1=1")
    with pytest.raises(QueueError, match="worker"):
        q.claim("")
    with pytest.raises(QueueError, match="lease_s"):
        JobQueue(q.products_dir, lease_s=0)
    # a hostile submitter name is stored as text, nothing else happens
    j = q.submit(tiles=[A], submitted_by="'); DELETE FROM jobs; --")
    assert q.get(j.id).submitted_by == "'); DELETE FROM jobs; --"
    # bbox as a string and a single id as a string
    assert q.submit(bbox="0,0,2000,2000").bbox == (0.0, 0.0, 2000.0, 2000.0)
    assert q.submit(tiles=B).tiles == [B]


def test_dedup_pending_and_running_not_finished(q):
    j1 = q.submit(tiles=[A, B])
    assert q.submit(tiles=[B, A, A], submitted_by="bob").id == j1.id   # same normalised request
    assert q.submit(tiles=[" " + A, B]).id == j1.id
    assert q.submit(tiles=[A, B], force=True).id != j1.id              # force differs
    assert q.submit(tiles=[A]).id != j1.id
    b1 = q.submit(bbox=(0, 0, 2000, 2000))
    assert q.submit(bbox=[0.0, 0.0, 2000.0, 2000.0]).id == b1.id
    assert len(q.list(status="pending")) == 4

    claimed = []
    while (job := q.claim("w1")) is not None:
        claimed.append(job.id)
    assert q.submit(tiles=[A, B]).id == j1.id                          # running: still deduplicated
    q.finish(j1.id, "w1", ok=True)
    j2 = q.submit(tiles=[A, B])                                        # done: a new job
    assert j2.id != j1.id and j2.status == "pending"
    q.cancel(j2.id)
    assert q.submit(tiles=[A, B]).id not in (j1.id, j2.id)             # cancelled: a new job


def test_claim_heartbeat_finish(q):
    j = q.submit(tiles=[A])
    k = q.submit(tiles=[B])
    c = q.claim("w1")
    assert c.id == j.id and c.status == "running" and c.worker == "w1" and c.attempts == 1
    assert c.started_at is not None and c.lease_expires_at is not None
    assert q.claim("w2").id == k.id
    assert q.claim("w2") is None
    assert q.heartbeat(j.id, "w1", progress=0.5, message="cell 1 of 2", log_line="first line")
    assert not q.heartbeat(j.id, "w2", progress=0.9)                    # not w2's job
    for i in range(LOG_TAIL_LINES + 10):
        q.heartbeat(j.id, "w1", log_line=f"line {i}")
    got = q.get(j.id)
    assert got.progress == 0.5 and got.message == "cell 1 of 2"
    lines = got.log_tail.splitlines()
    assert len(lines) == LOG_TAIL_LINES and lines[-1] == f"line {LOG_TAIL_LINES + 9}"
    with pytest.raises(QueueError, match="not running for worker 'w2'"):
        q.finish(j.id, "w2", ok=True)
    done = q.finish(j.id, "w1", ok=True, message="1 cell, 2 slumps")
    assert done.status == "done" and done.progress == 1.0 and done.finished_at and done.finished
    failed = q.finish(k.id, "w2", ok=False, message="no strips")
    assert failed.status == "failed" and failed.message == "no strips"
    with pytest.raises(QueueError):
        q.finish(j.id, "w1", ok=True)
    assert not q.heartbeat(j.id, "w1")                                  # finished: stop


def test_cancel_running_seen_by_heartbeat(q):
    j = q.submit(tiles=[A])
    assert q.claim("w1").id == j.id
    assert q.heartbeat(j.id, "w1", progress=0.2)
    assert not q.is_cancel_requested(j.id)
    c = q.cancel(j.id)
    assert c.status == "running" and c.cancel_requested
    assert q.is_cancel_requested(j.id)
    assert q.heartbeat(j.id, "w1", progress=0.3, log_line="stopping") is False
    assert q.submit(tiles=[A]).id != j.id       # a job being cancelled does not absorb new submissions
    end = q.finish(j.id, "w1", ok=False, message="stopped after 0 cells")
    assert end.status == "cancelled" and end.finished_at and "stopped after 0 cells" in end.message
    assert end.log_tail.endswith("stopping")


def test_dead_worker_reaped_as_failed(tmp_path):
    q = JobQueue(tmp_path, lease_s=0.5, max_attempts=1)
    j = q.submit(tiles=[A])
    k = q.submit(tiles=[B])
    assert q.claim("worker-7").id == j.id        # ... and then the worker dies: no heartbeat
    assert q.reap() == []                        # lease still valid
    time.sleep(0.7)
    assert q.reap() == [j.id]
    dead = JobQueue(tmp_path, max_attempts=1).get(j.id)
    assert dead.status == "failed" and dead.finished_at
    assert dead.message.startswith("worker worker-7 stopped heartbeating at ")
    assert dead.message.endswith("(lease expired)") and dead.message in dead.log_tail
    assert q.reap() == []
    assert not q.heartbeat(j.id, "worker-7")    # a late heartbeat is refused
    with pytest.raises(QueueError):
        q.finish(j.id, "worker-7", ok=True)
    # claim reaps first; get/list reap too, so nothing stays 'running' without a worker
    assert q.claim("worker-8").id == k.id
    time.sleep(0.7)
    assert q.get(k.id).status == "failed"
    assert q.list(status="running") == []


def test_a_reaped_job_is_retried_then_fails_for_good(tmp_path):
    q = JobQueue(tmp_path, lease_s=0.3, max_attempts=2)
    j = q.submit(tiles=[A])
    assert q.claim("w1").id == j.id          # the first worker dies
    time.sleep(0.5)
    assert q.reap() == [j.id]
    again = q.get(j.id)
    assert again.status == "pending" and again.worker in (None, "") and "attempt 2 of 2" in again.message
    second = q.claim("w2")
    assert second.id == j.id and second.attempts == 2
    time.sleep(0.5)                            # ... and so does the second
    assert q.reap() == [j.id]
    assert q.get(j.id).status == "failed"
    with pytest.raises(QueueError, match="max_attempts"):
        JobQueue(tmp_path, max_attempts=0)


def _worker(products, name, out):
    q = JobQueue(products, lease_s=30)
    got = []
    while (job := q.claim(name)) is not None:
        q.heartbeat(job.id, name, progress=0.5, log_line=f"{name} on {job.id}")
        q.finish(job.id, name, ok=True)
        got.append(job.id)
    out.put((name, got))


def test_two_worker_processes_claim_each_job_once(tmp_path):
    q = JobQueue(tmp_path)
    ids = [q.submit(tiles=[f"36_25_2_1_{i + 1:02d}_01"]).id for i in range(20)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), f"w{i}", out)) for i in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    claimed = [i for got in results.values() for i in got]
    assert sorted(claimed) == sorted(ids)               # every job once, none twice
    jobs = q.list(limit=100)
    assert all(j.status == "done" and j.attempts == 1 for j in jobs)
    assert {j.worker for j in jobs} <= {"w0", "w1"}
    for j in jobs:
        assert j.log_tail == f"{j.worker} on {j.id}"


def test_survives_reopening(tmp_path):
    q = JobQueue(tmp_path)
    j = q.submit(tiles=[A], submitted_by="alice")
    k = q.submit(bbox=(0, 0, 4000, 4000))
    q.claim("w1")
    q.heartbeat(j.id, "w1", progress=0.25, message="half-way", log_line="hello")
    del q
    q2 = JobQueue(tmp_path)
    got = q2.get(j.id)
    assert got.status == "running" and got.progress == 0.25 and got.log_tail == "hello"
    assert q2.get(k.id).status == "pending"
    assert q2.submit(bbox=(0, 0, 4000, 4000)).id == k.id
    assert q2.finish(j.id, "w1", ok=True).status == "done"
    assert [x.id for x in JobQueue(tmp_path).list()] == [k.id, j.id]


def test_not_a_queue_file_gives_clear_error(tmp_path):
    (tmp_path / QUEUE).write_bytes(b"this is not a database, just some text\n" * 100)
    with pytest.raises(QueueError, match=str(tmp_path / QUEUE).replace("\\", "\\\\")):
        JobQueue(tmp_path)


def test_other_sqlite_db_or_newer_schema_rejected(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    con = sqlite3.connect(other / QUEUE)
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(QueueError, match="not a job queue"):
        JobQueue(other)

    q = JobQueue(tmp_path / "newer")
    con = sqlite3.connect(q.path)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(QueueError, match="newer"):
        JobQueue(tmp_path / "newer")


def test_corrupt_queue_file_gives_clear_error(tmp_path):
    q = JobQueue(tmp_path)
    for i in range(50):
        q.submit(tiles=[f"36_25_2_1_{i % 25 + 1:02d}_{i // 25 + 1:02d}"])
    con = sqlite3.connect(q.path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(q.path.read_bytes())
    data[100:len(data)] = b"\xff" * (len(data) - 100)  # keep the header, destroy every page
    q.path.write_bytes(bytes(data))
    with pytest.raises(QueueError, match=QUEUE):
        JobQueue(tmp_path).list()


def test_final_states():
    assert set(FINAL) == {"done", "failed", "cancelled"}


def test_one_queue_shared_by_threads(tmp_path):
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    q = JobQueue(tmp_path)
    ids = [q.submit(tiles=[f"36_25_2_1_{i + 1:02d}_02"]).id for i in range(12)]

    def work(name):
        got = []
        while (job := q.claim(name)) is not None:
            assert q.heartbeat(job.id, name, progress=1.0)
            q.finish(job.id, name, ok=True)
            got.append(job.id)
        return got

    with ThreadPoolExecutor(4) as ex:
        claimed = [i for got in ex.map(work, ["t0", "t1", "t2", "t3"]) for i in got]
    assert sorted(claimed) == ids
    q2 = pickle.loads(pickle.dumps(q))  # a queue handle can be sent to another process
    assert q2.counts()["done"] == 12


def test_a_worker_rides_out_a_transient_queue_error(tmp_path, monkeypatch):
    from pipeline.orchestration import jobs
    from pipeline.config import Config

    calls = {"n": 0}

    def flaky(queue, *a, **k):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise QueueError("the job queue stayed locked by another process")
        return None  # then: nothing pending

    monkeypatch.setattr(jobs, "work_one", flaky)
    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    assert jobs.work(tmp_path, "strips", None, Config(), once=True, poll_s=0.01) == 0
    assert calls["n"] == 3


def test_a_wall_clock_step_neither_reaps_a_live_worker_nor_a_reboot_keeps_a_dead_one(tmp_path, monkeypatch):
    from data_products import queue as qmod

    q = JobQueue(tmp_path, lease_s=30)
    j = q.submit(tiles=[A])
    assert q.claim("w1").id == j.id
    real_time = qmod.time.time
    monkeypatch.setattr(qmod.time, "time", lambda: real_time() + 7200)  # NTP jumps two hours ahead
    assert q.reap() == [] and q.get(j.id).status == "running"
    monkeypatch.setattr(qmod.time, "time", real_time)
    monkeypatch.setattr(qmod, "_BOOT_ID", "another-boot")  # the machine rebooted: the worker is gone
    assert q.reap() == [j.id] and q.get(j.id).status == "pending"


def _queue_of_schema(path, version: int, *downgrade: str) -> Job:
    """A queue in ``path`` holding one pending job, taken back to schema ``version`` by the
    ``downgrade`` statements; returns the job."""
    q = JobQueue(path)
    j = q.submit(tiles=[A])
    q.close()
    con = sqlite3.connect(path / QUEUE)
    for stmt in (*downgrade, f"UPDATE meta SET value = '{version}' WHERE key = 'schema_version'"):
        con.execute(stmt)
    con.commit()
    con.close()
    return j


def _schema_version(path) -> str:
    con = sqlite3.connect(path / QUEUE)
    try:
        return con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    finally:
        con.close()


def test_a_schema_1_queue_is_migrated_in_place(tmp_path):
    j = _queue_of_schema(tmp_path, 1, "ALTER TABLE jobs DROP COLUMN lease_mono", "ALTER TABLE jobs DROP COLUMN boot_id",
                         "DROP TABLE workers")
    q2 = JobQueue(tmp_path)
    assert q2.get(j.id).status == "pending" and q2.claim("w").id == j.id
    q2.announce("w")  # the workers table of schema 3 is there too
    assert [w["name"] for w in q2.workers()] == ["w"] and _schema_version(tmp_path) == "3"


def test_workers_are_alive_while_they_announce_and_gone_when_stopped_silent_or_rebooted(tmp_path, monkeypatch):
    from data_products import queue as qmod

    q = JobQueue(tmp_path)
    assert q.workers() == []
    q.announce("host:1")
    j = q.submit(tiles=[A])
    q.announce("host:2", j.id)
    alive = {w["name"]: w for w in q.workers(alive_within_s=30)}
    assert set(alive) == {"host:1", "host:2"} and alive["host:2"]["job_id"] == j.id and alive["host:1"]["job_id"] is None
    q.announce("host:1", stopped=True)
    assert [w["name"] for w in q.workers()] == ["host:2"]
    real_mono = qmod.time.monotonic
    monkeypatch.setattr(qmod.time, "monotonic", lambda: real_mono() + 31)  # silent for 31 s
    assert q.workers(alive_within_s=30) == []
    monkeypatch.setattr(qmod.time, "monotonic", real_mono)
    monkeypatch.setattr(qmod, "_BOOT_ID", "another-boot")  # announced before a reboot: gone
    assert q.workers(alive_within_s=3600) == []


def test_a_schema_2_queue_gains_the_workers_table_in_place(tmp_path):
    j = _queue_of_schema(tmp_path, 2, "DROP TABLE workers")
    q2 = JobQueue(tmp_path)
    q2.announce("w")
    assert [w["name"] for w in q2.workers()] == ["w"] and q2.get(j.id).status == "pending"
    assert _schema_version(tmp_path) == "3"
