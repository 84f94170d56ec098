"""Room bookkeeping and the engine.io queue used by the server (SPEC §5 delivery to a space, to
one player, to one socket): the same answers as python-socketio's stock manager and asyncio's
queue, at a fraction of the cost per socket."""

from __future__ import annotations

import asyncio

import pytest

from spacesync.rooms import RoomManager
from spacesync.wire import LightQueue

NS = "/"


async def connected(manager: RoomManager, eio_sid: str) -> str:
    sid = await manager.connect(eio_sid, NS)
    assert isinstance(sid, str)
    return sid


@pytest.fixture
def manager() -> RoomManager:
    m = RoomManager()
    m.server = type(
        "Server",
        (),
        {
            "eio": type(
                "Eio",
                (),
                {"generate_id": staticmethod(iter(f"sid-{i}" for i in range(1000)).__next__)},
            )()
        },
    )()
    return m


async def test_a_socket_is_reachable_through_its_own_room_without_storing_one(
    manager: RoomManager,
) -> None:
    sid = await connected(manager, "eio-1")
    assert list(manager.get_participants(NS, sid)) == [(sid, "eio-1")]
    assert sid not in manager.rooms[NS], "no dictionary per socket"
    assert manager.get_rooms(sid, NS) == [sid]


async def test_rooms_track_members_and_disconnect_leaves_only_them(manager: RoomManager) -> None:
    a = await connected(manager, "eio-a")
    b = await connected(manager, "eio-b")
    manager.basic_enter_room(a, NS, "space:x")
    manager.basic_enter_room(b, NS, "space:x")
    manager.basic_enter_room(a, NS, "moves:x")
    assert dict(manager.get_participants(NS, "space:x")) == {a: "eio-a", b: "eio-b"}
    assert sorted(manager.get_rooms(a, NS)[1:]) == ["moves:x", "space:x"]

    manager.basic_disconnect(a, NS)
    assert dict(manager.get_participants(NS, "space:x")) == {b: "eio-b"}
    assert "moves:x" not in manager.rooms[NS], "an emptied room is removed"
    assert list(manager.get_participants(NS, a)) == []
    assert not manager.is_connected(a, NS)
    assert manager.is_connected(b, NS)
    assert manager.eio_sid_from_sid(b, NS) == "eio-b"
    assert manager.sid_from_eio_sid("eio-b", NS) == b


async def test_leaving_a_room_twice_or_one_never_entered_is_harmless(manager: RoomManager) -> None:
    a = await connected(manager, "eio-a")
    manager.basic_enter_room(a, NS, "space:x")
    manager.basic_leave_room(a, NS, "space:x")
    manager.basic_leave_room(a, NS, "space:x")
    manager.basic_leave_room(a, NS, "never")
    assert manager.get_rooms(a, NS) == [a]
    manager.basic_disconnect(a, NS)
    manager.basic_disconnect(a, NS)


async def test_another_socket_cannot_enter_a_sockets_own_room(manager: RoomManager) -> None:
    a = await connected(manager, "eio-a")
    b = await connected(manager, "eio-b")
    with pytest.raises(ValueError):
        manager.basic_enter_room(b, NS, a)


async def test_light_queue_hands_items_over_in_order() -> None:
    queue = LightQueue()
    assert queue.empty() and queue.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("first")
    await queue.put("second")
    assert await asyncio.wait_for(getter, 1) == "first"
    assert queue.qsize() == 1 and queue.get_nowait() == "second"


async def test_light_queue_join_waits_for_task_done() -> None:
    queue = LightQueue()
    await queue.join()  # nothing outstanding
    queue.put_nowait(1)
    queue.put_nowait(2)
    joiner = asyncio.ensure_future(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joiner.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joiner, 1)


async def test_light_queue_getter_survives_a_timeout() -> None:
    """engine.io's long-poll waits on ``get()`` with a timeout; a timed-out wait must not eat
    a later item."""
    queue = LightQueue()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 0.01)
    queue.put_nowait("later")
    assert await asyncio.wait_for(queue.get(), 1) == "later"
