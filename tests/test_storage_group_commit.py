"""Group commit (``Database.grouped``): concurrent writers share one transaction, and each
still gets its own outcome. Real SQLite files, real threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from p2p_offers.node.storage.database import Database, Tx


def _seen(db: Database) -> set[str]:
    return {r[0] for r in db.rows("SELECT id FROM seen")}


def _insert(key: str):
    def work(tx: Tx) -> str:
        tx.execute("INSERT INTO seen (id, owner, seq, expires) VALUES (?, 'o', 1, 0)", (key,))
        return key

    return work


def test_a_failing_job_undoes_only_itself_and_raises_to_its_caller(tmp_path: Path) -> None:
    db = Database(tmp_path / "node.db")
    assert db.grouped(_insert("a")) == "a"
    with pytest.raises(Exception, match="UNIQUE"):
        db.grouped(_insert("a"))  # a duplicate key: this job's savepoint is rolled back

    def half_then_fail(tx: Tx) -> None:
        _insert("half")(tx)
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        db.grouped(half_then_fail)
    assert _seen(db) == {"a"}


def test_concurrent_writers_are_all_durable_with_their_own_results(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    db = Database(path)
    keys = [f"k{i}" for i in range(64)]
    results: dict[str, object] = {}
    after: list[str] = []
    start = threading.Barrier(len(keys))

    def writer(key: str) -> None:
        def work(tx: Tx) -> str:
            tx.after_commit(lambda: after.append(key))
            if key == "k7":
                raise ValueError(key)  # one failure among the group
            return _insert(key)(tx)

        start.wait()
        try:
            results[key] = db.grouped(work)
        except ValueError as exc:
            results[key] = exc

    threads = [threading.Thread(target=writer, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results.pop("k7"), ValueError)
    assert results == {k: k for k in keys if k != "k7"}
    assert sorted(after) == sorted(k for k in keys if k != "k7")  # the failed job's: dropped
    db.close()
    assert _seen(Database(path)) == set(keys) - {"k7"}  # durable: read back after reopening
