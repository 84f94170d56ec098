"""The Socket.IO transport: Engine.IO v4 (:mod:`.engine`) and Socket.IO v5 (:mod:`.socketio`)
over aiohttp, with packets encoded and decoded in :mod:`.codec`."""

from .engine import Connection, EngineOptions, EngineServer
from .socketio import ConnectionRefused, SocketServer

__all__ = ["Connection", "ConnectionRefused", "EngineOptions", "EngineServer", "SocketServer"]
