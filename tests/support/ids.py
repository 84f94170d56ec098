"""Unique identifiers so that tests sharing one server never collide."""

from __future__ import annotations

import uuid


def unique(prefix: str) -> str:
    """``<prefix>-<12 hex digits>``: valid as a spaceId, playerId or token suffix."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def space_id() -> str:
    return unique("space")


def dev_token() -> str:
    """A development session token (verification skipped in development mode)."""
    return unique("dev-token")
