"""The one way the client's local SQLite files (state database, case store) run a transaction.

Invariants: the caller's lock is held for the whole transaction (the connection is shared by
threads); a write transaction takes the write lock at once (BEGIN IMMEDIATE), a read one sees
one snapshot (BEGIN); an exception inside rolls back and propagates unchanged; a failed BEGIN
or COMMIT rolls back and raises the caller's own error (naming its file and what to do).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator

from protocol.errors import CaseBridgeError


@contextlib.contextmanager
def transaction(
    db: sqlite3.Connection,
    lock: threading.Lock | threading.RLock,
    storage_error: Callable[[sqlite3.Error], CaseBridgeError],
    *,
    write: bool = True,
) -> Iterator[sqlite3.Connection]:
    with lock:
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as e:
            raise storage_error(e) from e
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise storage_error(e) from e
