"""The durable job table: one SQLite file under ``--data``, shared by the server's threads.

Every change of a job's state is one short transaction, so a crash (even kill -9) leaves each
job in a state :meth:`JobStore.recover` can settle at the next start. Files of a job live in
``DATA/jobs/<id>/``; the table holds no file names, only ids, options and the owner's key id.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
#: A job interrupted this many times while running (a crash, kill -9) fails instead of running again.
MAX_ATTEMPTS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  status TEXT NOT NULL,
  kind TEXT NOT NULL,
  ext TEXT NOT NULL,
  options TEXT NOT NULL,
  callback_url TEXT,
  idem_key TEXT,
  error TEXT,
  created REAL NOT NULL,
  started REAL,
  finished REAL,
  attempts INTEGER NOT NULL DEFAULT 0,
  bytes_in INTEGER NOT NULL DEFAULT 0,
  bytes_out INTEGER NOT NULL DEFAULT 0,
  expired INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(owner, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass
class Job:
    """One row of the table."""

    id: str
    owner: str
    status: str
    kind: str
    ext: str
    options: dict[str, Any]
    callback_url: str | None
    idem_key: str | None
    error: str | None
    created: float
    started: float | None
    finished: float | None
    attempts: int
    bytes_in: int
    bytes_out: int
    expired: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        d["options"] = json.loads(d["options"])
        d["expired"] = bool(d["expired"])
        return cls(**d)


def new_job_id() -> str:
    """A random id (128 bits): ids are not guessable, though a key still sees only its own jobs."""
    return secrets.token_hex(16)


class JobStore:
    """The job table. Thread-safe: one connection, one lock (jobs change a few times each)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a job acknowledged with 202 survives a power cut
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, args: tuple = ()) -> Job | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return Job.from_row(row) if row else None

    def add(self, job: Job) -> Job:
        """Insert ``job``; with an idempotency key already used by its owner, return that job instead."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, owner, status, kind, ext, options, callback_url, idem_key, error, created, "
                    "started, finished, attempts, bytes_in, bytes_out, expired) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job.id, job.owner, job.status, job.kind, job.ext, json.dumps(job.options), job.callback_url,
                     job.idem_key, job.error, job.created, job.started, job.finished, job.attempts, job.bytes_in,
                     job.bytes_out, int(job.expired)))
                self._bump("bytes_in", job.bytes_in)
                return job
            except sqlite3.IntegrityError:
                row = self._db.execute("SELECT * FROM jobs WHERE owner=? AND idem_key=?",
                                       (job.owner, job.idem_key)).fetchone()
                if row is None:
                    raise
                return Job.from_row(row)

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or None (also when ``owner`` is given and is not the job's)."""
        if owner is None:
            return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))
        return self._one("SELECT * FROM jobs WHERE id=? AND owner=?", (job_id, owner))

    def by_idempotency_key(self, owner: str, key: str) -> Job | None:
        return self._one("SELECT * FROM jobs WHERE owner=? AND idem_key=?", (owner, key))

    def claim_next(self) -> Job | None:
        """Mark the oldest queued job running and return it (None when the queue is empty)."""
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET status='running', started=?, attempts=attempts+1 WHERE id=("
                "SELECT id FROM jobs WHERE status='queued' ORDER BY created LIMIT 1) RETURNING *",
                (time.time(),)).fetchone()
        return Job.from_row(row) if row else None

    def finish(self, job_id: str, status: str, error: str | None = None, bytes_out: int = 0) -> Job | None:
        """Record the end of a running job; None if it is gone (deleted meanwhile) or not running."""
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET status=?, error=?, finished=?, bytes_out=? WHERE id=? AND status='running' "
                "RETURNING *", (status, error, time.time(), bytes_out, job_id)).fetchone()
            if row is not None:
                self._bump("bytes_out", bytes_out)
        return Job.from_row(row) if row else None

    def requeue(self, job_id: str) -> None:
        """A running job goes back to the queue (the server stops; it runs again from the start)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET status='queued', started=NULL WHERE id=? AND status='running'",
                             (job_id,))

    def fail(self, job_id: str, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET status='failed', error=?, finished=? WHERE id=? AND status IN "
                             "('queued','running')", (error, time.time(), job_id))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    def mark_expired(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET expired=1 WHERE id=?", (job_id,))

    def ended_before(self, cutoff: float) -> list[Job]:
        """Ended jobs whose results are still kept and that ended before ``cutoff``."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE finished IS NOT NULL AND finished < ? AND expired=0 "
                                    "AND status IN ('succeeded','failed','cancelled')", (cutoff,)).fetchall()
        return [Job.from_row(r) for r in rows]

    def with_status(self, *statuses: str) -> list[Job]:
        marks = ",".join("?" * len(statuses))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created",
                                    statuses).fetchall()
        return [Job.from_row(r) for r in rows]

    def recover(self) -> tuple[list[str], list[str]]:
        """At startup: jobs left running by a crash go back to the queue, or fail after
        :data:`MAX_ATTEMPTS` starts. Returns (requeued ids, failed ids)."""
        requeued, failed = [], []
        for job in self.with_status("running"):
            if job.attempts >= MAX_ATTEMPTS:
                self.fail(job.id, f"interrupted {job.attempts} times while running (server crash?); not retried")
                failed.append(job.id)
            else:
                self.requeue(job.id)
                requeued.append(job.id)
        return requeued, failed

    def counts(self) -> dict[str, int]:
        """Jobs by status (every status, 0 included)."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        out = {s: 0 for s in STATUSES}
        out.update({r[0]: r[1] for r in rows})
        return out

    def _bump(self, name: str, by: int) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                         "value = value + excluded.value", (name, int(by)))

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0
