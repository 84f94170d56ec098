"""Process and server figures for ``/metrics`` (SPEC §10)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import shutil
import time
from datetime import UTC, datetime
from typing import Any

import psutil

METRICS_VERSION = "2.0.0"
_GIB = 1024**3
LOOP_LAG_PERIOD = 0.5
_MIB = 1024**2


def format_uptime(seconds: float) -> str:
    """``1d 2h 3m 4s`` with zero parts left out; ``0s`` when everything is zero."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{v}{unit}" for v, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v
    ]
    return " ".join(parts) if parts else "0s"


def storage(path: str = "/") -> dict[str, Any] | None:
    """The root file system's size in GiB (2 decimals), or ``None`` if it cannot be read.

    ``usedPercent`` is what ``df`` prints as Use%: used ÷ (used + available), rounded up. The
    blocks reserved for root count as neither, so used ÷ total would read several points low on
    an ordinary ext4 disk and an alert on it would fire too late.
    """
    usage = disk_usage(path)
    return None if usage is None else storage_figures(*usage, path=path)


def disk_usage(path: str = "/") -> tuple[int, int, int] | None:
    """Total, used and free (available to unprivileged users) bytes of a file system."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.total, usage.used, usage.free


def storage_figures(total: int, used: int, free: int, path: str = "/") -> dict[str, Any]:
    """The ``storage`` section of ``/metrics`` from a file system's bytes (see :func:`storage`)."""
    usable = used + free
    used_percent = -(-used * 100 // usable) if usable else 0
    return {
        "totalGB": round(total / _GIB, 2),
        "usedGB": round(used / _GIB, 2),
        "availableGB": round(free / _GIB, 2),
        "usedPercent": used_percent,
        "mountPoint": path,
    }


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _load_mallinfo2() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        func = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    func.restype = _MallInfo2
    func.argtypes = []
    return func


_mallinfo2 = _load_mallinfo2()


def heap_used_bytes(process: psutil.Process) -> int:
    """Bytes the allocator has handed out (glibc ``mallinfo2``: in-use heap plus mmapped blocks).

    Python's own small-object arenas are carved from these, so this is the memory held by the
    Python allocator. Off glibc, the process's unique set size is the nearest figure.
    """
    if _mallinfo2 is not None:
        info = _mallinfo2()
        return int(info.uordblks + info.hblkhd)
    try:
        return int(process.memory_full_info().uss)
    except (psutil.Error, AttributeError):
        return int(process.memory_info().rss)


class ProcessFigures:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.started = time.time()

    @property
    def uptime(self) -> float:
        return time.time() - self.started

    def snapshot(self) -> dict[str, Any]:
        rss = int(self.process.memory_info().rss)
        heap = heap_used_bytes(self.process)
        cpu = self.process.cpu_times()
        user_us = int(cpu.user * 1_000_000)
        system_us = int(cpu.system * 1_000_000)
        uptime = self.uptime
        return {
            "uptime": {
                "seconds": int(uptime),
                "formatted": format_uptime(uptime),
                "startTime": datetime.fromtimestamp(self.started, UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
            },
            "process": {"memory": {"rssMB": round(rss / _MIB), "heapUsedMB": round(heap / _MIB)}},
            "memory": {
                "rss": rss,
                "heapUsed": heap,
                "rssMB": round(rss / _MIB),
                "heapUsedMB": round(heap / _MIB),
            },
            "cpu": {"user": user_us, "system": system_us, "totalMicroseconds": user_us + system_us},
            "storage": storage("/"),
        }

    def runtime(self) -> dict[str, int | None]:
        """What a leak would show first: asyncio tasks, open file descriptors, threads."""
        try:
            fds: int | None = self.process.num_fds()
        except (psutil.Error, AttributeError):
            fds = None
        return {
            "tasks": len(asyncio.all_tasks()),
            "openFiles": fds,
            "threads": self.process.num_threads(),
        }


class LoopLag:
    """How late the event loop runs a timer: the symptom of a stall (a handler hogging the loop,
    a join storm, a huge broadcast). Sampled every :data:`LOOP_LAG_PERIOD` seconds; the worst
    sample of the last minute and the latest one are reported."""

    def __init__(self) -> None:
        self.latest_ms = 0.0
        self._window: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LOOP_LAG_PERIOD)
            now = loop.time()
            lag = max(0.0, (now - before - LOOP_LAG_PERIOD) * 1000)
            self.latest_ms = lag
            self._window.append((now, lag))
            while self._window and now - self._window[0][0] > 60.0:
                self._window.pop(0)

    def figures(self) -> dict[str, float]:
        worst = max((lag for _, lag in self._window), default=0.0)
        return {"latestMs": round(self.latest_ms, 1), "maxLastMinuteMs": round(worst, 1)}

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
