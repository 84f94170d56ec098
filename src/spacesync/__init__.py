"""spacesync: a real-time Socket.IO server for 2D virtual spaces."""

__version__ = "0.1.0"
