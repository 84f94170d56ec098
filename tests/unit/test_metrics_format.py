"""Figures shown by `GET /metrics` (SPEC §10)."""

from __future__ import annotations

import re
import subprocess
from collections import namedtuple
from datetime import datetime

import pytest

from spacesync.observability import metrics
from spacesync.observability.metrics import METRICS_VERSION, ProcessFigures, format_uptime, storage

GIB = 1024**3
DiskUsage = namedtuple("DiskUsage", "total used free")


# -- uptime -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (61, "1m 1s"),
        (3600, "1h"),
        (3601, "1h 1s"),
        (3660, "1h 1m"),
        (3723, "1h 2m 3s"),
        (86_400, "1d"),
        (86_401, "1d 1s"),
        (90_000, "1d 1h"),
        (93_784, "1d 2h 3m 4s"),
        (86_400 * 30 + 59, "30d 59s"),
        (86_400 * 400, "400d"),
    ],
)
def test_uptime_omits_zero_parts(seconds: int, text: str) -> None:
    """SPEC §10: `formatted` is "1d 2h 3m 4s"-style and omits zero parts."""
    assert format_uptime(seconds) == text


def test_uptime_of_zero_shows_zero_seconds() -> None:
    """SPEC §10: `0s` is shown when everything is zero."""
    assert format_uptime(0) == "0s"
    assert format_uptime(0.4) == "0s"


def test_uptime_counts_whole_seconds() -> None:
    """SPEC §10: uptime `seconds` is an integer; the formatted text agrees with it."""
    assert format_uptime(61.9) == "1m 1s"
    assert format_uptime(3599.999) == "59m 59s"


def test_uptime_never_shows_a_negative_part() -> None:
    """SPEC §10: a clock step backwards must not produce nonsense like "-1s"."""
    assert format_uptime(-5) == "0s"


@pytest.mark.parametrize("seconds", [0, 1, 59, 61, 3601, 86_399, 86_401, 1_000_000, 12_345_678])
def test_uptime_parts_add_up(seconds: int) -> None:
    """SPEC §10: the formatted parts name the same duration as `seconds`."""
    text = format_uptime(seconds)
    assert re.fullmatch(r"(\d+d)?( ?\d+h)?( ?\d+m)?( ?\d+s)?", text)
    scale = {"d": 86_400, "h": 3600, "m": 60, "s": 1}
    total = sum(int(part[:-1]) * scale[part[-1]] for part in text.split())
    assert total == seconds
    assert all(not part.startswith("0") for part in text.split()) or text == "0s"


# -- storage ------------------------------------------------------------------------------------


def test_storage_reports_gib_to_two_decimals(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §10: the root file system's figures in GiB rounded to 2 decimals."""
    total = round(44.96 * GIB)
    used = round(4.61 * GIB)
    free = round(40.33 * GIB)
    monkeypatch.setattr(metrics.shutil, "disk_usage", lambda path: DiskUsage(total, used, free))
    assert storage("/") == {
        "totalGB": 44.96,
        "usedGB": 4.61,
        "availableGB": 40.33,
        "usedPercent": 11,  # 4.61 / (4.61 + 40.33) = 10.3 %, rounded up as df does
        "mountPoint": "/",
    }


def test_storage_used_percent_is_dfs_use_percent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use% as df prints it: used ÷ (used + available), rounded up; reserved blocks are
    neither used nor available (here 20 used, 60 available of 100: df says 25%, not 20%)."""
    monkeypatch.setattr(
        metrics.shutil, "disk_usage", lambda path: DiskUsage(100 * GIB, 20 * GIB, 60 * GIB)
    )
    figures = storage("/")
    assert figures is not None and figures["usedPercent"] == 25
    monkeypatch.setattr(metrics.shutil, "disk_usage", lambda path: DiskUsage(1000, 201, 799))
    figures = storage("/")
    assert figures is not None and figures["usedPercent"] == 21  # 20.1 % rounds up


def test_storage_used_percent_matches_df_on_this_machine() -> None:
    """The figure the app's dashboard shows is the one `df -B1 /` shows for the same disk."""
    out = subprocess.run(
        ["df", "-B1", "/"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    use_percent = int(out.splitlines()[1].split()[4].rstrip("%"))
    figures = storage("/")
    assert figures is not None
    assert abs(figures["usedPercent"] - use_percent) <= 1  # the disk may change in between


def test_storage_is_null_when_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §10: storage is `null` if it cannot be read."""

    def broken(path: str) -> DiskUsage:
        raise PermissionError(path)

    monkeypatch.setattr(metrics.shutil, "disk_usage", broken)
    assert storage("/") is None


def test_storage_of_a_missing_mount_is_null() -> None:
    """SPEC §10: storage is `null` if it cannot be read."""
    assert storage("/no/such/mount/point/anywhere") is None


def test_storage_of_the_real_root_is_consistent() -> None:
    """SPEC §10: real figures are numbers with 2 decimals and a whole-number percentage."""
    figures = storage("/")
    assert figures is not None
    assert figures["mountPoint"] == "/"
    for key in ("totalGB", "usedGB", "availableGB"):
        assert isinstance(figures[key], float)
        assert figures[key] == round(figures[key], 2)
        assert figures[key] >= 0
    assert figures["usedGB"] <= figures["totalGB"]
    assert isinstance(figures["usedPercent"], int)
    assert 0 <= figures["usedPercent"] <= 100


# -- process snapshot ---------------------------------------------------------------------------


def test_metrics_version_is_2_0_0() -> None:
    """SPEC §10: `/metrics` reports version 2.0.0."""
    assert METRICS_VERSION == "2.0.0"


def test_process_snapshot_has_the_documented_shape() -> None:
    """SPEC §10: uptime, process memory, memory, cpu and storage blocks."""
    figures = ProcessFigures()
    snapshot = figures.snapshot()
    assert set(snapshot) >= {"uptime", "process", "memory", "cpu", "storage"}

    uptime = snapshot["uptime"]
    assert isinstance(uptime["seconds"], int)
    assert uptime["formatted"] == format_uptime(uptime["seconds"])
    assert uptime["startTime"].endswith("Z")
    started = datetime.fromisoformat(uptime["startTime"].replace("Z", "+00:00"))
    assert abs(started.timestamp() - figures.started) < 0.01

    assert set(snapshot["process"]["memory"]) == {"rssMB", "heapUsedMB"}
    memory = snapshot["memory"]
    assert set(memory) == {"rss", "heapUsed", "rssMB", "heapUsedMB"}
    assert all(isinstance(v, int) and v >= 0 for v in memory.values())
    assert memory["rss"] > 0
    assert memory["rssMB"] == round(memory["rss"] / 1024**2)
    assert snapshot["process"]["memory"]["rssMB"] == memory["rssMB"]

    cpu = snapshot["cpu"]
    assert set(cpu) == {"user", "system", "totalMicroseconds"}
    assert cpu["totalMicroseconds"] == cpu["user"] + cpu["system"]
    assert all(isinstance(v, int) for v in cpu.values())


def test_uptime_grows_from_the_start_time() -> None:
    """SPEC §10: uptime is the time since the process started."""
    figures = ProcessFigures()
    figures.started -= 3723.2
    snapshot = figures.snapshot()
    assert snapshot["uptime"]["seconds"] == 3723
    assert snapshot["uptime"]["formatted"] == "1h 2m 3s"
