"""Where spacesync's CPU goes under the capacity workload: py-spy on a loaded server.

Starts spacesync pinned to core 0 (the working tree, or ``--spacesync-rev REV``), drives it with
``loadgen.py move`` pinned to core 1 (N players, batched by default, 60 moves/s), samples the
server with ``py-spy record --nonblocking`` while the players move, and prints the functions with
the most self time and the most total time (per function, lines merged), plus the load step's
figures. Writes the raw stacks, a flame graph (SVG) and the summary into ``--out``.

    python bench/profile.py                              # N=300, batched, 20 s of sampling
    python bench/profile.py --spacesync-rev HEAD --n 300 --seconds 20
    python bench/profile.py --plain --n 200

Needs py-spy in the interpreter's environment (``pip install py-spy``) and ptrace rights on the
server (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from run import REPO, RESULTS, Server, default_python, export_revision, pinned

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
LINE_SUFFIX = re.compile(r":\d+\)$")


def function_of(frame: str) -> str:
    """``name (path/file.py:123)`` -> ``name (path/file.py)``: lines of a function merged."""
    return LINE_SUFFIX.sub(")", frame)


def summarize(raw: Path, top: int) -> dict[str, object]:
    """Self and total sample shares per function from py-spy's collapsed stacks."""
    self_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count_s = line.rpartition(" ")
        count = int(count_s)
        frames = [function_of(f) for f in stack.split(";")]
        samples += count
        self_c[frames[-1]] += count
        for f in set(frames):
            total_c[f] += count
    if not samples:
        return {"samples": 0, "self": [], "total": []}

    def share(c: Counter[str], below: float = 101.0) -> list[tuple[str, float]]:
        ranked = [(f, round(100.0 * k / samples, 1)) for f, k in c.most_common()]
        return [(f, pct) for f, pct in ranked if pct < below][:top]

    # The total list leaves out the frames (nearly) every sample has: interpreter start-up and
    # the event loop's run, whose own native work shows in the self list.
    root = 100.0 * max(total_c.values()) / samples
    return {"samples": samples, "self": share(self_c), "total": share(total_c, below=root - 1.0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="players")
    p.add_argument("--rate", type=float, default=60.0, help="moves per second per player")
    p.add_argument("--plain", action="store_true", help="plain protocol (default: batched)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of sampling")
    p.add_argument("--sample-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25, help="functions listed")
    p.add_argument("--spacesync-rev", default=None, help="profile this git revision's src/")
    p.add_argument("--python", default=default_python())
    p.add_argument("--out", default=None, help="output directory (default: bench/results/)")
    args = p.parse_args(argv)

    pyspy = shutil.which("py-spy", path=str(Path(args.python).parent)) or shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy not found: pip install py-spy (into the project virtualenv)")
    # Absolute: the extracted revision goes on the server's PYTHONPATH, and the server runs
    # from the repository root.
    out = (
        Path(args.out).resolve()
        if args.out
        else RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    out.mkdir(parents=True, exist_ok=True)
    env = {"NODE_ENV": "development", "LOG_LEVEL": "warn", "HANDSHAKES_PER_IP": "0"}
    revision = "working tree"
    if args.spacesync_rev:
        full, src = export_revision(args.spacesync_rev, out)
        env["PYTHONPATH"] = str(src)
        revision = full[:10]
    server = Server(
        name="spacesync",
        argv=[args.python, "-m", "spacesync"],
        env=env,
        cwd=REPO,
        log_path=out / "spacesync.log",
    )
    server.start()
    try:
        server.wait_quiet(machine_limit_s=10)
        warm = 4.0  # joins and the first moves before sampling starts
        duration = args.seconds + warm + 2.0
        gen_argv = [
            args.python,
            str(LOADGEN),
            "move",
            "--url",
            server.url,
            "--server-pid",
            server.pid_arg,
            "--n",
            str(args.n),
            "--rate",
            str(args.rate),
            "--duration",
            str(duration),
            *([] if args.plain else ["--batched"]),
        ]
        gen = subprocess.Popen(
            pinned("1", gen_argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        time.sleep(warm)
        raw = out / "profile.txt"
        svg = out / "profile.svg"
        common = ["--pid", str(server.pid), "-r", str(args.sample_rate), "--nonblocking"]
        subprocess.run(
            [pyspy, "record", *common, "-d", str(int(args.seconds)), "-f", "raw", "-o", str(raw)],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [pyspy, "record", *common, "-d", "3", "-o", str(svg)], check=False, capture_output=True
        )
        stdout, _ = gen.communicate(timeout=duration + 180)
    finally:
        server.stop()
    step = json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])
    summary = summarize(raw, args.top)
    keys = ("n", "batched", "p50_ms", "p99_ms", "pair_rate_min", "convergence_pct")
    keys += ("server_cpu_pct", "gen_cpu_pct", "cores")
    result = {
        "revision": revision,
        "step": {k: step.get(k) for k in keys},
        "profile": summary,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"spacesync {revision}, N={args.n}, {'plain' if args.plain else 'batched'}, "
        f"{args.rate:g} moves/s, {summary['samples']} samples over {args.seconds:g} s",
        "step: " + ", ".join(f"{k} {step.get(k)}" for k in keys),
        "",
        "| self % | function |",
        "|---:|---|",
        *[f"| {pct} | `{f}` |" for f, pct in summary["self"]],  # type: ignore[attr-defined]
        "",
        "| total % | function |",
        "|---:|---|",
        *[f"| {pct} | `{f}` |" for f, pct in summary["total"]],  # type: ignore[attr-defined]
    ]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text)
    print(f"[profile] raw stacks, flame graph and summary in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
