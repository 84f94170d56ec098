"""Room bookkeeping for python-socketio that stays cheap with thousands of sockets.

The stock ``AsyncManager`` keeps every socket in a room of its own (a two-way dictionary per
socket, about half a kilobyte) and, when a socket disconnects, copies and scans every room of
the namespace to find the ones it was in: with 5,000 sockets that is some 5,000 rooms per
disconnect, so 5,000 disconnects (a restart, a network blip) cost seconds of CPU. Here each
socket's rooms are remembered, a disconnect visits only those, and a socket's own room is
implied by the namespace's list of connected sockets instead of stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import socketio


class RoomManager(socketio.AsyncManager):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._member_of: dict[tuple[str, str], set[Any]] = {}

    def _is_own_room(self, sid: str, room: Any) -> bool:
        return room == sid

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        if room is not None and self._is_own_room(sid, room):
            return  # implied by the namespace's list of sockets (see get_participants)
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is not None:
            self._member_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        if room is not None and self._is_own_room(sid, room):
            return
        super().basic_leave_room(sid, namespace, room)
        rooms = self._member_of.get((namespace, sid))
        if rooms is not None and room is not None:
            rooms.discard(room)

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        rooms = self._member_of.pop((namespace, sid), set())
        if namespace not in self.rooms:
            return
        for room in rooms:
            self.basic_leave_room(sid, namespace, room)
        self.basic_leave_room(sid, namespace, None)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_participants(self, namespace: str, room: Any) -> Iterator[tuple[str, str]]:
        rooms = self.rooms.get(namespace, {})
        if isinstance(room, str) and room not in rooms:
            eio_sid = rooms.get(None, {}).get(room)
            if eio_sid is not None:
                yield room, eio_sid  # a socket's own room
            return
        yield from super().get_participants(namespace, room)

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        if not self.is_connected(sid, namespace):
            return []
        return [sid, *self._member_of.get((namespace, sid), ())]
