"""End-to-end parties (SPEC §4): invite parties, party zones and party chat, driven by the
official JS client."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.players import CHAT_KEYS
from support.players import dev_player as player
from support.server import ServerProcess

TRANSPORTS = ["websocket", "polling"]
QUIET = 0.2


async def create_party(client: JsClient, name: str) -> dict[str, Any]:
    """``party:create``; returns the creator's ``party:joined``."""
    await client.emit("party:create", {"name": name})
    joined: dict[str, Any] = await client.wait_for("party:joined")
    return joined


async def invite(inviter: JsClient, party_id: str, target: JsClient) -> dict[str, Any]:
    """``party:invite``; returns the target's ``party:invited``."""
    await inviter.emit("party:invite", {"partyId": party_id, "targetId": target.player_id})
    invited: dict[str, Any] = await target.wait_for(
        "party:invited", lambda p: p["partyId"] == party_id
    )
    return invited


async def bring_in(inviter: JsClient, party_id: str, target: JsClient) -> dict[str, Any]:
    """Invite ``target`` and accept; returns the target's ``party:joined``."""
    await invite(inviter, party_id, target)
    await target.emit("party:accept", {"partyId": party_id})
    joined: dict[str, Any] = await target.wait_for(
        "party:joined", lambda p: p["partyId"] == party_id
    )
    return joined


async def enter_zone(
    client: JsClient, zone: str, name: str, event: str = "party:join"
) -> dict[str, Any]:
    """Enter a party zone; returns the joiner's ``party:joined``."""
    await client.emit(event, {"partyId": zone, "partyName": name})
    joined: dict[str, Any] = await client.wait_for("party:joined", lambda p: p["partyId"] == zone)
    return joined


def member_ids(joined: dict[str, Any]) -> list[str]:
    return [m["id"] for m in joined["members"]]


def party_events(client: JsClient) -> list[tuple[str, Any]]:
    """Every ``party:*`` event the client received, with its payload."""
    return [
        (str(m["event"]), m["args"][0] if m["args"] else None)
        for m in client.log()
        if m.get("type") == "event" and str(m.get("event")).startswith("party:")
    ]


async def expect_no_party_events(client: JsClient, within: float = QUIET) -> None:
    """Nothing about any party reached ``client`` (not even an error)."""
    await asyncio.sleep(within)
    assert party_events(client) == [], f"{client.id} received party events it should not"


async def party_error(client: JsClient) -> str:
    error = await client.wait_for("party:error")
    assert isinstance(error, dict), error
    assert isinstance(error.get("message"), str), error
    assert error["message"].strip(), error
    return str(error["message"])


def assert_party_chat(
    message: dict[str, Any], sender: JsClient, party_id: str, party_name: str, content: str
) -> None:
    """SPEC §3, §4 (`party:message`): ChatMessageData of type `party`."""
    assert CHAT_KEYS <= set(message), message
    assert message["type"] == "party"
    assert message["senderId"] == sender.player_id
    assert message["senderNickname"] == sender.nickname
    assert message["senderName"] == sender.nickname
    assert message["partyId"] == party_id
    assert message["partyName"] == party_name
    assert message["content"] == content
    assert re.fullmatch(r"msg-.+", message["id"]), message["id"]
    assert isinstance(message["timestamp"], int)
    assert abs(message["timestamp"] - time.time() * 1000) < 60_000


# -- party:create ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_create_makes_the_creator_leader_and_only_member(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §4 (`party:create`): the creator receives `party:joined {partyId, partyName,
    members}` with themselves as the only member; the id is chosen by the server (a client id
    is ignored), two parties never share one; nobody else hears about it."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice", transport=transport)
    bob = await player(bridge, dev_server, space, "Bob", transport=transport)

    await alice.emit("party:create", {"name": "  Explorers  ", "partyId": "my-own-id"})
    joined = await alice.wait_for("party:joined")
    assert {"partyId", "partyName", "members"} <= set(joined)
    assert isinstance(joined["partyId"], str) and joined["partyId"]
    assert joined["partyId"] != "my-own-id"
    assert joined["partyName"] == "Explorers"
    assert member_ids(joined) == [alice.player_id]
    assert joined["members"][0]["nickname"] == "Alice"

    other = await create_party(bob, "Explorers")
    assert other["partyId"] != joined["partyId"]
    assert member_ids(other) == [bob.player_id]
    await alice.expect_nothing("party:member_joined", within=QUIET)
    assert [e for e, _ in party_events(alice)] == ["party:joined"]


async def test_create_sanitises_the_name(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`party:create`), §6: the party name is neutralised like chat content (tags
    removed, `&` escaped) wherever it is shown: `party:joined`, `party:invited`."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")

    joined = await create_party(alice, "<b>Fun</b> & games")
    assert joined["partyName"] == "Fun &amp; games"
    invited = await invite(alice, joined["partyId"], bob)
    assert invited["partyName"] == joined["partyName"]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"name": ""},
        {"name": "    "},
        {"name": "x" * 51},
        {"name": 42},
        {"name": None},
        {"name": "line\nbreak"},
        "Explorers",
        None,
        ["Explorers"],
    ],
    ids=[
        "missing",
        "empty",
        "blank",
        "too-long",
        "number",
        "null",
        "control-char",
        "string-payload",
        "no-payload",
        "list-payload",
    ],
)
async def test_create_rejects_bad_names(
    bridge: Bridge, dev_server: ServerProcess, payload: Any
) -> None:
    """SPEC §3 (party name 1–50), §8: a bad `party:create` gets `party:error` and creates
    nothing; a 50-character name is still fine."""
    alice = await player(bridge, dev_server, space_id(), "Alice")
    await alice.emit("party:create", payload)
    await party_error(alice)

    joined = await create_party(alice, "y" * 50)
    assert joined["partyName"] == "y" * 50
    # handled in order: a party created by the bad request would have been announced first
    assert alice.received("party:joined") == [joined]


async def test_create_before_joining_a_space_does_nothing(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4: parties live inside a space; before `join:space` a `party:create` creates
    nothing."""
    stranger = await bridge.connected(dev_server.url)
    await stranger.emit("party:create", {"name": "Nowhere"})
    await stranger.expect_nothing("party:joined", within=QUIET)


# -- party:invite ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_invite_and_accept(bridge: Bridge, dev_server: ServerProcess, transport: str) -> None:
    """SPEC §4 (`party:invite`, `party:accept`): the target receives `party:invited {partyId,
    partyName, inviterId, inviterName}`; on accept the joiner receives `party:joined` listing
    every member and the existing members receive `party:member_joined {partyId, member}`.
    Any member (not only the leader) may invite."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice", transport=transport)
    bob = await player(bridge, dev_server, space, "Bob", transport=transport)
    carol = await player(bridge, dev_server, space, "Carol", transport=transport)
    outsider = await player(bridge, dev_server, space, "Outsider", transport=transport)
    party = await create_party(alice, "Crew")
    party_id = party["partyId"]

    await alice.emit("party:invite", {"partyId": party_id, "targetId": bob.player_id})
    invited = await bob.wait_for("party:invited")
    assert {
        "partyId": invited["partyId"],
        "partyName": invited["partyName"],
        "inviterId": invited["inviterId"],
        "inviterName": invited["inviterName"],
    } == {
        "partyId": party_id,
        "partyName": "Crew",
        "inviterId": alice.player_id,
        "inviterName": "Alice",
    }
    await carol.expect_nothing("party:invited", within=0.1)

    await bob.emit("party:accept", {"partyId": party_id})
    bob_joined = await bob.wait_for("party:joined")
    assert bob_joined["partyId"] == party_id
    assert bob_joined["partyName"] == "Crew"
    assert member_ids(bob_joined) == [alice.player_id, bob.player_id]
    arrived = await alice.wait_for("party:member_joined")
    assert arrived["partyId"] == party_id
    assert arrived["member"]["id"] == bob.player_id
    assert arrived["member"]["nickname"] == "Bob"

    invited = await invite(bob, party_id, carol)
    assert (invited["inviterId"], invited["inviterName"]) == (bob.player_id, "Bob")
    await carol.emit("party:accept", {"partyId": party_id})
    carol_joined = await carol.wait_for("party:joined")
    assert sorted(member_ids(carol_joined)) == sorted(
        [alice.player_id, bob.player_id, carol.player_id]
    )
    for member in (alice, bob):
        arrived = await member.wait_for("party:member_joined", lambda p: p["partyId"] == party_id)
        assert arrived["member"]["id"] == carol.player_id
    await carol.expect_nothing("party:member_joined", within=0.1)
    await expect_no_party_events(outsider, within=0.1)


async def test_invite_errors(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`party:invite`): only members may invite, and only a player of the same space;
    a non-member, an unknown target, yourself, a target in another space or a party that does
    not exist get `party:error`, and the target hears nothing."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    carol = await player(bridge, dev_server, space, "Carol")
    elsewhere = await player(bridge, dev_server, space_id(), "Elsewhere")
    party_id = (await create_party(alice, "Crew"))["partyId"]

    await bob.emit("party:invite", {"partyId": party_id, "targetId": carol.player_id})
    await party_error(bob)
    await alice.emit("party:invite", {"partyId": party_id, "targetId": unique("ghost")})
    await party_error(alice)
    await alice.emit("party:invite", {"partyId": party_id, "targetId": alice.player_id})
    await party_error(alice)
    await alice.emit("party:invite", {"partyId": party_id, "targetId": elsewhere.player_id})
    await party_error(alice)
    await alice.emit("party:invite", {"partyId": unique("party"), "targetId": carol.player_id})
    await party_error(alice)

    await expect_no_party_events(carol)
    assert party_events(elsewhere) == []
    assert [e for e, _ in party_events(alice)] == ["party:joined"] + ["party:error"] * 4
    # the party itself still works
    await invite(alice, party_id, carol)


@pytest.mark.parametrize(
    "payload",
    [
        {"targetId": "someone"},
        {"partyId": "party-x"},
        {"partyId": 7, "targetId": "someone"},
        {"partyId": "party-x", "targetId": ["someone"]},
        {"partyId": "party x!", "targetId": "someone"},
        "party-x",
        None,
    ],
    ids=["no-party", "no-target", "number-id", "list-target", "bad-chars", "string", "none"],
)
async def test_invite_rejects_bad_payloads(
    bridge: Bridge, dev_server: ServerProcess, payload: Any
) -> None:
    """SPEC §8: a malformed `party:invite` gets `party:error` and changes nothing."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await alice.emit("party:invite", payload)
    await party_error(alice)

    invited = await invite(alice, party_id, bob)
    assert party_events(bob) == [("party:invited", invited)]


# -- party:accept / party:decline ------------------------------------------------------------


async def test_accept_needs_a_pending_invitation(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`party:accept`): valid only with a pending invitation. Without one, for an
    unknown party, or a second time, the player gets `party:error` and nobody is told of a new
    member; an invitation to one party does not open another."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    carol = await player(bridge, dev_server, space, "Carol")
    first = (await create_party(alice, "First"))["partyId"]
    second = (await create_party(carol, "Second"))["partyId"]

    await bob.emit("party:accept", {"partyId": first})
    await party_error(bob)
    await bob.emit("party:accept", {"partyId": unique("party")})
    await party_error(bob)
    await alice.expect_nothing("party:member_joined", within=QUIET)

    await invite(alice, first, bob)
    await bob.emit("party:accept", {"partyId": second})
    await party_error(bob)
    await carol.expect_nothing("party:member_joined", within=QUIET)

    await bob.emit("party:accept", {"partyId": first})
    assert member_ids(await bob.wait_for("party:joined")) == [alice.player_id, bob.player_id]
    await alice.wait_for("party:member_joined")
    await bob.emit("party:accept", {"partyId": first})
    await party_error(bob)
    await alice.expect_nothing("party:member_joined", within=QUIET)
    await bob.expect_nothing("party:joined", within=0.0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_decline(bridge: Bridge, dev_server: ServerProcess, transport: str) -> None:
    """SPEC §4 (`party:decline`): the invitation is removed and the inviter receives
    `party:declined {partyId, targetId}`; accepting afterwards fails; declining without an
    invitation gets `party:error`."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice", transport=transport)
    bob = await player(bridge, dev_server, space, "Bob", transport=transport)
    carol = await player(bridge, dev_server, space, "Carol", transport=transport)
    party_id = (await create_party(alice, "Crew"))["partyId"]

    await carol.emit("party:decline", {"partyId": party_id})
    await party_error(carol)
    await alice.expect_nothing("party:declined", within=0.1)

    await invite(alice, party_id, bob)
    await bob.emit("party:decline", {"partyId": party_id})
    declined = await alice.wait_for("party:declined")
    assert declined["partyId"] == party_id
    assert declined["targetId"] == bob.player_id
    await bob.expect_nothing("party:declined", within=0.1)

    await bob.emit("party:accept", {"partyId": party_id})
    await party_error(bob)
    await bob.emit("party:decline", {"partyId": party_id})
    await party_error(bob)
    await alice.expect_nothing("party:member_joined", within=QUIET)
    await alice.expect_nothing("party:declined", within=0.0)
    assert [e for e, _ in party_events(carol)] == ["party:error"]


async def test_decline_goes_to_the_member_who_invited(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`party:decline`): `party:declined` goes to the inviter, who need not be the
    leader."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    carol = await player(bridge, dev_server, space, "Carol")
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await bring_in(alice, party_id, bob)

    await invite(bob, party_id, carol)
    await carol.emit("party:decline", {"partyId": party_id})
    declined = await bob.wait_for("party:declined")
    assert (declined["partyId"], declined["targetId"]) == (party_id, carol.player_id)


# -- party:leave -----------------------------------------------------------------------------


@pytest.mark.parametrize("with_party_id", [True, False], ids=["with-partyId", "without-partyId"])
async def test_leave(bridge: Bridge, dev_server: ServerProcess, with_party_id: bool) -> None:
    """SPEC §4 (`party:leave`): the leaver receives `party:left {partyId}`; the remaining
    members receive `party:member_left {partyId, memberId}`; without `partyId` the player's
    invite party is left when they are in no zone. The leaver no longer hears the party."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob", transport="polling")
    carol = await player(bridge, dev_server, space, "Carol")
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await bring_in(alice, party_id, bob)
    await bring_in(alice, party_id, carol)
    for client in (alice, bob, carol):
        client.consume()

    await bob.emit("party:leave", {"partyId": party_id} if with_party_id else {})
    assert (await bob.wait_for("party:left"))["partyId"] == party_id
    for member in (alice, carol):
        left = await member.wait_for("party:member_left")
        assert left["partyId"] == party_id
        assert left["memberId"] == bob.player_id
    await bob.expect_nothing("party:member_left", within=0.1)

    await alice.emit("party:message", {"partyId": party_id, "content": "still here?"})
    await carol.wait_for("party:message")
    await bob.expect_nothing("party:message", within=QUIET)
    await bob.emit("party:message", {"partyId": party_id, "content": "let me back"})
    await party_error(bob)
    await bob.emit("party:leave", {"partyId": party_id} if with_party_id else {})
    await party_error(bob)
    await alice.expect_nothing("party:member_left", within=QUIET)


async def test_leave_without_payload(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`party:leave` `{partyId?}`): the payload may be left out entirely."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await bring_in(alice, party_id, bob)

    await bob.emit("party:leave")
    assert (await bob.wait_for("party:left"))["partyId"] == party_id
    assert (await alice.wait_for("party:member_left"))["memberId"] == bob.player_id


async def test_leave_a_party_you_are_not_in(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`party:leave`): leaving someone else's party, or leaving while in none, gets
    `party:error` and the party's members hear nothing."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    mallory = await player(bridge, dev_server, space, "Mallory")
    party_id = (await create_party(alice, "Crew"))["partyId"]

    await mallory.emit("party:leave", {"partyId": party_id})
    await party_error(mallory)
    await mallory.emit("party:leave", {})
    await party_error(mallory)
    await mallory.emit("party:leave", {"partyId": 12})
    await party_error(mallory)
    await alice.expect_nothing("party:member_left", within=QUIET)
    await mallory.expect_nothing("party:left", within=0.0)


async def test_empty_party_is_deleted(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`party:leave`): when the last member leaves, the party is deleted: a pending
    invitation can no longer be accepted and its id can no longer be used to invite."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    carol = await player(bridge, dev_server, space, "Carol")
    party_id = (await create_party(alice, "Short-lived"))["partyId"]
    await invite(alice, party_id, bob)

    await alice.emit("party:leave", {"partyId": party_id})
    assert (await alice.wait_for("party:left"))["partyId"] == party_id

    await bob.emit("party:accept", {"partyId": party_id})
    await party_error(bob)
    await bob.expect_nothing("party:joined", within=QUIET)
    await alice.emit("party:invite", {"partyId": party_id, "targetId": carol.player_id})
    await party_error(alice)
    await alice.emit("party:message", {"partyId": party_id, "content": "anyone?"})
    await party_error(alice)
    await expect_no_party_events(carol)


async def test_departing_leader_hands_over_to_the_oldest_member(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`party:leave`): a departing leader passes leadership to the oldest member; the
    remaining members' `party:member_left` names the new `leaderId`, and the new leader can
    invite."""
    space = space_id()
    leader = await player(bridge, dev_server, space, "Leader", player_id=unique("mid"))
    # The oldest member sorts last by id and by nickname: seniority is join order.
    oldest = await player(bridge, dev_server, space, "Zed", player_id=unique("zzz"))
    newest = await player(bridge, dev_server, space, "Amy", player_id=unique("aaa"))
    guest = await player(bridge, dev_server, space, "Guest")
    party_id = (await create_party(leader, "Crew"))["partyId"]
    await bring_in(leader, party_id, oldest)
    await bring_in(leader, party_id, newest)
    for client in (oldest, newest):
        client.consume()

    await leader.emit("party:leave", {"partyId": party_id})
    await leader.wait_for("party:left")
    for member in (oldest, newest):
        left = await member.wait_for("party:member_left")
        assert left["partyId"] == party_id
        assert left["memberId"] == leader.player_id
        assert left.get("leaderId") == oldest.player_id, left

    invited = await invite(oldest, party_id, guest)
    assert invited["inviterId"] == oldest.player_id
    await guest.emit("party:accept", {"partyId": party_id})
    joined = await guest.wait_for("party:joined")
    assert sorted(member_ids(joined)) == sorted(
        [oldest.player_id, newest.player_id, guest.player_id]
    )

    await oldest.emit("party:leave", {"partyId": party_id})
    left = await newest.wait_for("party:member_left", lambda p: p["memberId"] == oldest.player_id)
    assert left.get("leaderId") == newest.player_id, left


async def test_one_invite_party_at_a_time(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4: a player belongs to at most one invite party; creating or accepting another
    leaves the current one (its members receive `party:member_left`)."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    carol = await player(bridge, dev_server, space, "Carol")
    first = (await create_party(alice, "First"))["partyId"]
    await bring_in(alice, first, bob)

    second = (await create_party(bob, "Second"))["partyId"]
    left = await alice.wait_for("party:member_left")
    assert (left["partyId"], left["memberId"]) == (first, bob.player_id)
    assert (await bob.wait_for("party:left"))["partyId"] == first

    third = (await create_party(carol, "Third"))["partyId"]
    await bring_in(carol, third, bob)
    await bob.wait_for("party:left", lambda p: p["partyId"] == second)
    assert (await carol.wait_for("party:member_joined"))["member"]["id"] == bob.player_id
    await alice.emit("party:message", {"partyId": first, "content": "bob, are you here?"})
    await alice.wait_for("party:message")
    await bob.expect_nothing("party:message", within=QUIET)
    await bob.emit("party:message", {"partyId": second, "content": "hello second"})
    await party_error(bob)


async def test_party_size_limit_is_50(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4: a party holds at most 50 members; the 51st `party:accept` gets `party:error`
    and the members hear of no new member."""
    space = space_id()
    clients = await asyncio.gather(
        *[
            player(bridge, dev_server, space, f"P{n:02d}", player_id=unique(f"p{n:02d}"))
            for n in range(51)
        ]
    )
    leader, others = clients[0], clients[1:]
    party_id = (await create_party(leader, "Big"))["partyId"]
    await leader.emit_many(
        [("party:invite", [{"partyId": party_id, "targetId": c.player_id}]) for c in others]
    )
    await asyncio.gather(
        *[c.wait_for("party:invited", lambda p: p["partyId"] == party_id) for c in others]
    )

    for client in others[:49]:
        await client.emit("party:accept", {"partyId": party_id})
        await client.wait_for("party:joined", lambda p: p["partyId"] == party_id)
    assert len(await leader.wait_for_all("party:member_joined", 49)) == 49
    last_joined = others[48].received("party:joined")[-1]
    assert len(last_joined["members"]) == 50

    too_many = others[49]
    await too_many.emit("party:accept", {"partyId": party_id})
    await party_error(too_many)
    await too_many.expect_nothing("party:joined", within=QUIET)
    await leader.expect_nothing("party:member_joined", within=0.0)

    await leader.emit("party:message", {"partyId": party_id, "content": "roll call"})
    await too_many.expect_nothing("party:message", within=QUIET)
    await others[0].wait_for("party:message")


# -- party zones -----------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["party:join", "joinParty"])
async def test_zone_join(bridge: Bridge, dev_server: ServerProcess, event: str) -> None:
    """SPEC §4 (`party:join`, alias `joinParty`): entering a party zone needs no invitation;
    the joiner receives `party:joined {partyId, partyName, members}` with the client-chosen
    id; the zone's members receive `party:member_joined`; others hear nothing."""
    space = space_id()
    zone = unique("zone-fountain")
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob", transport="polling")
    carol = await player(bridge, dev_server, space, "Carol")

    first = await enter_zone(alice, zone, "Fountain", event)
    assert first["partyName"] == "Fountain"
    assert member_ids(first) == [alice.player_id]

    second = await enter_zone(bob, zone, "Fountain", event)
    assert second["partyName"] == "Fountain"
    assert member_ids(second) == [alice.player_id, bob.player_id]
    arrived = await alice.wait_for("party:member_joined")
    assert arrived["partyId"] == zone
    assert arrived["member"]["id"] == bob.player_id
    await expect_no_party_events(carol)


async def test_joining_another_zone_leaves_the_previous(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`party:join`): entering a zone leaves the previous zone party; its members
    receive `party:member_left`, and the player no longer hears it."""
    space = space_id()
    zone_a, zone_b = unique("zone-a"), unique("zone-b")
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    carol = await player(bridge, dev_server, space, "Carol")
    await enter_zone(alice, zone_a, "Garden")
    await enter_zone(bob, zone_a, "Garden")
    await enter_zone(carol, zone_b, "Library")

    joined = await enter_zone(bob, zone_b, "Library", "joinParty")
    assert member_ids(joined) == [carol.player_id, bob.player_id]
    left = await alice.wait_for("party:member_left")
    assert (left["partyId"], left["memberId"]) == (zone_a, bob.player_id)
    assert (await bob.wait_for("party:left"))["partyId"] == zone_a
    assert (await carol.wait_for("party:member_joined"))["member"]["id"] == bob.player_id

    await alice.emit("party:message", {"content": "garden only"})
    assert (await alice.wait_for("party:message"))["partyId"] == zone_a
    await bob.emit("party:message", {"content": "library only"})
    assert (await carol.wait_for("party:message"))["content"] == "library only"
    await bob.wait_for("party:message", lambda m: m["content"] == "library only")
    await bob.expect_nothing("party:message", within=QUIET)
    await alice.expect_nothing("party:message", within=0.0)


async def test_rejoining_the_same_zone_changes_nothing(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`party:join`): entering the zone one is already in keeps a single membership;
    the other members see no leave and no second arrival."""
    space = space_id()
    zone = unique("zone")
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    await enter_zone(alice, zone, "Stage")
    await enter_zone(bob, zone, "Stage")
    await alice.wait_for("party:member_joined")

    again = await enter_zone(bob, zone, "Stage")
    assert member_ids(again) == [alice.player_id, bob.player_id]
    await alice.expect_nothing("party:member_left", within=QUIET)
    await alice.expect_nothing("party:member_joined", within=0.0)


async def test_leave_party_alias_leaves_only_the_zone(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`leaveParty`): leaves the zone party (its members receive `party:member_left`,
    the leaver `party:left`) and keeps the invite party; with no zone it gets `party:error`."""
    space = space_id()
    zone = unique("zone")
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    carol = await player(bridge, dev_server, space, "Carol")
    party_id = (await create_party(carol, "Crew"))["partyId"]
    await bring_in(carol, party_id, bob)
    await enter_zone(alice, zone, "Stage")
    await enter_zone(bob, zone, "Stage")

    await bob.emit("leaveParty")
    assert (await bob.wait_for("party:left"))["partyId"] == zone
    left = await alice.wait_for("party:member_left")
    assert (left["partyId"], left["memberId"]) == (zone, bob.player_id)
    await carol.expect_nothing("party:member_left", within=QUIET)

    await bob.emit("party:message", {"content": "to the crew"})
    crew = await carol.wait_for("party:message")
    assert crew["partyId"] == party_id
    await alice.expect_nothing("party:message", within=QUIET)

    await alice.emit("leaveParty")
    await alice.wait_for("party:left")
    await alice.emit("leaveParty")
    await party_error(alice)


async def test_zone_id_of_an_invite_party_needs_an_invitation(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`party:join`, `party:accept`): naming an existing invite party's id as a zone
    does not let anyone in without an invitation; its members hear nothing and its chat stays
    private."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    mallory = await player(bridge, dev_server, space, "Mallory")
    party_id = (await create_party(alice, "Private"))["partyId"]

    for event in ("party:join", "joinParty"):
        await mallory.emit(event, {"partyId": party_id, "partyName": "Private"})
        await party_error(mallory)
    await mallory.expect_nothing("party:joined", within=QUIET)
    await alice.expect_nothing("party:member_joined", within=0.0)

    await alice.emit("party:message", {"partyId": party_id, "content": "secret plans"})
    await alice.wait_for("party:message")
    await mallory.emit("party:message", {"partyId": party_id, "content": "let me in"})
    await party_error(mallory)
    await mallory.emit("party:leave", {"partyId": party_id})
    await party_error(mallory)
    await alice.expect_nothing("party:message", within=QUIET)
    await mallory.expect_nothing("party:message", within=0.0)
    await alice.expect_nothing("party:member_left", within=0.0)


async def test_zones_are_scoped_per_space(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`party:join`): a zone id is scoped to its space: the same id in two spaces
    names two different parties whose members and chat never meet."""
    zone = unique("zone-lobby")
    alice = await player(bridge, dev_server, space_id(), "Alice")
    bob = await player(bridge, dev_server, space_id(), "Bob")

    assert member_ids(await enter_zone(alice, zone, "Lobby")) == [alice.player_id]
    assert member_ids(await enter_zone(bob, zone, "Lobby")) == [bob.player_id]
    await alice.expect_nothing("party:member_joined", within=QUIET)

    await alice.emit("party:message", {"partyId": zone, "content": "space one"})
    assert (await alice.wait_for("party:message"))["content"] == "space one"
    await bob.emit("party:message", {"partyId": zone, "content": "space two"})
    assert (await bob.wait_for("party:message"))["content"] == "space two"
    await alice.expect_nothing("party:message", within=QUIET)
    await bob.expect_nothing("party:message", within=0.0)

    await bob.emit("leaveParty")
    await bob.wait_for("party:left")
    await alice.expect_nothing("party:member_left", within=QUIET)


@pytest.mark.parametrize(
    "payload",
    [
        {"partyName": "No id"},
        {"partyId": "", "partyName": "Empty"},
        {"partyId": "bad id!", "partyName": "Spaces"},
        {"partyId": 5, "partyName": "Number"},
        {"partyId": "zone-ok", "partyName": 5},
        {"partyId": "zone-ok", "partyName": "n" * 51},
        {"partyId": "zone-ok", "partyName": "   "},
        "zone-ok",
        None,
    ],
    ids=[
        "no-id",
        "empty-id",
        "bad-id",
        "number-id",
        "number-name",
        "long-name",
        "blank-name",
        "string",
        "none",
    ],
)
async def test_zone_join_rejects_bad_payloads(
    bridge: Bridge, dev_server: ServerProcess, payload: Any
) -> None:
    """SPEC §3 (ids, party name 1–50), §8: a malformed `party:join` gets `party:error` and
    joins nothing; other members of the zone hear nothing."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    await enter_zone(alice, "zone-ok", "Ok")
    await bob.emit("party:join", payload)
    await party_error(bob)

    joined = await enter_zone(bob, "zone-ok", "Ok")
    assert member_ids(joined) == [alice.player_id, bob.player_id]
    await alice.wait_for("party:member_joined", lambda p: p["member"]["id"] == bob.player_id)
    assert len(alice.received("party:member_joined")) == 1
    assert bob.received("party:joined") == [joined]


# -- party chat ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_party_message_reaches_members_only(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §3, §4 (`party:message`), §6: every member, sender included, receives
    `party:message` (ChatMessageData type `party` with `partyId`, `partyName`, `senderName`),
    content trimmed and neutralised; a player of the same space outside the party receives
    nothing, and gets `party:error` when trying to post to it."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice", transport=transport)
    bob = await player(bridge, dev_server, space, "Bob", transport=transport)
    outsider = await player(bridge, dev_server, space, "Outsider", transport=transport)
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await bring_in(alice, party_id, bob)

    await bob.emit(
        "party:message",
        {
            "partyId": party_id,
            "content": "  <b>meet</b> at the dock & bring snacks  ",
            "senderId": alice.player_id,
        },
    )
    for member in (alice, bob):
        message = await member.wait_for("party:message")
        assert_party_chat(message, bob, party_id, "Crew", "meet at the dock &amp; bring snacks")
    assert alice.received("party:message") == bob.received("party:message")
    await outsider.expect_nothing("party:message", within=QUIET)
    await alice.expect_nothing("chat:message", within=0.0)
    await outsider.expect_nothing("chat:message", within=0.0)

    await outsider.emit("party:message", {"partyId": party_id, "content": "let me in"})
    await party_error(outsider)
    await outsider.emit("party:message", {"content": "no party at all"})
    await party_error(outsider)
    await alice.expect_nothing("party:message", within=QUIET)


@pytest.mark.parametrize(
    "payload",
    [
        {"partyId": "x"},
        {"content": ""},
        {"content": "   "},
        {"content": "x" * 2001},
        {"content": 5},
        "hello",
        None,
    ],
    ids=["no-content", "empty", "blank", "too-long", "number", "string", "none"],
)
async def test_party_message_rejects_bad_payloads(
    bridge: Bridge, dev_server: ServerProcess, payload: Any
) -> None:
    """SPEC §6, §8: empty, oversized or malformed party messages get `party:error` and
    reach nobody."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await bring_in(alice, party_id, bob)
    if isinstance(payload, dict) and "content" in payload:
        payload = {**payload, "partyId": party_id}

    await alice.emit("party:message", payload)
    await party_error(alice)

    await alice.emit("party:message", {"partyId": party_id, "content": "valid"})
    valid = await bob.wait_for("party:message")
    assert bob.received("party:message") == [valid]
    assert valid["content"] == "valid"


async def test_party_message_without_id_prefers_the_zone(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`party:message`): without `partyId` the message goes to the sender's zone
    party if any, else to their invite party; with `partyId` to that party."""
    space = space_id()
    zone = unique("zone")
    me = await player(bridge, dev_server, space, "Me")
    zone_mate = await player(bridge, dev_server, space, "ZoneMate")
    crew_mate = await player(bridge, dev_server, space, "CrewMate")
    party_id = (await create_party(me, "Crew"))["partyId"]
    await bring_in(me, party_id, crew_mate)
    await enter_zone(zone_mate, zone, "Plaza")
    await enter_zone(me, zone, "Plaza")

    await me.emit("party:message", {"content": "to the plaza"})
    to_zone = await zone_mate.wait_for("party:message")
    assert (to_zone["partyId"], to_zone["partyName"]) == (zone, "Plaza")
    assert (await me.wait_for("party:message"))["partyId"] == zone
    await crew_mate.expect_nothing("party:message", within=QUIET)

    await me.emit("party:message", {"partyId": party_id, "content": "to the crew"})
    to_crew = await crew_mate.wait_for("party:message")
    assert (to_crew["partyId"], to_crew["partyName"]) == (party_id, "Crew")
    await zone_mate.expect_nothing("party:message", within=QUIET)

    await me.emit("leaveParty")
    await me.wait_for("party:left")
    await me.emit("party:message", {"content": "zone left, crew again"})
    assert (await crew_mate.wait_for("party:message"))["content"] == "zone left, crew again"
    await zone_mate.expect_nothing("party:message", within=QUIET)


async def test_chat_message_of_type_party_routes_like_party_message(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`chat:message` `type: "party"`): behaves as `party:message`: members receive
    `party:message` (zone first without `partyId`, the named party with it), the space receives
    no `chat:message`, a non-member gets `party:error` (not `chat:error`)."""
    space = space_id()
    zone = unique("zone")
    me = await player(bridge, dev_server, space, "Me")
    zone_mate = await player(bridge, dev_server, space, "ZoneMate")
    crew_mate = await player(bridge, dev_server, space, "CrewMate")
    outsider = await player(bridge, dev_server, space, "Outsider")
    party_id = (await create_party(me, "Crew"))["partyId"]
    await bring_in(me, party_id, crew_mate)
    await enter_zone(zone_mate, zone, "Plaza")
    await enter_zone(me, zone, "Plaza")

    await me.emit("chat:message", {"type": "party", "content": "plaza via chat"})
    message = await zone_mate.wait_for("party:message")
    assert_party_chat(message, me, zone, "Plaza", "plaza via chat")
    await me.wait_for("party:message")

    reply_to = {"id": message["id"], "senderNickname": "Me", "content": "plaza via chat"}
    await me.emit(
        "chat:message",
        {"type": "party", "partyId": party_id, "content": "crew via chat", "replyTo": reply_to},
    )
    crew = await crew_mate.wait_for("party:message")
    assert_party_chat(crew, me, party_id, "Crew", "crew via chat")
    assert crew["replyTo"] == reply_to
    await zone_mate.expect_nothing("party:message", within=QUIET)
    for client in (me, zone_mate, crew_mate, outsider):
        await client.expect_nothing("chat:message", within=0.0)

    await outsider.emit("chat:message", {"type": "party", "content": "hello?"})
    await party_error(outsider)
    await outsider.emit(
        "chat:message", {"type": "party", "partyId": party_id, "content": "sneaking in"}
    )
    await party_error(outsider)
    await outsider.expect_nothing("chat:error", within=QUIET)
    await crew_mate.expect_nothing("party:message", within=0.0)


async def test_party_chat_shares_the_rate_limit(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §6: chat and party messages share one per-player limit of 5 in 5 s; a rejected
    party message gets `party:error` saying how many seconds to wait and reaches nobody."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await bring_in(alice, party_id, bob)

    items: list[tuple[str, list[Any]]] = []
    for n in range(3):
        items.append(("chat:message", [{"content": f"space {n}"}]))
    for n in range(2):
        items.append(("party:message", [{"partyId": party_id, "content": f"party {n}"}]))
    await alice.emit_many(items)
    await bob.wait_for("party:message", lambda m: m["content"] == "party 1")
    assert len(bob.received("chat:message")) == 3

    await alice.emit("party:message", {"partyId": party_id, "content": "one too many"})
    message = await party_error(alice)
    found = re.search(r"(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)\b", message, re.IGNORECASE)
    assert found, f"no number of seconds in {message!r}"
    assert 0 < float(found.group(1)) <= 5, message
    await alice.emit("chat:message", {"type": "party", "content": "via chat:message"})
    await party_error(alice)
    await alice.emit("chat:message", {"content": "space again"})
    assert isinstance((await alice.wait_for("chat:error"))["message"], str)
    await bob.expect_nothing("party:message", within=QUIET)
    await bob.expect_nothing(
        "chat:message", within=0.0, predicate=lambda m: "again" in m["content"]
    )


async def test_party_chat_rejects_a_third_identical_message(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §6: the third identical message in a row (case-insensitive, trimmed) is rejected
    with `party:error`; a different message is accepted again."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await bring_in(alice, party_id, bob)

    for content in ("Ready?", "  ready?  "):
        await alice.emit("party:message", {"partyId": party_id, "content": content})
        await bob.wait_for("party:message")
    await alice.emit("party:message", {"partyId": party_id, "content": "READY?"})
    await party_error(alice)
    await bob.expect_nothing("party:message", within=QUIET)
    await alice.emit("party:message", {"partyId": party_id, "content": "go"})
    assert (await bob.wait_for("party:message"))["content"] == "go"


# -- leaving the space -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["leave:space", "disconnect", "join-other-space"])
async def test_leaving_the_space_leaves_both_parties(
    bridge: Bridge, dev_server: ServerProcess, how: str
) -> None:
    """SPEC §4: leaving the space (`leave:space`, a disconnect, or joining another space)
    leaves the zone party and the invite party: their members receive `party:member_left`,
    and the player hears neither party afterwards (from another space, posting to either gets
    `party:error`)."""
    space = space_id()
    zone = unique("zone")
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob", transport="polling")
    carol = await player(bridge, dev_server, space, "Carol")
    party_id = (await create_party(carol, "Crew"))["partyId"]
    await bring_in(carol, party_id, bob)
    await enter_zone(alice, zone, "Plaza")
    await enter_zone(bob, zone, "Plaza")
    for client in (alice, bob, carol):
        client.consume()

    if how == "leave:space":
        await bob.emit("leave:space")
    elif how == "disconnect":
        await bob.disconnect()
    else:
        await bob.join(space_id(), "Bob", session_token=dev_token(), playerId=bob.player_id)

    zone_left = await alice.wait_for("party:member_left")
    assert (zone_left["partyId"], zone_left["memberId"]) == (zone, bob.player_id)
    crew_left = await carol.wait_for("party:member_left")
    assert (crew_left["partyId"], crew_left["memberId"]) == (party_id, bob.player_id)
    assert crew_left.get("leaderId", carol.player_id) == carol.player_id
    assert (await alice.wait_for("player:left"))["id"] == bob.player_id

    await alice.emit("party:message", {"content": "plaza"})
    await carol.emit("party:message", {"content": "crew"})
    assert (await alice.wait_for("party:message"))["content"] == "plaza"
    assert (await carol.wait_for("party:message"))["content"] == "crew"
    await bob.expect_nothing("party:message", within=QUIET)

    if how == "join-other-space":
        await bob.emit("party:message", {"partyId": party_id, "content": "still in?"})
        await party_error(bob)
        await bob.emit("party:message", {"content": "still in the zone?"})
        await party_error(bob)
        await carol.expect_nothing("party:message", within=QUIET)
        await alice.expect_nothing("party:message", within=0.0)


async def test_rejoining_the_space_does_not_restore_parties(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4: after leaving the space, the player is in no party when they come back; the
    old party carries on without them."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await bring_in(alice, party_id, bob)

    await bob.emit("leave:space")
    await alice.wait_for("party:member_left")
    await bob.join(space, "Bob", session_token=dev_token(), playerId=bob.player_id)
    await bob.emit("party:message", {"content": "back"})
    await party_error(bob)
    await alice.expect_nothing("party:message", within=QUIET)


@pytest.mark.parametrize("how", ["leave:space", "reconnect"])
async def test_invitation_dies_when_the_invitee_leaves(
    bridge: Bridge, dev_server: ServerProcess, how: str
) -> None:
    """SPEC §4: a player who leaves the space (or whose connection ends) loses the
    invitations they held: accepting after coming back gets `party:error`; a fresh invitation
    works."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob_id = unique("bob")
    bob = await player(bridge, dev_server, space, "Bob", player_id=bob_id)
    party_id = (await create_party(alice, "Crew"))["partyId"]
    await invite(alice, party_id, bob)

    if how == "leave:space":
        await bob.emit("leave:space")
        await alice.wait_for("player:left")
        await bob.join(space, "Bob", session_token=dev_token(), playerId=bob_id)
    else:
        await bob.disconnect()
        await alice.wait_for("player:left")
        bob = await player(bridge, dev_server, space, "Bob", player_id=bob_id)

    await bob.emit("party:accept", {"partyId": party_id})
    await party_error(bob)
    await alice.expect_nothing("party:member_joined", within=QUIET)

    await bring_in(alice, party_id, bob)
    arrived = await alice.wait_for("party:member_joined")
    assert arrived["member"]["id"] == bob_id


# -- privacy ---------------------------------------------------------------------------------


async def test_outsiders_never_receive_party_events(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4: party events go only to the party's members (and an invitation only to its
    target): a player in the same space who is in another party, and one in no party at all,
    receive nothing about a party's whole life (create, invite, accept, decline, chat, leave,
    leadership change, deletion, zones)."""
    space = space_id()
    zone = unique("zone")
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    carol = await player(bridge, dev_server, space, "Carol")
    other_party = await player(bridge, dev_server, space, "Other")
    bystander = await player(bridge, dev_server, space, "Bystander")
    await create_party(other_party, "Elsewhere")
    seen_before = len(party_events(other_party))

    party_id = (await create_party(alice, "Crew"))["partyId"]
    await bring_in(alice, party_id, bob)
    await invite(bob, party_id, carol)
    await carol.emit("party:decline", {"partyId": party_id})
    await bob.wait_for("party:declined")
    await alice.emit("party:message", {"partyId": party_id, "content": "plans"})
    await bob.wait_for("party:message")
    await enter_zone(alice, zone, "Plaza")
    await enter_zone(bob, zone, "Plaza")
    await alice.emit("party:message", {"content": "zone plans"})
    await bob.wait_for("party:message", lambda m: m["content"] == "zone plans")
    await alice.emit("party:leave", {"partyId": party_id})
    await bob.wait_for("party:member_left", lambda p: p["partyId"] == party_id)
    await bob.emit("leaveParty")
    await alice.wait_for("party:member_left", lambda p: p["partyId"] == zone)
    await bob.emit("party:leave", {})
    await bob.wait_for("party:left", lambda p: p["partyId"] == party_id)

    await asyncio.sleep(QUIET)
    assert party_events(bystander) == []
    assert party_events(other_party)[seen_before:] == []
    assert [e for e, _ in party_events(carol)] == ["party:invited"]
