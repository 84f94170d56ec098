"""Shapes of the reaction, recording, spotlight and map object events the server sends, for the
fuzz suite's check of every server event (see ``support.fuzzing.shape_problems``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,100}")
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
REACTION_TYPES = ("thumbsup", "heart", "check")


def _id(value: Any) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and not any(c in value for c in "<>\"'")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(data: Any, where: str, **kinds: Callable[[Any], bool]) -> list[str]:
    if not isinstance(data, dict):
        return [f"{where}: not an object"]
    return [
        f"{where}: {key} {data.get(key)!r:.80}"
        for key, ok in kinds.items()
        if not ok(data.get(key))
    ]


def _map_object(value: Any, where: str) -> list[str]:
    problems = _check(
        value,
        where,
        id=_id,
        assetId=_id,
        position=lambda p: isinstance(p, dict) and _int(p.get("x")) and _int(p.get("y")),
        rotation=lambda r: r in (0, 90, 180, 270),
        placedBy=_id,
        placedAt=lambda t: isinstance(t, str) and ISO_MS.fullmatch(t) is not None,
    )
    if isinstance(value, dict) and "linkedObjectId" in value and not _id(value["linkedObjectId"]):
        problems.append(f"{where}: linkedObjectId")
    if (
        isinstance(value, dict)
        and "customData" in value
        and not isinstance(value["customData"], dict)
    ):
        problems.append(f"{where}: customData")
    return problems


def _recording(data: Any, where: str, recording: bool) -> list[str]:
    return _check(
        data,
        where,
        isRecording=lambda v: v is recording,
        recorderId=_id,
        recorderNickname=_text,
        startedAt=_int,
    )


def _spotlight(data: Any, where: str, active: bool | None = None) -> list[str]:
    kinds: dict[str, Callable[[Any], bool]] = {"participantId": _id, "nickname": _text}
    if active is not None:
        kinds["isActive"] = lambda v: v is active
    return _check(data, where, **kinds)


def live_shape_problems(event: Any, payload: Any) -> list[str] | None:
    """What is wrong with one of these events, or ``None`` when ``event`` is none of them."""
    where = str(event)
    if event == "reaction:updated":
        return _check(
            payload,
            where,
            messageId=_id,
            type=lambda v: v in REACTION_TYPES,
            userId=_id,
            userNickname=_text,
            action=lambda v: v in ("add", "remove"),
        )
    if event in ("recording:started", "recording:status"):
        return _recording(payload, where, True)
    if event == "recording:stopped":
        return _recording(payload, where, False)
    if event == "spotlight:activated":
        return _spotlight(payload, where, True)
    if event == "spotlight:deactivated":
        return _spotlight(payload, where, False)
    if event == "spotlight:status":
        problems = _check(
            payload,
            where,
            activeSpotlights=lambda v: isinstance(v, list),
            hasGrant=lambda v: isinstance(v, bool),
        )
        if not problems:
            for i, item in enumerate(payload["activeSpotlights"]):
                problems += _spotlight(item, f"{where}.activeSpotlights[{i}]")
        return problems
    if event in ("object:placed", "object:updated"):
        by = "placedByNickname" if event == "object:placed" else "updatedByNickname"
        problems = _check(payload, where, **{by: _text})
        if isinstance(payload, dict):
            problems += _map_object(payload.get("object"), f"{where}.object")
        return problems
    if event == "object:deleted":
        return _check(payload, where, objectId=_id, deletedBy=_id, deletedByNickname=_text)
    if event == "objects:sync":
        objects = payload.get("objects") if isinstance(payload, dict) else None
        if not isinstance(objects, list):
            return [f"{where}: objects"]
        return [p for i, o in enumerate(objects) for p in _map_object(o, f"{where}.objects[{i}]")]
    return None
