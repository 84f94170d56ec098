"""A node started with ``LOCALE=ko``, driven by the official JS client: every notice, the system
sender's name and every error a player reads are Korean, and they arrive at the same moments, on
the same events and channels, with the same codes as in English (the other modules check those
in English). Only ``connect_error`` texts stay English: clients tell refusals apart by them."""

from __future__ import annotations

import re
import signal
from typing import Any

import pytest

from spacesync.texts import Catalog
from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, ConnectRefused, JsClient
from support.server import ServerProcess
from support.standins import AppStandIn

ServerFactory = Any

KO = Catalog("ko", strict=True)
SENDER = "시스템"
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def ko(key: str, **params: Any) -> str:
    return KO.text(key, **params)


@pytest.fixture(scope="module")
def ko_dev(module_servers: Any) -> ServerProcess:
    server: ServerProcess = module_servers.start(NODE_ENV="development", LOCALE="ko")
    return server


@pytest.fixture(scope="module")
def ko_prod(module_servers: Any) -> ServerProcess:
    server: ServerProcess = module_servers.start(NODE_ENV=None, LOCALE="ko")
    return server


async def player(
    bridge: Bridge,
    server: ServerProcess,
    space: str,
    nickname: str,
    *,
    role: str | None = None,
    transport: str = "websocket",
) -> JsClient:
    client = await bridge.connected(server.url, transports=[transport])
    fields: dict[str, Any] = {"playerId": unique("player")}
    if role is not None:
        fields["role"] = role
    await client.join(space, nickname, session_token=dev_token(), **fields)
    return client


def is_notice(content: str) -> Any:
    return lambda m: isinstance(m, dict) and m.get("content") == content


def assert_system(message: dict[str, Any], content: str) -> None:
    assert message["content"] == content, message
    assert HANGUL.search(message["content"]), message
    assert message["senderId"] == "system"
    assert message["senderNickname"] == SENDER
    assert message["senderName"] == SENDER
    assert message["type"] == "system"


async def test_presence_notices_and_sender_are_korean(
    bridge: Bridge, ko_dev: ServerProcess
) -> None:
    """Joined, left (`leave:space`) and lost connection (disconnect): three distinct notices,
    each after the `player:joined` / `player:left` it goes with."""
    space = space_id()
    alice = await player(bridge, ko_dev, space, "Alice")
    assert_system(
        await alice.wait_for("chat:system", is_notice(ko("notice.joined", nickname="Alice"))),
        "Alice님이 들어왔습니다.",
    )

    bob = await player(bridge, ko_dev, space, "Bob")
    assert (await alice.wait_for("player:joined"))["id"] == bob.player_id
    assert_system(
        await alice.wait_for("chat:system", is_notice(ko("notice.joined", nickname="Bob"))),
        ko("notice.joined", nickname="Bob"),
    )

    await bob.emit("leave:space")
    assert await alice.wait_for("player:left") == {"id": bob.player_id}
    assert_system(
        await alice.wait_for("chat:system", is_notice(ko("notice.left", nickname="Bob"))),
        "Bob님이 나갔습니다.",
    )

    carol = await player(bridge, ko_dev, space, "Carol", transport="polling")
    await alice.wait_for("chat:system", is_notice(ko("notice.joined", nickname="Carol")))
    await carol.disconnect()
    assert await alice.wait_for("player:left") == {"id": carol.player_id}
    assert_system(
        await alice.wait_for("chat:system", is_notice(ko("notice.disconnected", nickname="Carol"))),
        "Carol님의 연결이 끊겼습니다.",
    )
    contents = [m["content"] for m in alice.received("chat:system")]
    assert not any("joined" in c or " left" in c for c in contents), contents


async def test_proximity_notice_and_errors_are_korean(
    bridge: Bridge, ko_dev: ServerProcess
) -> None:
    """The switch is announced in Korean; a participant's attempt and one made before joining
    are answered in Korean on `proximity:error`, to the sender only."""
    space = space_id()
    stranger = await bridge.connected(ko_dev.url)
    await stranger.emit("proximity:set", {"enabled": True})
    assert await stranger.wait_for("proximity:error") == {"message": ko("error.not_joined")}

    owner = await player(bridge, ko_dev, space, "Owner", role="OWNER")
    guest = await player(bridge, ko_dev, space, "Guest", role="PARTICIPANT")
    await owner.wait_for("chat:system", is_notice(ko("notice.joined", nickname="Guest")))

    await guest.emit("proximity:set", {"enabled": True})
    assert await guest.wait_for("proximity:error") == {"message": "이 작업을 할 권한이 없습니다."}
    await owner.expect_nothing("proximity:changed", within=0.2)

    await owner.emit("proximity:set", {"enabled": True})
    changed = await guest.wait_for("proximity:changed")
    assert changed["enabled"] is True
    assert_system(
        await guest.wait_for("chat:system", lambda m: "근접" in m["content"]),
        ko("notice.proximity_on", nickname="Owner"),
    )
    await owner.emit("proximity:set", {"enabled": False})
    await guest.wait_for("proximity:changed", lambda m: m["enabled"] is False)
    assert_system(
        await guest.wait_for("chat:system", lambda m: "껐습니다" in m["content"]),
        ko("notice.proximity_off", nickname="Owner"),
    )


async def test_chat_limit_says_how_long_to_wait_in_korean(
    bridge: Bridge, ko_dev: ServerProcess
) -> None:
    space = space_id()
    alice = await player(bridge, ko_dev, space, "Alice")
    await alice.emit_many([("chat:message", [{"content": f"message {i}"}]) for i in range(6)])
    error = await alice.wait_for("chat:error")
    wait = error["retryAfter"]
    assert isinstance(wait, int) and 1 <= wait <= 5, error
    assert error["message"] == ko("error.chat.too_fast", seconds=wait)
    assert f"{wait}초" in error["message"]

    await alice.emit("chat:message", {"content": "   "})
    assert (await alice.wait_for("chat:error"))["message"] == ko("error.chat.empty")


async def test_whisper_errors_name_the_nickname_in_korean(
    bridge: Bridge, ko_dev: ServerProcess
) -> None:
    space = space_id()
    alice = await player(bridge, ko_dev, space, "Alice")
    await alice.emit("whisper:send", {"targetNickname": "Nobody", "content": "hi"})
    error = await alice.wait_for("whisper:error")
    assert error == {"message": "'Nobody'님을 이 공간에서 찾을 수 없습니다."}

    await alice.emit("whisper:send", {"targetId": alice.player_id, "content": "hi"})
    assert await alice.wait_for("whisper:error") == {"message": ko("error.whisper.self")}

    await alice.emit("chat:message", {"type": "whisper", "content": "hi"})
    assert await alice.wait_for("whisper:error") == {"message": ko("error.whisper.no_target")}


async def test_party_errors_are_korean(bridge: Bridge, ko_dev: ServerProcess) -> None:
    space = space_id()
    alice = await player(bridge, ko_dev, space, "Alice")
    await alice.emit("party:accept", {"partyId": "no-such-party"})
    assert await alice.wait_for("party:error") == {"message": ko("error.party.no_invitation")}

    await alice.emit("party:create", {"name": "Crew"})
    party = await alice.wait_for("party:joined")
    await alice.emit("party:invite", {"partyId": party["partyId"], "targetId": "nobody-here"})
    assert await alice.wait_for("party:error") == {"message": ko("error.party.target_absent")}

    await alice.emit("party:create", {"name": "x" * 51})
    assert await alice.wait_for("party:error") == {
        "message": ko("error.party.name_too_long", limit=50)
    }


async def test_invalid_payloads_are_answered_in_korean(
    bridge: Bridge, ko_dev: ServerProcess
) -> None:
    """Same channels and codes as in English; the wire names stay as they are."""
    space = space_id()
    alice = await player(bridge, ko_dev, space, "Alice")
    await alice.emit("player:move", {"x": 1, "y": 2, "direction": "sideways", "isMoving": True})
    assert await alice.wait_for("error") == {
        "message": ko("error.input.direction"),
        "code": "INVALID_PAYLOAD",
    }
    await alice.emit("player:jump", {"x": "far", "y": 2})
    assert await alice.wait_for("error") == {
        "message": ko("error.input.not_number", field="x"),
        "code": "INVALID_PAYLOAD",
    }
    await alice.emit("player:updateProfile", {"nickname": "   "})
    error = await alice.wait_for("error")
    assert error["code"] == "INVALID_PAYLOAD"
    assert error["message"] in {ko("error.nickname.no_text"), ko("error.nickname.required")}
    reply = {"id": "m-1", "senderNickname": "\u202e", "content": "quoted"}
    await alice.emit("chat:message", {"content": "hello", "replyTo": reply})
    detail = (await alice.wait_for("chat:error"))["message"]
    assert detail.startswith("replyTo.senderNickname: ") and HANGUL.search(detail), detail


async def test_session_errors_are_korean_in_production(
    bridge: Bridge, ko_prod: ServerProcess, app_standin: AppStandIn
) -> None:
    """A join without a session: Korean `error SESSION_REQUIRED`, then the server disconnects.
    A session refused at connect keeps its English ``connect_error`` "Invalid session"."""
    space = space_id()
    client = await bridge.connected(ko_prod.url)
    await client.emit("join:space", {"spaceId": space, "nickname": "Anon"})
    assert await client.wait_for("error") == {
        "message": "세션 정보가 없습니다. 공간에 다시 입장해 주세요.",
        "code": "SESSION_REQUIRED",
    }
    assert await client.wait_disconnect() == "io server disconnect"

    refused = bridge.client(ko_prod.url, auth={"sessionToken": unique("bad"), "spaceId": space})
    with pytest.raises(ConnectRefused) as caught:
        await refused.connect()
    assert caught.value.message == "Invalid session"


async def test_duplicate_session_is_korean(bridge: Bridge, ko_dev: ServerProcess) -> None:
    space = space_id()
    player_id = unique("player")
    old = await bridge.connected(ko_dev.url)
    await old.join(space, "Twin", session_token=dev_token(), playerId=player_id)
    new = await bridge.connected(ko_dev.url)
    await new.join(space, "Twin", session_token=dev_token(), playerId=player_id)
    assert await old.wait_for("error") == {
        "message": ko("error.session.duplicate"),
        "code": "DUPLICATE_SESSION",
    }


async def test_restart_notice_is_korean(start_server: ServerFactory, bridge: Bridge) -> None:
    server: ServerProcess = start_server(NODE_ENV="development", LOCALE="ko")
    space = space_id()
    client = await player(bridge, server, space, "Stayer")
    await client.wait_for("chat:system", is_notice(ko("notice.joined", nickname="Stayer")))
    server.send_signal(signal.SIGTERM)
    notice = await client.wait_for("chat:system", timeout=5)
    assert_system(notice, "서버를 다시 시작합니다. 잠시 후 자동으로 다시 연결됩니다.")
    await client.wait_disconnect(timeout=5)
