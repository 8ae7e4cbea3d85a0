"""The scheduler's durable state: SQLite (WAL) in `<state_dir>/scheduler.sqlite`.

Requests, schedules with their batches, refusals, stored images and notifications. Every
accepted request, schedule, refusal and image is committed before the User is answered,
so a scheduler killed mid-run and opened again on the same directory loses nothing it
accepted. Changes of state (released, answered) and notifications are written behind, in
one transaction at most `FLUSH_WALL_SECONDS` or `FLUSH_ROWS` apart: one commit per
change cost seconds on a 12,000-device day. The first pending change also starts a timer
(`loop.call_later`), so the last changes of a burst are written even if no other write
follows (on a real or scaled clock within `FLUSH_WALL_SECONDS`). A hard kill can lose
that last sliver; those requests are then released again, which a device answers as it
did the first time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from scheduler.requests import (
    ActivationRequest,
    ImageUpdate,
    Priority,
    Refusal,
    RequestState,
    Schedule,
    ScheduleState,
    UpdateState,
)
from smets1.clock import wall_seconds
from smets1.eui64 import parse_eui64
from smets1.services import StoredImage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id INTEGER PRIMARY KEY,
    user INTEGER NOT NULL,
    campaign TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    firmware_hash BLOB NOT NULL,
    file_version INTEGER NOT NULL,
    large INTEGER NOT NULL,
    submitted_at REAL NOT NULL,
    priority TEXT NOT NULL,
    execution_time REAL NOT NULL,
    schedule_id INTEGER,
    planned_day INTEGER,
    state TEXT NOT NULL,
    held_day INTEGER,
    released_at REAL,
    completed_at REAL,
    failure TEXT,
    overdue INTEGER NOT NULL,
    trt_met INTEGER,
    duis_request_id TEXT,
    running_version INTEGER           -- what 11.2 read after the 11.3: what the User is told
);
CREATE INDEX IF NOT EXISTS requests_by_user ON requests (user, request_id);
CREATE UNIQUE INDEX IF NOT EXISTS requests_by_duis_id ON requests (duis_request_id);
CREATE TABLE IF NOT EXISTS schedules (
    schedule_id INTEGER PRIMARY KEY,
    user INTEGER NOT NULL,
    devices INTEGER NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    batches TEXT NOT NULL,            -- JSON {day: count}
    max_per_day INTEGER,
    start_day INTEGER NOT NULL,
    assigned INTEGER NOT NULL,
    moves INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user INTEGER NOT NULL,
    campaign TEXT NOT NULL,
    devices INTEGER NOT NULL,
    reason TEXT NOT NULL,
    earliest_day INTEGER,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    firmware_hash BLOB PRIMARY KEY,
    size_bytes INTEGER NOT NULL,
    file_version INTEGER NOT NULL,
    manufacturer_code INTEGER NOT NULL,
    image_type INTEGER NOT NULL,
    blocks INTEGER NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,            -- JSON
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user, id);
CREATE TABLE IF NOT EXISTS duis_requests (
    request_id TEXT PRIMARY KEY,      -- sender:target:counter, used once
    service_reference TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS image_updates (
    update_id INTEGER PRIMARY KEY,    -- SRV 11.1 requests, in order of acceptance
    user INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    firmware_hash BLOB NOT NULL,
    file_version INTEGER NOT NULL,
    submitted_at REAL NOT NULL,
    duis_request_id TEXT,
    state TEXT NOT NULL,
    stored_at REAL,
    failure TEXT,
    overdue INTEGER NOT NULL,
    image BLOB                        -- kept until stored: a restart sends it again
);
CREATE TABLE IF NOT EXISTS duis_counters (
    sender INTEGER PRIMARY KEY,       -- a User's EUI-64 (as a signed 64-bit integer)
    counter TEXT NOT NULL             -- the highest RequestID counter accepted from it
);
CREATE TABLE IF NOT EXISTS campaign_ledger (
    name TEXT PRIMARY KEY,            -- a config campaign: submitted once, whatever restarts
    user INTEGER NOT NULL,
    schedule_id INTEGER,              -- the schedule agreed for it, before its 11.3s went in
    submitted INTEGER NOT NULL DEFAULT 0
);
"""

#: Write-behind limits for changes of state.
FLUSH_WALL_SECONDS = 0.05
FLUSH_ROWS = 512
#: The longest single wait of the write-behind timer, in loop seconds. On a virtual
#: clock's loop (loop time is simulated) the timer doubles from FLUSH_WALL_SECONDS up to
#: this while little wall time passes, then writes anyway (at most about twice this after
#: the change): so a simulated run commits in batches, not once per change.
FLUSH_TIMER_MAX_SECONDS = 60.0

_REQUEST_COLUMNS = (
    "request_id, user, campaign, device_id, firmware_hash, file_version, large, submitted_at, "
    "priority, execution_time, schedule_id, planned_day, state, held_day, released_at, "
    "completed_at, failure, overdue, trt_met, duis_request_id, running_version"
)


_SCHEDULE_COLUMNS = (
    "user, devices, created_at, state, batches, max_per_day, start_day, assigned, moves"
)


def _s64(v: int) -> int:
    """EUI-64s fill 64 bits; SQLite integers are signed."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _u64(v: int) -> int:
    return v + (1 << 64) if v < 0 else v


def _opt_bool(v: bool | None) -> int | None:
    return None if v is None else int(v)


class Store:
    """One SQLite connection in autocommit mode; `None` as the folder keeps it in memory."""

    def __init__(self, state_dir: Path | None) -> None:
        if state_dir is None:
            path = ":memory:"
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            path = str(state_dir / "scheduler.sqlite")
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(requests)")}
        if "held_day" not in columns:  # a state directory from before held_day
            self.db.execute("ALTER TABLE requests ADD COLUMN held_day INTEGER")
        if "running_version" not in columns:  # ... and from before running_version
            self.db.execute("ALTER TABLE requests ADD COLUMN running_version INTEGER")
        self._dirty: dict[int, ActivationRequest] = {}
        self._notes: list[tuple[int, int, float, str, str]] = []
        row = self.db.execute("SELECT MAX(id) FROM notifications").fetchone()
        self._next_note = (row[0] or 0) + 1
        self._flushed_at = wall_seconds()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        #: RequestIDs of DUIS documents being carried out (recorded once accepted).
        self._duis_claims: set[str] = set()

    def close(self) -> None:
        self.flush()
        self._closed = True
        self.db.close()

    def _maybe_flush(self) -> None:
        pending = len(self._dirty) + len(self._notes)
        if pending >= FLUSH_ROWS or wall_seconds() - self._flushed_at >= FLUSH_WALL_SECONDS:
            self.flush()
        elif self._timer is None:
            # Nothing may follow this change: make sure it is written soon anyway.
            self._arm(FLUSH_WALL_SECONDS)

    def _arm(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside an event loop: close() flushes
            return
        self._timer = loop.call_later(delay, self._on_timer, delay, wall_seconds())

    def _on_timer(self, delay: float, armed_at: float) -> None:
        self._timer = None
        if self._closed or not (self._dirty or self._notes):
            return
        # A loop that keeps wall time (real, scaled clock) fires after about `delay`.
        wall_paced = wall_seconds() - armed_at >= delay / 2
        if wall_paced or delay * 2 > FLUSH_TIMER_MAX_SECONDS:
            self.flush()
        else:  # loop time ran ahead of wall time (a virtual clock): wait longer
            self._arm(delay * 2)

    def flush(self) -> None:
        """Write every pending change of state and notification in one transaction."""
        self._flushed_at = wall_seconds()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._dirty and not self._notes:
            return
        cols = [c.strip() for c in _REQUEST_COLUMNS.split(",")][1:]
        sets = ", ".join(f"{c} = ?" for c in cols)
        rows = [(*self._request_row(r)[1:], r.request_id) for r in self._dirty.values()]
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(f"UPDATE requests SET {sets} WHERE request_id = ?", rows)
            self.db.executemany(
                "INSERT INTO notifications (id, user, at, kind, payload) VALUES (?, ?, ?, ?, ?)",
                self._notes,
            )
        self._dirty.clear()
        self._notes.clear()

    # -- requests --------------------------------------------------------------------

    @staticmethod
    def _request_row(r: ActivationRequest) -> tuple[Any, ...]:
        return (
            r.request_id,
            _s64(r.user),
            r.campaign,
            _s64(r.device_id),
            r.firmware_hash,
            r.file_version,
            int(r.large),
            r.submitted_at,
            r.priority.value,
            r.execution_time,
            r.schedule_id,
            r.planned_day,
            r.state.value,
            r.held_day,
            r.released_at,
            r.completed_at,
            r.failure,
            int(r.overdue),
            _opt_bool(r.trt_met),
            r.duis_request_id,
            r.running_version,
        )

    def add_requests(self, reqs: list[ActivationRequest]) -> None:
        """Accepted requests: committed before the User is answered."""
        self.flush()
        marks = ",".join("?" * 21)
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                f"INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES ({marks})",
                [self._request_row(r) for r in reqs],
            )

    def save_request(self, r: ActivationRequest) -> None:
        """A change of state of an accepted request: written behind."""
        self._dirty[r.request_id] = r
        self._maybe_flush()

    def save_requests(self, reqs: list[ActivationRequest]) -> None:
        """Changes that must hold before the caller answers: written now."""
        for r in reqs:
            self._dirty[r.request_id] = r
        self.flush()

    def load_requests(self) -> list[ActivationRequest]:
        self.flush()
        cur = self.db.execute(f"SELECT {_REQUEST_COLUMNS} FROM requests ORDER BY request_id")
        out = []
        for row in cur:
            trt = row[18]
            out.append(
                ActivationRequest(
                    request_id=row[0],
                    user=_u64(row[1]),
                    campaign=row[2],
                    device_id=_u64(row[3]),
                    firmware_hash=bytes(row[4]),
                    file_version=row[5],
                    large=bool(row[6]),
                    submitted_at=row[7],
                    priority=Priority(row[8]),
                    execution_time=row[9],
                    schedule_id=row[10],
                    planned_day=row[11],
                    state=RequestState(row[12]),
                    held_day=row[13],
                    released_at=row[14],
                    completed_at=row[15],
                    failure=row[16],
                    overdue=bool(row[17]),
                    trt_met=None if trt is None else bool(trt),
                    duis_request_id=row[19],
                    running_version=row[20],
                )
            )
        return out

    def duis_id_taken(self, duis_request_id: str) -> bool:
        self.flush()
        for table, column in (("duis_requests", "request_id"), ("requests", "duis_request_id")):
            cur = self.db.execute(
                f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1", (duis_request_id,)
            )
            if cur.fetchone() is not None:
                return True
        return False

    def claim_duis_id(self, duis_request_id: str) -> bool:
        """Claim a RequestID for a document about to be carried out: False if it was used
        or another document holds the claim. Check and claim are one step (no await
        between them), so of concurrent documents with one RequestID only one gets it."""
        if duis_request_id in self._duis_claims or self.duis_id_taken(duis_request_id):
            return False
        self._duis_claims.add(duis_request_id)
        return True

    def release_duis_id(self, duis_request_id: str) -> None:
        """The claimed document was refused: its RequestID may be used again."""
        self._duis_claims.discard(duis_request_id)

    def record_duis_id(self, duis_request_id: str, service_reference: str, at: float) -> None:
        """Record a DUIS RequestID as used (every accepted document, whatever its SRV)."""
        self.db.execute(
            "INSERT OR IGNORE INTO duis_requests VALUES (?, ?, ?)",
            (duis_request_id, service_reference, at),
        )
        self._duis_claims.discard(duis_request_id)
        sender_text, _, rest = duis_request_id.partition(":")
        counter_text = rest.rpartition(":")[2]
        try:
            sender, counter = parse_eui64(sender_text), int(counter_text)
        except ValueError:  # not sender:target:counter; nothing to count
            return
        last = self.last_duis_counter(sender)
        if last is None or counter > last:
            self.db.execute(
                "INSERT OR REPLACE INTO duis_counters VALUES (?, ?)", (_s64(sender), str(counter))
            )

    def last_duis_counter(self, sender: int) -> int | None:
        """The highest RequestID counter accepted from `sender` (None: none yet). DUIS
        counters only grow: a signed request with one no greater is a replay."""
        row = self.db.execute(
            "SELECT counter FROM duis_counters WHERE sender = ?", (_s64(sender),)
        ).fetchone()
        return None if row is None else int(row[0])

    # -- schedules -------------------------------------------------------------------

    @staticmethod
    def _schedule_row(s: Schedule) -> tuple[Any, ...]:
        return (
            _s64(s.user),
            s.devices,
            s.created_at,
            s.state.value,
            json.dumps({str(d): n for d, n in sorted(s.batches.items())}),
            s.max_per_day,
            s.start_day,
            s.assigned,
            s.moves,
        )

    def add_schedule(self, s: Schedule) -> int:
        """A new schedule: committed, and its id given by the database (never reused, even
        after a restart: ids counted in memory once handed out one that was on disk)."""
        self.flush()
        cur = self.db.execute(
            f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self._schedule_row(s),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def save_schedule(self, s: Schedule) -> None:
        """A change to a schedule that `add_schedule` stored; it never creates one."""
        self.flush()
        sets = ", ".join(f"{c.strip()} = ?" for c in _SCHEDULE_COLUMNS.split(","))
        cur = self.db.execute(
            f"UPDATE schedules SET {sets} WHERE schedule_id = ?",
            (*self._schedule_row(s), s.schedule_id),
        )
        if cur.rowcount != 1:
            raise LookupError(f"schedule {s.schedule_id} is not in the store")

    def load_schedules(self) -> list[Schedule]:
        out = []
        for row in self.db.execute("SELECT * FROM schedules ORDER BY schedule_id"):
            out.append(
                Schedule(
                    schedule_id=row[0],
                    user=_u64(row[1]),
                    devices=row[2],
                    created_at=row[3],
                    state=ScheduleState(row[4]),
                    batches={int(d): n for d, n in json.loads(row[5]).items()},
                    max_per_day=row[6],
                    start_day=row[7],
                    assigned=row[8],
                    moves=row[9],
                )
            )
        return out

    # -- refusals and images ---------------------------------------------------------

    def add_refusal(self, r: Refusal) -> None:
        self.db.execute(
            "INSERT INTO refusals (user, campaign, devices, reason, earliest_day, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (_s64(r.user), r.campaign, r.devices, r.reason, r.earliest_day, r.at),
        )

    def load_refusals(self) -> list[Refusal]:
        cur = self.db.execute(
            "SELECT user, campaign, devices, reason, earliest_day, at FROM refusals ORDER BY id"
        )
        return [Refusal(_u64(row[0]), *row[1:]) for row in cur]

    def add_image(self, i: StoredImage) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                i.firmware_hash,
                i.size_bytes,
                i.file_version,
                i.manufacturer_code,
                i.image_type,
                i.blocks,
                i.stored_at,
            ),
        )

    def load_images(self) -> list[StoredImage]:
        cur = self.db.execute(
            "SELECT firmware_hash, size_bytes, file_version, manufacturer_code, image_type, "
            "blocks, stored_at FROM images"
        )
        return [StoredImage(bytes(row[0]), *row[1:]) for row in cur]

    # -- SRV 11.1 requests -------------------------------------------------------------
    # Few and rare (one per image a User sends): each change is committed at once.

    def add_update(self, u: ImageUpdate, image: bytes) -> None:
        self.db.execute(
            "INSERT INTO image_updates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                u.update_id,
                _s64(u.user),
                u.size_bytes,
                u.firmware_hash,
                u.file_version,
                u.submitted_at,
                u.duis_request_id,
                u.state.value,
                u.stored_at,
                u.failure,
                int(u.overdue),
                image if u.is_open else None,
            ),
        )

    def save_update(self, u: ImageUpdate) -> None:
        """Its state now; the image is dropped once the 11.1 is answered."""
        self.db.execute(
            "UPDATE image_updates SET firmware_hash = ?, file_version = ?, state = ?,"
            " stored_at = ?, failure = ?, overdue = ?,"
            " image = CASE WHEN ? THEN image ELSE NULL END WHERE update_id = ?",
            (
                u.firmware_hash,
                u.file_version,
                u.state.value,
                u.stored_at,
                u.failure,
                int(u.overdue),
                int(u.is_open),
                u.update_id,
            ),
        )

    def load_updates(self) -> list[ImageUpdate]:
        cur = self.db.execute(
            "SELECT update_id, user, size_bytes, firmware_hash, file_version, submitted_at,"
            " duis_request_id, state, stored_at, failure, overdue"
            " FROM image_updates ORDER BY update_id"
        )
        return [
            ImageUpdate(
                row[0],
                _u64(row[1]),
                row[2],
                bytes(row[3]),
                row[4],
                row[5],
                row[6],
                UpdateState(row[7]),
                row[8],
                row[9],
                bool(row[10]),
            )
            for row in cur
        ]

    def update_image(self, update_id: int) -> bytes | None:
        """The image of an 11.1 not yet stored (None once it is)."""
        row = self.db.execute(
            "SELECT image FROM image_updates WHERE update_id = ?", (update_id,)
        ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    # -- notifications ---------------------------------------------------------------

    def add_notification(self, user: int, at: float, kind: str, payload: dict[str, Any]) -> int:
        nid = self._next_note
        self._next_note += 1
        self._notes.append((nid, _s64(user), at, kind, json.dumps(payload)))
        self._maybe_flush()
        return nid

    def notifications(
        self, user: int, after: int = 0, limit: int = 100
    ) -> list[tuple[int, float, str, dict[str, Any]]]:
        self.flush()
        cur = self.db.execute(
            "SELECT id, at, kind, payload FROM notifications WHERE user = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (_s64(user), after, limit),
        )
        return [(row[0], row[1], row[2], json.loads(row[3])) for row in cur]

    def undelivered(self, users: set[int]) -> list[tuple[int, int, float, str, dict[str, Any]]]:
        self.flush()
        out: list[tuple[int, int, float, str, dict[str, Any]]] = []
        for user in users:
            cur = self.db.execute(
                "SELECT id, user, at, kind, payload FROM notifications "
                "WHERE user = ? AND delivered = 0 ORDER BY id",
                (_s64(user),),
            )
            out.extend((r[0], user, r[2], r[3], json.loads(r[4])) for r in cur)
        return out

    def mark_delivered(self, notification_id: int) -> None:
        self.flush()
        self.db.execute("UPDATE notifications SET delivered = 1 WHERE id = ?", (notification_id,))

    # -- campaign ledger -------------------------------------------------------------

    def campaign_mark(self, name: str) -> tuple[int | None, bool] | None:
        """(schedule id, submitted) recorded for a config campaign; None: never started."""
        row = self.db.execute(
            "SELECT schedule_id, submitted FROM campaign_ledger WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else (row[0], bool(row[1]))

    def mark_campaign(
        self, name: str, user: int, schedule_id: int | None = None, submitted: bool = False
    ) -> None:
        """Committed at once: a restart must find what it says."""
        self.flush()
        self.db.execute(
            "INSERT INTO campaign_ledger (name, user, schedule_id, submitted) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "schedule_id = COALESCE(excluded.schedule_id, schedule_id), "
            "submitted = MAX(submitted, excluded.submitted)",
            (name, _s64(user), schedule_id, int(submitted)),
        )
