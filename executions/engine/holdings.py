"""The executions one worker process runs, and why one of them must stop.

Each hold is numbered. The maintenance tick reads the rows of every held run in one query
outside any lock, and in that time a run may park (its lease given back), be decided, and be
claimed here again: a reason read for the old hold ("lease lost": the row had no owner) must
not stop the new one. So a reason is noted only for the hold it was read for.

A claim can also take a row whose run is still on its thread here: the thread gave the lease
back (a park, a database error's retry) and the claim loop took it again before the thread
had let go. The claim loop does not start a second run of it; the run's thread, when it lets
go, hands the lease back so that the row is claimed and run again (`release_reclaimed`).
"""

from __future__ import annotations

import threading
from typing import Any

from executions.lifecycle import TERMINAL


class Holdings:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # execution id -> the number of its hold
        self._count = 0
        self._reasons: dict[str, str] = {}
        self._reclaimed: set[str] = set()

    def hold(self, key: str) -> bool:
        """A claim took `key`: False when its run is still on a thread here (see above)."""
        with self._lock:
            if key in self._held:
                self._reclaimed.add(key)
                return False
            self._count += 1
            self._held[key] = self._count
            self._reasons.pop(key, None)
            return True

    def unhold(self, key: str) -> bool:
        """The run of `key` let go; True when a claim took its row again meanwhile."""
        with self._lock:
            self._held.pop(key, None)
            self._reasons.pop(key, None)
            if key in self._reclaimed:
                self._reclaimed.discard(key)
                return True
            return False

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def reason(self, key: str) -> str | None:
        return self._reasons.get(key)

    def note_states(self, read: Any, owner: str) -> None:
        """One read (`read(ids)` -> (id, status, lease owner) rows) for every held run: note
        the cancelled ones (or purged) and those whose lease is not `owner`'s, each for the
        hold it was read for."""
        with self._lock:
            snapshot = dict(self._held)
        if not snapshot:
            return
        found: dict[str, str] = {key: "cancelled" for key in snapshot}  # purged under us
        for pk, status, lease_owner in read(list(snapshot)):
            key = str(pk)
            if status in TERMINAL:
                found[key] = "cancelled"
            elif lease_owner != owner:
                found[key] = "lease_lost"
            else:
                found.pop(key, None)
        with self._lock:
            for key, reason in found.items():
                if self._held.get(key) == snapshot[key]:
                    self._reasons[key] = reason
