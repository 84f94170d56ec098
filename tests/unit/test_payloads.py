"""The outgoing payloads have the shapes SPEC §3-§5 gives them (and the original's extras)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace

from spacesync.domain.identity import Identity
from spacesync.domain.parties import Departure, Invitation, Member, Party
from spacesync.domain.space import PlayerState
from spacesync.handlers import payloads
from spacesync.protocol import ReplyTo
from spacesync.state.live import Spotlight
from spacesync.storage import MapObject

ANN = Identity("p-ann", "Ann", "red", {"type": "classic", "colorId": "red"})
BOB = Identity("p-bob", "Bob")


def _party(*members: Member, leader: str | None = "p-ann") -> Party:
    party = Party("party-1", "Crew", "invite", leader)
    for m in members:
        party.members[m.id] = m
    return party


def test_room_joined_lists_every_player_with_avatar_fields() -> None:
    roster = [PlayerState(ANN, "s1", 0.0), PlayerState(BOB, "s2", 0.0, x=10, y=20)]
    data = payloads.room_joined("space-1", payloads.positions(roster), "p-bob", True)
    assert list(data) == ["spaceId", "players", "yourPlayerId", "proximity"]
    assert data["spaceId"] == "space-1" and data["yourPlayerId"] == "p-bob"
    assert data["proximity"] is True
    ann, bob = data["players"]
    assert ann == {
        "id": "p-ann",
        "nickname": "Ann",
        "x": 480,
        "y": 320,
        "direction": "down",
        "isMoving": False,
        "avatarColor": "red",
        "avatarConfig": {"type": "classic", "colorId": "red"},
    }
    assert (bob["x"], bob["y"], "avatarConfig" in bob) == (10, 20, False)


def test_small_state_payloads() -> None:
    assert payloads.proximity_status(False) == {"enabled": False}
    assert payloads.player_left("p-ann") == {"id": "p-ann"}
    assert payloads.player_jumped("p-ann", 1.5, -2) == {"id": "p-ann", "x": 1.5, "y": -2}
    assert payloads.proximity_changed("space-1", True, "Ann") == {
        "spaceId": "space-1",
        "enabled": True,
        "changedBy": "Ann",
    }


def test_profile_update_carries_the_avatar_config_only_when_set() -> None:
    assert payloads.profile_updated(ANN) == {
        "id": "p-ann",
        "nickname": "Ann",
        "avatarColor": "red",
        "avatarConfig": {"type": "classic", "colorId": "red"},
    }
    assert payloads.profile_updated(BOB) == {
        "id": "p-bob",
        "nickname": "Bob",
        "avatarColor": "default",
    }


def test_chat_line_is_a_chat_message_data() -> None:
    reply = ReplyTo("msg-0", "Bob", "hi")
    data = payloads.chat_line(ANN, "hello", "whisper", reply, targetId="p-bob", partyId=None)
    assert re.fullmatch(r"msg-[0-9a-f]{32}", data["id"])
    assert data["senderId"] == "p-ann"
    assert data["senderNickname"] == data["senderName"] == "Ann"
    assert data["content"] == "hello" and data["type"] == "whisper"
    assert abs(data["timestamp"] - payloads.now_ms()) < 5_000
    assert data["replyTo"] == {"id": "msg-0", "senderNickname": "Bob", "content": "hi"}
    assert data["targetId"] == "p-bob"
    assert "partyId" not in data  # absent fields are left out, not null
    plain = payloads.chat_line(ANN, "hi", "message")
    assert "replyTo" not in plain and plain["id"] != data["id"]


def test_whisper_received_repeats_the_line_it_announces() -> None:
    line = payloads.chat_line(ANN, "psst", "whisper", targetId="p-bob", targetNickname="Bob")
    assert payloads.whisper_received(line) == {
        "senderId": "p-ann",
        "senderName": "Ann",
        "content": "psst",
        "timestamp": line["timestamp"],
        "id": line["id"],
    }


def test_system_message_is_sent_by_system() -> None:
    data = payloads.system_message("Ann joined", "System")
    assert data["senderId"] == "system" and data["type"] == "system"
    assert data["senderNickname"] == data["senderName"] == "System"
    assert data["content"] == "Ann joined" and data["id"].startswith("msg-")


def test_errors_and_refusals() -> None:
    assert payloads.error("Bad", "INVALID_PAYLOAD") == {"message": "Bad", "code": "INVALID_PAYLOAD"}
    assert payloads.refusal("No") == {"message": "No"}
    assert payloads.rate_limited("Slow", 3) == {
        "message": "Slow",
        "code": "RATE_LIMITED",
        "retryAfter": 3,
    }
    assert payloads.chat_refused("Slow", 2) == {"message": "Slow", "retryAfter": 2}
    assert payloads.chat_refused("Same again", None) == {"message": "Same again"}
    assert payloads.muted("Muted") == {"code": "MUTED", "message": "Muted"}
    assert payloads.muted("Muted", action="announce", retry_after=9, muted_until="T") == {
        "code": "MUTED",
        "action": "announce",
        "message": "Muted",
        "retryAfter": 9,
        "mutedUntil": "T",
    }
    assert payloads.admin_error("kick", "No") == {"action": "kick", "message": "No"}
    assert payloads.admin_error("kick", "No", "FORBIDDEN")["code"] == "FORBIDDEN"
    assert payloads.admin_rate_limited("Slow", 0) == {
        "action": "announce",
        "code": "RATE_LIMITED",
        "message": "Slow",
    }


def test_party_payloads() -> None:
    ann, bob = Member("p-ann", "Ann", "red"), Member("p-bob", "Bob")
    party = _party(ann, bob)
    invitation = Invitation("party-1", "p-bob", "p-ann", 1_700_000_000.5)
    assert payloads.party_invited(invitation, "Crew", ANN) == {
        "partyId": "party-1",
        "partyName": "Crew",
        "inviterId": "p-ann",
        "inviterName": "Ann",
        "expiresAt": 1_700_000_000_500,
    }
    assert payloads.party_declined(invitation) == {"partyId": "party-1", "targetId": "p-bob"}
    assert payloads.party_joined(party) == {
        "partyId": "party-1",
        "partyName": "Crew",
        "members": [
            {"id": "p-ann", "nickname": "Ann", "avatarColor": "red"},
            {"id": "p-bob", "nickname": "Bob", "avatarColor": "default"},
        ],
        "leaderId": "p-ann",
        "kind": "invite",
    }
    assert payloads.party_member_joined(party, bob) == {
        "partyId": "party-1",
        "member": {"id": "p-bob", "nickname": "Bob", "avatarColor": "default"},
    }
    assert payloads.party_left("party-1") == {"partyId": "party-1"}
    left = Departure(party, "p-carol", deleted=False, new_leader_id=None)
    assert payloads.party_member_left(left) == {
        "partyId": "party-1",
        "memberId": "p-carol",
        "leaderId": "p-ann",
    }
    zone = Departure(_party(bob, leader=None), "p-ann", deleted=False, new_leader_id=None)
    assert payloads.party_member_left(zone) == {"partyId": "party-1", "memberId": "p-ann"}


def test_moderation_payloads() -> None:
    target = SimpleNamespace(member_id="p-bob", nickname="Bob")
    assert payloads.member_action(target, ANN, "muted", duration=5, reason=None) == {
        "memberId": "p-bob",
        "nickname": "Bob",
        "mutedBy": "p-ann",
        "mutedByNickname": "Ann",
        "duration": 5,
    }
    assert payloads.mute_lapsed(BOB, "System") == {
        "memberId": "p-bob",
        "nickname": "Bob",
        "unmutedBy": "system",
        "unmutedByNickname": "System",
    }
    assert payloads.message_deleted("m1", ANN) == {
        "messageId": "m1",
        "deletedBy": "p-ann",
        "deletedByNickname": "Ann",
    }
    assert payloads.announcement("Hi all", ANN, 123) == {
        "id": "announce-123",
        "content": "Hi all",
        "senderId": "p-ann",
        "senderNickname": "Ann",
        "timestamp": 123,
    }


def test_live_payloads() -> None:
    assert payloads.reaction_updated("m1", "heart", ANN, "remove") == {
        "messageId": "m1",
        "type": "heart",
        "userId": "p-ann",
        "userNickname": "Ann",
        "action": "remove",
    }
    spot = Spotlight("p-ann", "Ann")
    assert payloads.spotlight_changed(spot, True) == {
        "participantId": "p-ann",
        "nickname": "Ann",
        "isActive": True,
    }
    assert payloads.spotlight_status([spot]) == {
        "activeSpotlights": [{"participantId": "p-ann", "nickname": "Ann"}],
        "hasGrant": False,
    }
    expires = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    assert payloads.spotlight_status([], "g1", expires) == {
        "activeSpotlights": [],
        "hasGrant": True,
        "grantId": "g1",
        "expiresAt": "2026-01-02T03:04:05.678Z",
    }
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    obj = MapObject("o1", "s1", "chair", 3, 4, 90, None, None, "u1", "USER", created, created)
    wire = {
        "id": "o1",
        "assetId": "chair",
        "position": {"x": 3, "y": 4},
        "rotation": 90,
        "placedBy": "u1",
        "placedAt": "2026-01-02T03:04:05.000Z",
    }
    assert payloads.map_object(obj) == wire
    assert payloads.objects_sync([obj]) == {"objects": [wire]}
    assert payloads.object_placed(obj, "Ann") == {"object": wire, "placedByNickname": "Ann"}
    assert payloads.object_updated(obj, "Ann") == {"object": wire, "updatedByNickname": "Ann"}
    assert payloads.object_deleted("o1", ANN) == {
        "objectId": "o1",
        "deletedBy": "p-ann",
        "deletedByNickname": "Ann",
    }
    linked = MapObject("o2", "s1", "door", 0, 0, 0, "o1", {"k": 1}, "u1", "USER", created, created)
    assert list(payloads.map_object(linked))[4:6] == ["linkedObjectId", "customData"]
