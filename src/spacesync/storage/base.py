"""The storage port: what the handlers and the CLI may ask of a database, and the records it gives.

Two adapters implement it. :mod:`.postgres` works on FlowSpace's own PostgreSQL database, in the
tables Prisma created for the app, so the app sees what spacesync writes (chat history, deleted
messages, mutes, map objects, event logs) exactly as if its Node.js server had written it.
:mod:`.sqlite` keeps the same facts in a local file with a schema of its own, for a spacesync
that runs without the app's database (development, tests, a space server standing alone).

Every method is a coroutine and every failure is a :class:`StorageError` (a database that is down
or too slow is :class:`StorageUnavailable`), so a caller that treats storage as best-effort needs
one ``except`` clause and never waits longer than the adapter's timeouts.

Conventions both adapters keep (the contract tests in ``tests/storage`` hold them to it):

- A player is named by exactly one of ``user_id`` (an authenticated user, ``User.id``) and
  ``guest_session_id`` (``GuestSession.id``, found with :meth:`Storage.guest_session_id`; never
  the raw session token, which is a credential).
- Times are timezone-aware UTC :class:`~datetime.datetime` values with millisecond precision, as
  ``timestamp(3)`` columns keep them.
- Enumerated values are the app's spellings (``"OWNER"``, ``"MUTED"``, ``"WHISPER"`` ...); an
  unknown one is a :class:`ValueError` before anything is written.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

SpaceRole = Literal["OWNER", "STAFF", "PARTICIPANT"]
ChatRestriction = Literal["NONE", "MUTED", "BANNED"]
SenderType = Literal["USER", "GUEST"]
MessageType = Literal["MESSAGE", "WHISPER", "PARTY", "SYSTEM", "ANNOUNCEMENT"]

SPACE_ROLES: Final = ("OWNER", "STAFF", "PARTICIPANT")
CHAT_RESTRICTIONS: Final = ("NONE", "MUTED", "BANNED")
SENDER_TYPES: Final = ("USER", "GUEST")
MESSAGE_TYPES: Final = ("MESSAGE", "WHISPER", "PARTY", "SYSTEM", "ANNOUNCEMENT")
PUBLIC_MESSAGE_TYPES: Final = ("MESSAGE", "SYSTEM", "ANNOUNCEMENT")
"""Types everyone in the space saw: the ones :meth:`Storage.recent_messages` returns."""
SPACE_EVENT_TYPES: Final = (
    "ENTER",
    "EXIT",
    "INTERACTION",
    "CHAT",
    "VOICE_START",
    "VOICE_END",
    "VIDEO_START",
    "VIDEO_END",
    "SCREEN_SHARE_START",
    "SCREEN_SHARE_END",
    "MEMBER_MUTED",
    "MEMBER_UNMUTED",
    "MEMBER_KICKED",
    "MESSAGE_DELETED",
    "STAFF_ASSIGNED",
    "STAFF_REMOVED",
)
ROTATIONS: Final = (0, 90, 180, 270)


class StorageError(Exception):
    """A storage operation failed; nothing the caller waits on should depend on it."""


class StorageUnavailable(StorageError):
    """The database could not be reached, or did not answer within the adapter's timeout."""


class SchemaError(StorageError):
    """The database lacks tables, columns or enum values spacesync needs (named in ``missing``)."""

    def __init__(self, message: str, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing = list(missing)


class InvalidLink(StorageError):
    """A map object was to be linked to an object that is missing, elsewhere or already linked."""


class _Unset:
    """Marks an argument that was not given (``None`` means "set to null")."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class Restriction:
    """A chat restriction in force: ``until`` is ``None`` for a permanent mute and for a ban."""

    restriction: ChatRestriction
    until: datetime | None
    by: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Member:
    """A ``SpaceMember`` row (one per user or guest session and space)."""

    id: str
    space_id: str
    user_id: str | None
    guest_session_id: str | None
    display_name: str | None
    role: SpaceRole
    restriction: ChatRestriction
    restricted_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A chat message to persist. ``sender_id`` is a ``User.id`` or a ``GuestSession.id``;
    ``target_id`` is the whisper's addressee or the party's id; ``created_at`` defaults to now."""

    space_id: str
    sender_id: str | None
    sender_type: SenderType
    sender_name: str
    content: str
    type: MessageType = "MESSAGE"
    target_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    space_id: str
    sender_id: str | None
    sender_type: SenderType
    sender_name: str
    content: str
    type: MessageType
    target_id: str | None
    created_at: datetime
    is_deleted: bool
    deleted_by: str | None
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class MapObject:
    """A ``MapObject`` row: an editor-placed object on the space's grid."""

    id: str
    space_id: str
    asset_id: str
    position_x: int
    position_y: int
    rotation: int
    linked_object_id: str | None
    custom_data: Any
    placed_by: str
    placed_by_type: SenderType
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SpotlightGrant:
    """A ``SpotlightGrant`` row. ``is_active`` says whether the spotlight is switched on right
    now; the *grant* (the right to switch it on) is valid while ``expires_at`` has not passed."""

    id: str
    space_id: str
    user_id: str | None
    guest_session_id: str | None
    granted_by: str
    granted_at: datetime
    expires_at: datetime | None
    is_active: bool


@dataclass(frozen=True, slots=True)
class EventLogEntry:
    id: str
    space_id: str
    user_id: str | None
    guest_session_id: str | None
    event_type: str
    payload: Any
    created_at: datetime


# -- helpers shared by the adapters -------------------------------------------------------------


def utc_now() -> datetime:
    """Now, in UTC, truncated to the millisecond precision of ``timestamp(3)``."""
    return to_ms(datetime.now(UTC))


def to_ms(value: datetime) -> datetime:
    """``value`` as aware UTC truncated to milliseconds; a naive value is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def subject(user_id: str | None, guest_session_id: str | None) -> tuple[str, str]:
    """``("user", id)`` or ``("guest", id)``: exactly one of the two must be given."""
    if (user_id is None) == (guest_session_id is None):
        raise ValueError("give exactly one of user_id and guest_session_id")
    if user_id is not None:
        return "user", user_id
    assert guest_session_id is not None
    return "guest", guest_session_id


def clean_text(value: str) -> str:
    """``value`` without NUL characters, which PostgreSQL text refuses: one such character
    would otherwise make a whole batch of messages fail."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def check_message(message: NewMessage) -> None:
    check_choice("sender_type", message.sender_type, SENDER_TYPES)
    check_choice("type", message.type, MESSAGE_TYPES)


def check_position(x: int, y: int, rotation: int) -> None:
    for name, value in (("x", x), ("y", y), ("rotation", rotation)):
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 2**31 - 1:
            raise ValueError(f"{name} must be a 32-bit integer, got {value!r}")
    check_choice("rotation", rotation, ROTATIONS)


# -- the port -----------------------------------------------------------------------------------


class Storage(abc.ABC):
    """What spacesync reads and writes in a database. See the module docstring for conventions."""

    # identity and roles

    @abc.abstractmethod
    async def user_exists(self, user_id: str) -> bool:
        """Whether ``User.id`` exists (SQLite: whether a role, restriction or spotlight grant
        ever named the user)."""

    @abc.abstractmethod
    async def is_super_admin(self, user_id: str) -> bool:
        """``User.isSuperAdmin``: platform administrators act as OWNER in every space."""

    @abc.abstractmethod
    async def space_owner(self, space_id: str) -> str | None:
        """``Space.ownerId`` (SQLite: the earliest member whose role is OWNER), or ``None``."""

    @abc.abstractmethod
    async def member_role(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> SpaceRole | None:
        """The ``SpaceMember.role`` of a user or guest session in a space, ``None`` if no row."""

    @abc.abstractmethod
    async def guest_session_id(self, space_id: str, session_token: str) -> str | None:
        """The ``GuestSession.id`` of a guest token issued for this space, or ``None``.

        Messages, restrictions and grants name guests by this id, never by the token (a token
        is a credential, and the app looks guests up by id). The app checked the token's
        validity already; this is only the translation. SQLite has no guest sessions of its own
        and gives each token a stable id on its first lookup (keeping only the token's SHA-256).
        """

    @abc.abstractmethod
    async def set_role(self, space_id: str, user_id: str, role: SpaceRole) -> Member:
        """Give a user a role in a space, creating the ``SpaceMember`` row if there is none."""

    @abc.abstractmethod
    async def list_members(self, space_id: str) -> list[Member]:
        """Every member row of a space: OWNER, then STAFF, then PARTICIPANT, oldest first."""

    async def effective_role(self, space_id: str, user_id: str) -> SpaceRole | None:
        """The role an authenticated user acts with, in the app's order of precedence: a super
        admin is OWNER everywhere; then the member row's role; a user without a member row who
        owns the space is OWNER; anyone else has no role."""
        if await self.is_super_admin(user_id):
            return "OWNER"
        role = await self.member_role(space_id, user_id=user_id)
        if role is not None:
            return role
        if await self.space_owner(space_id) == user_id:
            return "OWNER"
        return None

    # moderation

    @abc.abstractmethod
    async def get_restriction(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> Restriction | None:
        """The chat restriction in force, or ``None`` (no member row, NONE, or a lapsed mute).

        A mute whose ``restrictedUntil`` has passed is lifted in the database on the way, as
        the app's own loader does, so the row stops saying MUTED.
        """

    @abc.abstractmethod
    async def set_restriction(
        self,
        space_id: str,
        restriction: ChatRestriction,
        *,
        user_id: str | None = None,
        guest_session_id: str | None = None,
        until: datetime | None = None,
        by: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Mute (until a time, or permanently with ``until=None``), ban, or lift (``NONE``).

        MUTED and BANNED create the member row if there is none (a guest has none until then);
        NONE clears ``until``, ``by`` and ``reason`` and never creates a row. ``until`` is only
        kept for MUTED.
        """

    # chat

    @abc.abstractmethod
    async def insert_messages(self, messages: Sequence[NewMessage]) -> list[str]:
        """Insert messages in one transaction; their new ids, in the order given."""

    @abc.abstractmethod
    async def get_message(self, space_id: str, message_id: str) -> StoredMessage | None:
        """One message of this space (deleted or not), or ``None``."""

    @abc.abstractmethod
    async def soft_delete_message(self, space_id: str, message_id: str, deleted_by: str) -> bool:
        """Mark a message of this space deleted (``isDeleted``, ``deletedBy``, ``deletedAt``).

        ``False`` when there is no such message in this space or it was deleted already (the
        first deletion's author and time are kept).
        """

    @abc.abstractmethod
    async def recent_messages(
        self, space_id: str, limit: int = 50, before: datetime | None = None
    ) -> list[StoredMessage]:
        """The newest ``limit`` public messages (MESSAGE, SYSTEM, ANNOUNCEMENT; not deleted)
        created before ``before`` (default: all), returned **oldest first** so a page can be
        shown as it is. The next older page is ``before=page[0].created_at``."""

    # event log

    @abc.abstractmethod
    async def log_event(
        self,
        space_id: str,
        event_type: str,
        *,
        user_id: str | None = None,
        guest_session_id: str | None = None,
        payload: Any = None,
    ) -> str:
        """Append a ``SpaceEventLog`` row (subject may be neither, as for a system event);
        returns its id. ``payload`` is any JSON-serialisable value."""

    @abc.abstractmethod
    async def list_events(self, space_id: str, limit: int = 100) -> list[EventLogEntry]:
        """The newest event log rows of a space, newest first (for the CLI and the tests)."""

    # map objects

    @abc.abstractmethod
    async def list_objects(self, space_id: str) -> list[MapObject]:
        """Every object of a space in placing order (oldest first), as the join sync sends."""

    @abc.abstractmethod
    async def place_object(
        self,
        space_id: str,
        *,
        asset_id: str,
        x: int,
        y: int,
        placed_by: str,
        placed_by_type: SenderType,
        rotation: int = 0,
        linked_object_id: str | None = None,
        custom_data: Any = None,
    ) -> MapObject:
        """Place an object. A link must name an object of the same space that no other object
        links to yet (``linkedObjectId`` is unique), else :class:`InvalidLink`."""

    @abc.abstractmethod
    async def update_object(
        self,
        space_id: str,
        object_id: str,
        *,
        position: tuple[int, int] | None = None,
        rotation: int | None = None,
        linked_object_id: str | _Unset | None = UNSET,
        custom_data: Any = UNSET,
    ) -> MapObject | None:
        """Change the given fields of an object of this space; ``None`` if there is none.
        ``linked_object_id=None`` unlinks; ``custom_data=None`` clears."""

    @abc.abstractmethod
    async def delete_object(self, space_id: str, object_id: str) -> bool:
        """Delete an object of this space, first unlinking every object linked to it (in one
        transaction); ``False`` if there is no such object in this space."""

    # spotlight

    @abc.abstractmethod
    async def spotlight_grant(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> SpotlightGrant | None:
        """The grant of a user or guest session in a space if it has not expired, else
        ``None``. What the join reports as ``hasGrant``/``grantId``/``expiresAt``."""

    async def active_spotlight_grant(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> bool:
        """Whether the player may switch the spotlight on: a grant exists and has not expired.

        ``SpotlightGrant.isActive`` is not part of this test: it records whether the spotlight
        is on at the moment (it starts false), which :meth:`set_spotlight_active` changes.
        """
        grant = await self.spotlight_grant(space_id, user_id, guest_session_id)
        return grant is not None

    @abc.abstractmethod
    async def set_spotlight_active(
        self,
        space_id: str,
        active: bool,
        *,
        user_id: str | None = None,
        guest_session_id: str | None = None,
    ) -> bool:
        """Switch the spotlight flag of a valid grant; ``False`` if there is no valid grant."""

    @abc.abstractmethod
    async def grant_spotlight(
        self,
        space_id: str,
        *,
        granted_by: str,
        user_id: str | None = None,
        guest_session_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> SpotlightGrant:
        """Grant (or renew) the spotlight right; ``expires_at=None`` never expires. A renewal
        keeps the row and its ``isActive`` and resets ``grantedBy``, ``grantedAt``, expiry."""

    @abc.abstractmethod
    async def revoke_spotlight(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> bool:
        """Remove a grant; ``False`` if there was none."""

    # health

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StorageError` unless the database answers a trivial query now."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; the object is unusable afterwards."""

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """``"postgres"`` or ``"sqlite"``, for logs and metrics."""
