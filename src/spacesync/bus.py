"""The bus: what one node sends to the players and the handlers of the other nodes.

The broadcaster delivers everything to this node's own sockets and hands the bus what the other
nodes' sockets must also get; the bus hands what arrives from the other nodes to the one
:class:`BusHandler` registered on it. Two implementations:

- :class:`~spacesync.cluster.RedisBus`: Redis pub/sub between the nodes of a cluster;
- :class:`LocalBus`: a node on its own. There is nobody to send to, so publishing does nothing,
  and nothing ever arrives.
"""

from __future__ import annotations

from typing import Any, Protocol


class BusHandler(Protocol):
    """What a node does with messages from the other nodes."""

    def deliver_event(self, space_id: str, packet: bytes, players: list[str] | None) -> None:
        """A Socket.IO packet for this node's sockets in the space (or only ``players``')."""

    def deliver_moves(self, space_id: str, bodies: list[bytes], ids: list[str]) -> None:
        """One tick of ``player:moved`` payloads for this node's sockets in the space."""

    def holds(self, space_id: str, player_id: str) -> bool:
        """Whether a socket of this node is in the space as that player (a departure notice
        about such a player comes from a node that took this one for dead, and is dropped)."""

    async def evict(self, space_id: str, player_id: str, sid: str) -> None:
        """Close ``sid``: its player joined again through another node."""

    async def signal(self, space_id: str, body: dict[str, Any]) -> None:
        """An order about a player of the space (a kick, a mute) from another node."""


class AlreadyRegistered(RuntimeError):
    """A bus delivers to one handler; a second :meth:`Bus.register` is a wiring mistake."""


class Bus(Protocol):
    """Publishing to the other nodes, and the one handler of what they publish."""

    published: int
    received: int
    dropped: int

    @property
    def connected(self) -> bool:
        """Whether the bus can reach the other nodes now (a node on its own always can)."""

    def register(self, handler: BusHandler) -> None:
        """Give the bus the handler of what the other nodes send; once, before :meth:`start`.
        Raises :class:`AlreadyRegistered` the second time."""

    async def watch(self, space_id: str) -> None:
        """This node serves players of the space from now on: follow what is sent to it."""

    async def unwatch(self, space_id: str) -> None:
        """This node no longer serves players of the space."""

    def publish_event(
        self, space_id: str, packet: bytes, players: list[str] | None, about: str | None = None
    ) -> None:
        """A Socket.IO packet for the space's players (or only ``players``) on other nodes;
        ``about``: the player a departure notice is about (see :meth:`BusHandler.holds`)."""

    def publish_moves(self, space_id: str, bodies: list[bytes], ids: list[str]) -> None:
        """One tick of ``player:moved`` payloads, already encoded."""

    def publish_evict(self, node: str, space_id: str, player_id: str, sid: str) -> None:
        """Ask ``node`` to close ``sid``: its player joined again through this node."""

    def publish_signal(self, space_id: str, body: dict[str, Any]) -> None:
        """An order about players of a space for every node serving it."""

    def start(self) -> None: ...

    async def drain(self, timeout: float) -> None:
        """Wait until everything published so far has gone out, or ``timeout``."""

    async def close(self) -> None: ...


class LocalBus:
    """The bus of a node on its own: no other node to publish to, none to hear from."""

    def __init__(self) -> None:
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.handler: BusHandler | None = None

    @property
    def connected(self) -> bool:
        return True

    def register(self, handler: BusHandler) -> None:
        if self.handler is not None:
            raise AlreadyRegistered("the bus already has a handler")
        self.handler = handler

    async def watch(self, space_id: str) -> None:
        return None

    async def unwatch(self, space_id: str) -> None:
        return None

    def publish_event(
        self, space_id: str, packet: bytes, players: list[str] | None, about: str | None = None
    ) -> None:
        return None

    def publish_moves(self, space_id: str, bodies: list[bytes], ids: list[str]) -> None:
        return None

    def publish_evict(self, node: str, space_id: str, player_id: str, sid: str) -> None:
        return None

    def publish_signal(self, space_id: str, body: dict[str, Any]) -> None:
        return None

    def start(self) -> None:
        return None

    async def drain(self, timeout: float) -> None:
        return None

    async def close(self) -> None:
        return None
