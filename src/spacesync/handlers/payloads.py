"""Every payload the event handlers send to clients (SPEC §3, §5), built in one place.

The handler modules hand these functions the facts and send what comes back; none of them
writes an outgoing dict of its own. Field names, which fields are left out when absent, and the
key order are the wire's: clients of the original server read them. The player positions
(``player:joined``, ``player:moved``, the ``room:joined`` roster) are built by the store's
:class:`~spacesync.domain.space.PlayerState`, recordings and spotlights by their state objects
(:mod:`spacesync.state.live`), party members by :class:`~spacesync.domain.parties.Party`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from ..domain.identity import Identity
from ..domain.parties import Departure, Invitation, Member, Party
from ..domain.space import PlayerState
from ..protocol import ReplyTo
from ..state.live import Spotlight
from ..storage import MapObject

Payload = dict[str, Any]


def now_ms() -> int:
    return int(time.time() * 1000)


def message_id() -> str:
    """``msg-<unique>``: the temporary id of a chat line until the history writer's update."""
    return f"msg-{uuid.uuid4().hex}"


# -- errors and refusals -------------------------------------------------------------------------


def error(message: str, code: str) -> Payload:
    """``error {message, code}`` (SPEC §8; codes such as INVALID_PAYLOAD, DUPLICATE_SESSION)."""
    return {"message": message, "code": code}


def refusal(message: str) -> Payload:
    """``<channel>:error {message}``: a refusal on an event's own channel."""
    return {"message": message}


def rate_limited(message: str, retry_after: int) -> Payload:
    """An event over its rate limit, on the event's channel."""
    return {"message": message, "code": "RATE_LIMITED", "retryAfter": retry_after}


def chat_refused(message: str, retry_after: int | None) -> Payload:
    """A message refused by the chat rules (SPEC §6): the wait, when there is one."""
    payload: Payload = {"message": message}
    if retry_after:
        payload["retryAfter"] = retry_after
    return payload


def muted(
    message: str,
    *,
    action: str | None = None,
    retry_after: int | None = None,
    muted_until: str | None = None,
) -> Payload:
    """A muted player's message refused (``code: MUTED``); a timed mute says how long."""
    payload: Payload = {"code": "MUTED"}
    if action is not None:
        payload["action"] = action
    payload["message"] = message
    if retry_after is not None:
        payload["retryAfter"] = retry_after
        payload["mutedUntil"] = muted_until
    return payload


def admin_error(action: str, message: str, code: str | None = None) -> Payload:
    """``admin:error {action, message, code?}``."""
    payload: Payload = {"action": action, "message": message}
    if code is not None:
        payload["code"] = code
    return payload


def admin_rate_limited(message: str, retry_after: int | None) -> Payload:
    """``admin:error`` for an announcement over the sender's chat limit."""
    payload: Payload = {"action": "announce", "code": "RATE_LIMITED", "message": message}
    if retry_after:
        payload["retryAfter"] = retry_after
    return payload


# -- joining and leaving -----------------------------------------------------------------------


def positions(roster: Iterable[PlayerState]) -> list[Payload]:
    """The PlayerPositions of a roster (each built by the store's player)."""
    return [p.position() for p in roster]


def room_joined(
    space_id: str, players: list[Payload], your_player_id: str, proximity: bool
) -> Payload:
    """``room:joined {spaceId, players, yourPlayerId, proximity}``; ``players`` are
    :func:`positions`, the joiner included."""
    return {
        "spaceId": space_id,
        "players": players,
        "yourPlayerId": your_player_id,
        "proximity": proximity,
    }


def proximity_status(enabled: bool) -> Payload:
    return {"enabled": enabled}


def player_left(player_id: str) -> Payload:
    return {"id": player_id}


# -- movement and profile ------------------------------------------------------------------------


def player_jumped(player_id: str, x: float, y: float) -> Payload:
    return {"id": player_id, "x": x, "y": y}


def profile_updated(identity: Identity) -> Payload:
    """``player:profileUpdated {id, nickname, avatarColor, avatarConfig?}``."""
    data: Payload = {
        "id": identity.player_id,
        "nickname": identity.nickname,
        "avatarColor": identity.avatar_color,
    }
    if identity.avatar_config is not None:
        data["avatarConfig"] = identity.avatar_config
    return data


# -- chat ---------------------------------------------------------------------------------------


def chat_line(
    sender: Identity,
    content: str,
    kind: str,
    reply_to: ReplyTo | None = None,
    **extra: Any,
) -> Payload:
    """A ChatMessageData (``chat:message``, ``whisper:receive``/``sent``, ``party:message``):
    ``content`` is the neutralised text; ``extra`` fields that are ``None`` are left out."""
    nickname = sender.nickname
    data: Payload = {
        "id": message_id(),
        "senderId": sender.player_id,
        "senderNickname": nickname,
        "senderName": nickname,
        "content": content,
        "timestamp": now_ms(),
        "type": kind,
    }
    if reply_to is not None:
        data["replyTo"] = reply_to.to_wire()  # checked and neutralised by protocol
    data.update({k: v for k, v in extra.items() if v is not None})
    return data


def whisper_received(line: Payload) -> Payload:
    """``whisper:received {senderId, senderName, content, timestamp, id}`` of a whisper's
    ChatMessageData (the same id and time)."""
    return {
        "senderId": line["senderId"],
        "senderName": line["senderName"],
        "content": line["content"],
        "timestamp": line["timestamp"],
        "id": line["id"],
    }


def system_message(content: str, sender: str) -> Payload:
    """A ``chat:system`` message; ``sender`` is the system's name in the node's language
    (``senderId`` stays "system": clients recognise system messages by it)."""
    return {
        "id": message_id(),
        "senderId": "system",
        "senderNickname": sender,
        "senderName": sender,
        "content": content,
        "timestamp": now_ms(),
        "type": "system",
    }


# -- parties ------------------------------------------------------------------------------------


def party_invited(invitation: Invitation, party_name: str, inviter: Identity) -> Payload:
    return {
        "partyId": invitation.party_id,
        "partyName": party_name,
        "inviterId": inviter.player_id,
        "inviterName": inviter.nickname,
        "expiresAt": int(invitation.expires_at * 1000),
    }


def party_declined(invitation: Invitation) -> Payload:
    return {"partyId": invitation.party_id, "targetId": invitation.target_id}


def party_joined(party: Party) -> Payload:
    return {
        "partyId": party.id,
        "partyName": party.name,
        "members": party.members_wire(),
        "leaderId": party.leader_id,
        "kind": party.kind,
    }


def party_member_joined(party: Party, member: Member) -> Payload:
    return {"partyId": party.id, "member": member.to_wire()}


def party_left(party_id: str) -> Payload:
    return {"partyId": party_id}


def party_member_left(departure: Departure) -> Payload:
    """``party:member_left {partyId, memberId, leaderId?}`` (the leader after the departure)."""
    data: Payload = {"partyId": departure.party.id, "memberId": departure.member_id}
    if departure.party.leader_id is not None:
        data["leaderId"] = departure.party.leader_id
    return data


# -- proximity ----------------------------------------------------------------------------------


def proximity_changed(space_id: str, enabled: bool, changed_by: str) -> Payload:
    return {"spaceId": space_id, "enabled": enabled, "changedBy": changed_by}


# -- moderation ---------------------------------------------------------------------------------


def member_action(target: Any, actor: Identity, verb: str, **extra: Any) -> Payload:
    """``member:<verb>``: who was acted on (``memberId``, ``nickname``) and by whom
    (``<verb>By`` the moderator's player id, ``<verb>ByNickname``), plus the event's own fields;
    those that are ``None`` are left out, as the original leaves them ``undefined``."""
    data: Payload = {
        "memberId": target.member_id,
        "nickname": target.nickname,
        f"{verb}By": actor.player_id,
        f"{verb}ByNickname": actor.nickname,
    }
    data.update({k: v for k, v in extra.items() if v is not None})
    return data


def mute_lapsed(identity: Identity, system_sender: str) -> Payload:
    """``member:unmuted`` when a timed mute ran out: unmuted by the system."""
    return {
        "memberId": identity.player_id,
        "nickname": identity.nickname,
        "unmutedBy": "system",
        "unmutedByNickname": system_sender,
    }


def message_deleted(message_id: str, actor: Identity) -> Payload:
    return {
        "messageId": message_id,
        "deletedBy": actor.player_id,
        "deletedByNickname": actor.nickname,
    }


def announcement(content: str, actor: Identity, timestamp_ms: int) -> Payload:
    """``space:announcement``; its id is ``announce-<ms>``, as the original's."""
    return {
        "id": f"announce-{timestamp_ms}",
        "content": content,
        "senderId": actor.player_id,
        "senderNickname": actor.nickname,
        "timestamp": timestamp_ms,
    }


# -- reactions, spotlights, map objects -----------------------------------------------------------


def reaction_updated(message_id: str, kind: str, reactor: Identity, action: str) -> Payload:
    return {
        "messageId": message_id,
        "type": kind,
        "userId": reactor.player_id,
        "userNickname": reactor.nickname,
        "action": action,
    }


def spotlight_changed(spotlight: Spotlight, active: bool) -> Payload:
    """``spotlight:activated`` / ``spotlight:deactivated``."""
    return {**spotlight.to_wire(), "isActive": active}


def spotlight_status(
    spotlights: Iterable[Spotlight],
    grant_id: str | None = None,
    expires_at: Any = None,
) -> Payload:
    """``spotlight:status`` at the join: the spotlights in force and the joiner's grant."""
    status: Payload = {"activeSpotlights": [s.to_wire() for s in spotlights], "hasGrant": False}
    if grant_id is not None:
        status["hasGrant"] = True
        status["grantId"] = grant_id
        if expires_at is not None:
            status["expiresAt"] = iso_ms(expires_at)
    return status


def map_object(obj: MapObject) -> Payload:
    """A ``MapObjectData`` as the original built it from the row (absent optional fields are
    left out, as JSON drops ``undefined``)."""
    data: Payload = {
        "id": obj.id,
        "assetId": obj.asset_id,
        "position": {"x": obj.position_x, "y": obj.position_y},
        "rotation": obj.rotation,
    }
    if obj.linked_object_id:
        data["linkedObjectId"] = obj.linked_object_id
    if obj.custom_data is not None:
        data["customData"] = obj.custom_data
    data["placedBy"] = obj.placed_by
    data["placedAt"] = iso_ms(obj.created_at)
    return data


def objects_sync(objects: Iterable[MapObject]) -> Payload:
    return {"objects": [map_object(obj) for obj in objects]}


def object_placed(obj: MapObject, nickname: str) -> Payload:
    return {"object": map_object(obj), "placedByNickname": nickname}


def object_updated(obj: MapObject, nickname: str) -> Payload:
    return {"object": map_object(obj), "updatedByNickname": nickname}


def object_deleted(object_id: str, actor: Identity) -> Payload:
    return {
        "objectId": object_id,
        "deletedBy": actor.player_id,
        "deletedByNickname": actor.nickname,
    }


def iso_ms(value: Any) -> str:
    """``Date.toISOString()``: UTC with milliseconds and a ``Z``."""
    moment = value.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
