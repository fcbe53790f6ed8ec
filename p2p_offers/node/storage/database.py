"""The node's one SQLite database: a connection, durable transactions, a versioned schema.

What must survive a crash is what the node has promised: every version it
signed (so a restarted node republishes them and never reuses a seq), every
receipt it gave or got, its ledger, its orders and the bids it sent without an
answer. Each state change is one transaction, committed with
``synchronous=FULL`` before the caller acknowledges anything.

There is one connection, guarded by a lock: writes are serialized anyway, and
reads are indexed point lookups. Each aggregate has its repository in this
package; a change spanning several (a fill: offer versions, receipts, ledger
entries) shares one ``Tx``. Work that must follow the commit but must not undo
it (telling others) is queued with ``Tx.after_commit``.

Concurrent writers that need not be ordered against each other (the taker's
receipts of many bids in flight) use ``grouped``: whoever takes the lock first
runs every write queued by then in ONE transaction, each in its own savepoint
(one failing undoes only itself), and commits once; nobody is answered before
that commit. A burst of N bids then costs one fsync, not N, and the other
threads spend their wait queued rather than each committing in turn.

Opening a database brings its schema to ``schema.VERSION`` (``PRAGMA
user_version``), migrating a file written by an older node in place.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from p2p_offers.node.storage import schema

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
T = TypeVar("T")
MAX_INTEGER = 2**63 - 1  # SQLite's largest integer: a bound for every integer used in a query


class Tx:
    """One write transaction: statements, and what to run once it has committed."""

    __slots__ = ("_after", "_db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._after: list[Callable[[], object]] = []

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._db.executemany(sql, rows)

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._db.execute(sql, args).fetchone()
        return row

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the transaction is durable; a failure is logged, not raised."""
        self._after.append(action)


class _Job(Generic[T]):
    """One caller's part of a group commit: its work, its own ``Tx`` (for its after-commit
    actions) and, once the group committed or failed, its outcome."""

    __slots__ = ("done", "error", "result", "tx", "work")

    def __init__(self, work: Callable[[Tx], T], tx: Tx) -> None:
        self.work = work
        self.tx = tx
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


class Database:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()  # guards ``_queued`` only; never held while waiting
        self._queued: list[_Job[Any]] = []
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            schema.migrate(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Tx]:
        """One durable write transaction; rolled back if the block raises.

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL``:
        atomic, and survives a crash of the process, but a power cut may undo it). Only
        for hints whose loss costs redoing work, never for anything promised to anyone:
        it spares the fsync, and the other writers the wait for it under the lock.
        """
        tx = Tx(self._db)
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield tx
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")
        for action in tx._after:
            try:
                action()
            except Exception:
                log.exception("an action after a commit failed (the commit stands)")

    def grouped(self, work: Callable[[Tx], T]) -> T:
        """``work(tx)`` committed durably, possibly in one transaction with other callers'
        (see the module docstring); its exception is raised here, and undoes only its own."""
        job: _Job[T] = _Job(work, Tx(self._db))
        with self._queue_lock:
            self._queued.append(job)
        with self._lock:
            if not job.done:
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._commit_group(batch)
        if job.error is not None:
            raise job.error
        for action in job.tx._after:
            try:
                action()
            except Exception:
                log.exception("an action after a commit failed (the commit stands)")
        return job.result  # type: ignore[return-value]  # set: ``work`` returned

    def _commit_group(self, batch: list[_Job[Any]]) -> None:
        """Run ``batch`` in one transaction (caller holds the lock); every job ends done."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for job in batch:
                self._db.execute("SAVEPOINT job")
                try:
                    job.result = job.work(job.tx)
                except BaseException as exc:
                    self._db.execute("ROLLBACK TO job")
                    job.error = exc
                    job.tx._after.clear()
                self._db.execute("RELEASE job")
            self._db.execute("COMMIT")
        except BaseException as exc:  # nothing of the group is durable: nobody succeeded
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            for job in batch:
                if job.error is None:
                    job.error = exc
        finally:
            for job in batch:
                job.done = True

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        """Several reads that see one state. Every statement runs on the one connection under
        one lock, so holding it keeps any write from committing between the reads (an order
        read row by row could show its fills from before a commit and its doubts from after)."""
        with self._lock:
            yield Tx(self._db)

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        with self._lock:
            row: Row | None = self._db.execute(sql, args).fetchone()
            return row

    def version(self) -> int:
        row = self.one("PRAGMA user_version")
        return int(row[0]) if row else 0
