"""The hub's case store: cases, per-origin counts, sightings, the outbox, accounts; SQLite or PostgreSQL.

Owns every table and statement of a hotline hub (docs/hotlines.md): one ``HubStore`` API over two
backends chosen by the database argument: a file path (SQLite, the embedded default) or a
``postgresql://`` URL (PostgreSQL through psycopg 3, for production). Every change that must not be
lost or doubled is one transaction: a report's sighting with the outbox messages it causes, a
received message, an analyst's decision with its messages. Must not touch the network, DNS,
signatures or what a message means (``tools.hotline.cases`` builds and checks those).

Idempotency lives here: a report id is counted once (``case_reports``), a device is one sighting
per case per UTC day (``sightings``), an origin's counts are replaced only by a higher revision, and
the outbox holds one message per destination and case (the newest state), deleted only when the
destination acknowledged that very revision.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from agent.core.errors import ConfigError

STATUSES = ("new", "takedown_requested", "removed", "rejected")
TERMINAL = ("removed", "rejected")
CASE_COLUMNS = ("id", "period", "url", "host", "ip", "country", "source", "list", "entry", "signal",
                "responsible", "status", "status_by", "created_at", "takedown_at", "removed_at",
                "rejected_at", "rev")
COUNT_COLUMNS = ("origin", "sightings", "reports", "first_seen", "last_seen", "revision")

_TABLES = [
    """CREATE TABLE IF NOT EXISTS cases (
        id TEXT PRIMARY KEY, period TEXT NOT NULL, url TEXT, host TEXT NOT NULL, ip TEXT, country TEXT,
        source TEXT NOT NULL, list TEXT NOT NULL, entry TEXT NOT NULL, signal TEXT NOT NULL,
        responsible TEXT, status TEXT NOT NULL, status_by TEXT, created_at TEXT NOT NULL,
        takedown_at TEXT, removed_at TEXT, rejected_at TEXT, rev BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS cases_status ON cases (status, responsible)",
    """CREATE TABLE IF NOT EXISTS case_counts (
        case_id TEXT NOT NULL, origin TEXT NOT NULL, sightings BIGINT NOT NULL, reports BIGINT NOT NULL,
        first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, revision BIGINT NOT NULL,
        PRIMARY KEY (case_id, origin))""",
    """CREATE TABLE IF NOT EXISTS sightings (
        case_id TEXT NOT NULL, day TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (case_id, day, device))""",
    "CREATE TABLE IF NOT EXISTS case_reports (report_id TEXT PRIMARY KEY, case_id TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS outbox (
        dest TEXT NOT NULL, case_id TEXT NOT NULL, rev BIGINT NOT NULL, body TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, attempts BIGINT NOT NULL, next_at DOUBLE PRECISION NOT NULL,
        last_error TEXT, refused TEXT, PRIMARY KEY (dest, case_id))""",
    """CREATE TABLE IF NOT EXISTS accounts (
        name TEXT PRIMARY KEY, hash TEXT NOT NULL, created_at TEXT NOT NULL)""",
]


def now_iso(t: Optional[float] = None) -> str:
    """UTC time as YYYY-MM-DDTHH:MM:SSZ (the store's time format)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


class _Tx:
    """One open transaction: ``run(sql, params)`` with ``?`` placeholders, returns the cursor."""

    def __init__(self, cur, placeholder):
        self._cur = cur
        self._ph = placeholder

    def run(self, sql: str, params: Iterable = ()):
        """Execute one statement."""
        if self._ph != "?":
            sql = sql.replace("?", self._ph)
        self._cur.execute(sql, tuple(params))
        return self._cur

    def one(self, sql: str, params: Iterable = ()):
        """The first row or None."""
        return self.run(sql, params).fetchone()

    def all(self, sql: str, params: Iterable = ()):
        """Every row."""
        return self.run(sql, params).fetchall()


class HubStore:
    """The store API; a backend supplies ``_connect``, ``_transaction`` and its placeholder."""

    placeholder = "?"
    kind = "?"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        with self.tx() as t:
            for sql in _TABLES:
                t.run(sql)

    # -- transactions -----------------------------------------------------------------------
    @contextmanager
    def tx(self):
        """A transaction (serialised in this process); commits on success, rolls back on error."""
        with self._lock:
            with self._transaction() as cur:
                yield _Tx(cur, self.placeholder)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # -- cases ------------------------------------------------------------------------------
    @staticmethod
    def _case_row(row) -> Optional[dict]:
        return dict(zip(CASE_COLUMNS, row)) if row else None

    def _case(self, t: _Tx, case_id: str) -> Optional[dict]:
        return self._case_row(t.one("SELECT %s FROM cases WHERE id=?" % ",".join(CASE_COLUMNS), (case_id,)))

    def _counts(self, t: _Tx, case_id: str) -> Dict[str, dict]:
        rows = t.all("SELECT %s FROM case_counts WHERE case_id=? ORDER BY origin" % ",".join(COUNT_COLUMNS),
                     (case_id,))
        return {r[0]: dict(zip(COUNT_COLUMNS, r)) for r in rows}

    def _insert_case(self, t: _Tx, case: dict, created_at: str) -> bool:
        row = dict(case, status="new", status_by=None, created_at=created_at, takedown_at=None,
                   removed_at=None, rejected_at=None, rev=0)
        cur = t.run("INSERT INTO cases (%s) VALUES (%s) ON CONFLICT (id) DO NOTHING"
                    % (",".join(CASE_COLUMNS), ",".join("?" * len(CASE_COLUMNS))),
                    [row[c] for c in CASE_COLUMNS])
        return cur.rowcount == 1

    def _bump(self, t: _Tx, case_id: str) -> None:
        t.run("UPDATE cases SET rev=rev+1 WHERE id=?", (case_id,))

    def _enqueue(self, t: _Tx, case_id: str, messages: List[Tuple[str, str]]) -> None:
        if not messages:
            return
        rev = t.one("SELECT rev FROM cases WHERE id=?", (case_id,))[0]
        now = time.time()
        for dest, body in messages:
            t.run("INSERT INTO outbox (dest, case_id, rev, body, created_at, attempts, next_at, last_error, refused) "
                  "VALUES (?,?,?,?,?,0,?,NULL,NULL) ON CONFLICT (dest, case_id) DO UPDATE SET "
                  "rev=excluded.rev, body=excluded.body, attempts=0, next_at=excluded.next_at, "
                  "last_error=NULL, refused=NULL", (dest, case_id, rev, body, now, now))

    def ingest(self, report_id: str, case: dict, origin: str, day: str, device: str, hour: str,
               messages: Callable[[dict, Dict[str, dict]], List[Tuple[str, str]]]) -> Optional[dict]:
        """Count one report of this hub's own devices; None if its id was counted before.

        ``case``: the case fields (id ... responsible) for a new case; ``messages(case, counts)``
        returns the (destination, body) pairs the new state is owed, queued in the same transaction.
        Returns {"case": id, "new_case": bool, "new_sighting": bool}.
        """
        with self.tx() as t:
            if t.run("INSERT INTO case_reports (report_id, case_id) VALUES (?,?) ON CONFLICT (report_id) DO NOTHING",
                     (report_id, case["id"])).rowcount != 1:
                return None
            new_case = self._insert_case(t, case, now_iso())
            new_sighting = t.run("INSERT INTO sightings (case_id, day, device) VALUES (?,?,?) "
                                 "ON CONFLICT (case_id, day, device) DO NOTHING",
                                 (case["id"], day, device)).rowcount == 1
            inc = 1 if new_sighting else 0
            if t.run("UPDATE case_counts SET sightings=sightings+?, reports=reports+1, revision=revision+1, "
                     "first_seen=CASE WHEN first_seen > ? THEN ? ELSE first_seen END, "
                     "last_seen=CASE WHEN last_seen < ? THEN ? ELSE last_seen END "
                     "WHERE case_id=? AND origin=?",
                     (inc, hour, hour, hour, hour, case["id"], origin)).rowcount != 1:
                t.run("INSERT INTO case_counts (case_id, origin, sightings, reports, first_seen, last_seen, revision) "
                      "VALUES (?,?,?,?,?,?,?)", (case["id"], origin, inc, 1, hour, hour, 1))
            self._bump(t, case["id"])
            stored = self._case(t, case["id"])
            self._enqueue(t, case["id"], messages(stored, self._counts(t, case["id"])))
            return {"case": case["id"], "new_case": new_case, "new_sighting": new_sighting}

    def receive(self, case: dict, origin: str, counts: Optional[dict], status: Optional[dict],
                status_allowed: Callable[[dict], bool],
                messages: Callable[[dict, Dict[str, dict], bool], List[Tuple[str, str]]]) -> str:
        """Apply a message from another hub; returns "new", "updated" or "same" (nothing changed).

        ``counts``: the sender's own counts, kept only if their revision is higher than the one held.
        ``status``: applied if ``status_allowed(stored case)`` and it moves the case forward (a
        terminal status never changes). ``messages(case, counts, status_changed)``: what this hub
        owes others afterwards, queued in the same transaction.
        """
        with self.tx() as t:
            new_case = self._insert_case(t, case, now_iso())
            changed = new_case
            if counts is not None:
                old = t.one("SELECT revision FROM case_counts WHERE case_id=? AND origin=?", (case["id"], origin))
                vals = (counts["sightings"], counts["reports"], counts["first_seen"], counts["last_seen"],
                        counts["revision"])
                if old is None:
                    t.run("INSERT INTO case_counts (case_id, origin, sightings, reports, first_seen, last_seen, "
                          "revision) VALUES (?,?,?,?,?,?,?)", (case["id"], origin) + vals)
                    changed = True
                elif old[0] < counts["revision"]:
                    t.run("UPDATE case_counts SET sightings=?, reports=?, first_seen=?, last_seen=?, revision=? "
                          "WHERE case_id=? AND origin=?", vals + (case["id"], origin))
                    changed = True
            stored = self._case(t, case["id"])
            status_changed = False
            if status is not None and status_allowed(stored):
                status_changed = self._apply_status(t, stored, status["status"], origin, status)
                changed = changed or status_changed
            if changed:
                self._bump(t, case["id"])
                stored = self._case(t, case["id"])
                self._enqueue(t, case["id"], messages(stored, self._counts(t, case["id"]), status_changed))
            return "new" if new_case else ("updated" if changed else "same")

    def _apply_status(self, t: _Tx, case: dict, status: str, by: str, times: dict) -> bool:
        cur = case["status"]
        if status not in STATUSES or cur in TERMINAL or STATUSES.index(status) <= STATUSES.index(cur):
            return False
        at = now_iso()
        sets = {"status": status, "status_by": by}
        for col in ("takedown_at", "removed_at", "rejected_at"):
            if times.get(col) and not case.get(col):
                sets[col] = times[col]
        col = {"takedown_requested": "takedown_at", "removed": "removed_at", "rejected": "rejected_at"}[status]
        sets.setdefault(col, case.get(col) or at)
        if status == "removed" and not (case.get("takedown_at") or sets.get("takedown_at")):
            sets["takedown_at"] = sets[col]
        t.run("UPDATE cases SET %s WHERE id=?" % ",".join("%s=?" % k for k in sets), list(sets.values()) + [case["id"]])
        return True

    def set_status(self, case_id: str, status: str, by: str,
                   messages: Callable[[dict, Dict[str, dict], bool], List[Tuple[str, str]]]) -> Optional[dict]:
        """An analyst's decision; returns the updated case, or None if it did not move the case forward."""
        with self.tx() as t:
            case = self._case(t, case_id)
            if case is None or not self._apply_status(t, case, status, by, {}):
                return None
            self._bump(t, case_id)
            case = self._case(t, case_id)
            self._enqueue(t, case_id, messages(case, self._counts(t, case_id), True))
            return case

    def case(self, case_id: str) -> Optional[dict]:
        """One case with its per-origin counts (``counts``) and totals, or None."""
        with self.tx() as t:
            c = self._case(t, case_id)
            if c is not None:
                c["counts"] = self._counts(t, case_id)
                _totals(c)
            return c

    def cases(self, status: Optional[Iterable[str]] = None, responsible: Optional[str] = None,
              limit: int = 1000, offset: int = 0) -> List[dict]:
        """Cases (newest first) with counts and totals, filtered by status and responsible hotline."""
        where, params = [], []
        if status:
            status = list(status)
            where.append("status IN (%s)" % ",".join("?" * len(status)))
            params += status
        if responsible is not None:
            where.append("responsible=?")
            params.append(responsible)
        sql = "SELECT %s FROM cases%s ORDER BY created_at DESC, id LIMIT ? OFFSET ?" % (
            ",".join(CASE_COLUMNS), " WHERE " + " AND ".join(where) if where else "")
        with self.tx() as t:
            out = [self._case_row(r) for r in t.all(sql, params + [int(limit), int(offset)])]
            if out:
                ids = [c["id"] for c in out]
                counts: Dict[str, Dict[str, dict]] = {}
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    for r in t.all("SELECT case_id, %s FROM case_counts WHERE case_id IN (%s)"
                                   % (",".join(COUNT_COLUMNS), ",".join("?" * len(chunk))), chunk):
                        counts.setdefault(r[0], {})[r[1]] = dict(zip(COUNT_COLUMNS, r[1:]))
                for c in out:
                    c["counts"] = counts.get(c["id"], {})
                    _totals(c)
        return out

    def count_cases(self) -> int:
        """Number of cases."""
        with self.tx() as t:
            return t.one("SELECT COUNT(*) FROM cases")[0]

    def count_reports(self) -> int:
        """Number of distinct report ids counted from this hub's own devices."""
        with self.tx() as t:
            return t.one("SELECT COUNT(*) FROM case_reports")[0]

    # -- outbox -----------------------------------------------------------------------------
    def outbox_due(self, now: Optional[float] = None, limit: int = 50) -> List[dict]:
        """Messages due for (re)sending, oldest first; refused ones wait for an operator."""
        now = time.time() if now is None else now
        with self.tx() as t:
            rows = t.all("SELECT dest, case_id, rev, body, attempts FROM outbox WHERE refused IS NULL AND next_at<=? "
                         "ORDER BY next_at, created_at LIMIT ?", (now, int(limit)))
        return [dict(zip(("dest", "case_id", "rev", "body", "attempts"), r)) for r in rows]

    def outbox_done(self, dest: str, case_id: str, rev: int) -> bool:
        """The destination acknowledged revision ``rev``: forget it (not a newer one queued since)."""
        with self.tx() as t:
            return t.run("DELETE FROM outbox WHERE dest=? AND case_id=? AND rev=?", (dest, case_id, rev)).rowcount == 1

    def outbox_retry(self, dest: str, case_id: str, rev: int, next_at: float, error: str) -> None:
        """Sending failed (network, 5xx): try again at ``next_at``."""
        with self.tx() as t:
            t.run("UPDATE outbox SET attempts=attempts+1, next_at=?, last_error=? WHERE dest=? AND case_id=? AND rev=?",
                  (next_at, error[:500], dest, case_id, rev))

    def outbox_refused(self, dest: str, case_id: str, rev: int, reason: str) -> None:
        """The destination refused the message for good (4xx): keep it, visible, until a newer state replaces it."""
        with self.tx() as t:
            t.run("UPDATE outbox SET attempts=attempts+1, refused=? WHERE dest=? AND case_id=? AND rev=?",
                  (reason[:500], dest, case_id, rev))

    def outbox(self) -> List[dict]:
        """Everything waiting in the outbox (for status pages and tests)."""
        with self.tx() as t:
            rows = t.all("SELECT dest, case_id, rev, attempts, next_at, last_error, refused FROM outbox "
                         "ORDER BY created_at")
        return [dict(zip(("dest", "case_id", "rev", "attempts", "next_at", "last_error", "refused"), r)) for r in rows]

    # -- accounts ---------------------------------------------------------------------------
    def set_account(self, name: str, password_hash: str) -> None:
        """Create or replace an analyst account."""
        with self.tx() as t:
            t.run("INSERT INTO accounts (name, hash, created_at) VALUES (?,?,?) ON CONFLICT (name) DO UPDATE "
                  "SET hash=excluded.hash", (name, password_hash, now_iso()))

    def account_hash(self, name: str) -> Optional[str]:
        """The stored password hash of ``name``, or None."""
        with self.tx() as t:
            r = t.one("SELECT hash FROM accounts WHERE name=?", (name,))
        return r[0] if r else None


def _totals(case: dict) -> None:
    counts = case["counts"].values()
    case["sightings"] = sum(c["sightings"] for c in counts)
    case["reports"] = sum(c["reports"] for c in counts)
    case["first_seen"] = min((c["first_seen"] for c in counts), default=None)
    case["last_seen"] = max((c["last_seen"] for c in counts), default=None)
    case["origins"] = sorted(case["counts"])


class SqliteHubStore(HubStore):
    """SQLite file (WAL, synchronous=FULL: a commit is on disk before the ack it allows)."""

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        import sqlite3
        self.path = str(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ConfigError("database folder %s does not exist" % folder)
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._errors = (sqlite3.DatabaseError,)
            super().__init__()
        except sqlite3.DatabaseError as e:
            raise ConfigError("%s is not a usable hub database: %s" % (self.path, e)) from None

    @contextmanager
    def _transaction(self):
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")


class PostgresHubStore(HubStore):
    """PostgreSQL through psycopg 3 (one connection, transactions serialised in this process)."""

    kind = "postgresql"
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError("a postgresql:// database needs psycopg 3 (pip install 'psycopg[binary]')") from None
        self.url = url
        try:
            self._conn = psycopg.connect(url, autocommit=False, connect_timeout=10)
        except psycopg.Error as e:
            raise ConfigError("cannot connect to the hub database: %s" % str(e).strip().splitlines()[0]) from None
        super().__init__()

    @contextmanager
    def _transaction(self):
        with self._conn.transaction():
            with self._conn.cursor() as cur:
                yield cur


def open_store(db: str) -> HubStore:
    """A ``postgresql://`` (or ``postgres://``) URL opens PostgreSQL, anything else is an SQLite file."""
    if db.startswith(("postgresql://", "postgres://")):
        return PostgresHubStore(db)
    return SqliteHubStore(db)
