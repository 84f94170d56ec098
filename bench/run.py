"""Side-by-side benchmark runner: spacesync against the Node.js Socket.IO peer.

Starts each server itself (pinned to core 0), drives it with ``loadgen.py`` (pinned to core 1),
alternates the servers at every step, and prints markdown tables: one per server, one side by
side with the ratio spacesync / peer, and the machine the figures come from.

    python bench/run.py                          # capacity at 60 moves/s, default N steps
    python bench/run.py --rate 10                # the throttled-client workload
    python bench/run.py --batched                # spacesync clients join with positionBatching
    python bench/run.py --mode idle              # RSS per joined idle connection (1k, 5k)
    python bench/run.py --mode storm             # 1,000 clients join one space at once
    python bench/run.py --mode all --quick       # short smoke run of every mode

Capacity = the largest N with p99 latency <= 150 ms, convergence 100 % and every observed pair
receiving at least min(rate, 15) updates per second. Full JSON results are written to
bench/results/ (not versioned).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEER_DIR = BENCH / "peer"
RESULTS = BENCH / "results"
LOADGEN = BENCH / "loadgen.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")

SERVER_CORE = "0"
GENERATOR_CORE = "1"

P99_LIMIT_MS = 150.0
MIN_PAIR_RATE = 15.0
GEN_BOUND_PCT = 90.0
GEN_LAG_MS = 30.0
NOISE_PCT = 10.0
QUIET_WAIT_S = 30.0  # --quiet-wait

DEFAULT_STEPS = "10,15,20,25,30,35,40,50,60,70,80,100,120,140,160,200,250,300"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[run] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_busy_ticks() -> dict[str, int]:
    """Busy jiffies (user + nice + system + steal) of the two benchmark cores."""
    wanted = {f"cpu{SERVER_CORE}", f"cpu{GENERATOR_CORE}"}
    busy: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if name in wanted:
                v = [int(x) for x in values[:8]]
                busy[name] = v[0] + v[1] + v[2] + v[7]
    return busy


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def default_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def command_output(argv: list[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def pinned(core: str, argv: list[str]) -> list[str]:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return argv
    return ["taskset", "-c", core, *argv]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    failures_in_a_row: int = 0
    done: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        env = {**os.environ, **self.env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = self.log_path.open("ab")
        logf.write(f"--- start {time.strftime('%H:%M:%S')} port {self.port}\n".encode())
        logf.flush()
        # taskset execs the server, so the pid is the server's own.
        self.proc = subprocess.Popen(
            pinned(SERVER_CORE, self.argv),
            cwd=self.cwd,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        log(f"{self.name} up on port {self.port} (pid {self.pid})")
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /health within 30 s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=12)
        except subprocess.TimeoutExpired:
            log(f"{self.name} ignored SIGTERM for 12 s; killing it")
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_quiet(
        self,
        threshold_pct: float = 5.0,
        limit_s: float = 300.0,
        machine_limit_s: float | None = None,
    ) -> float:
        """Wait until the server is idle (the previous step's clean-up is over; up to
        ``limit_s``), then until both benchmark cores are quiet (nothing else is running on the
        machine; up to ``machine_limit_s`` more)."""
        if machine_limit_s is None:
            machine_limit_s = QUIET_WAIT_S
        t_start = time.monotonic()
        t_idle: float | None = None
        while True:
            c0, k0 = proc_cpu_seconds(self.pid), core_busy_ticks()
            time.sleep(0.5)
            c1, k1 = proc_cpu_seconds(self.pid), core_busy_ticks()
            now = time.monotonic()
            server_idle = c0 is None or c1 is None or (c1 - c0) / 0.5 * 100 < threshold_pct
            busiest = max(
                ((k1[c] - k0[c]) / CLK_TCK / 0.5 * 100 for c in k0 if c in k1), default=0.0
            )
            if server_idle and busiest < 2 * threshold_pct:
                break
            if not server_idle and now - t_start > limit_s:
                log(f"{self.name} is still busy after {limit_s:.0f} s; measuring anyway")
                break
            if server_idle:
                t_idle = t_idle or now
                if now - t_idle >= machine_limit_s:
                    if machine_limit_s > 0:
                        log(
                            f"other work keeps the machine busy ({busiest:.0f} % of a core); "
                            "measuring anyway"
                        )
                    break
        return time.monotonic() - t_start


def make_servers(names: list[str], python: str, run_dir: Path) -> list[Server]:
    servers = []
    for name in names:
        if name == "peer":
            servers.append(
                Server(
                    name="peer",
                    argv=["node", "server.js"],
                    env={"NODE_ENV": "production"},
                    cwd=PEER_DIR,
                    log_path=run_dir / "peer.log",
                )
            )
        elif name == "spacesync":
            servers.append(
                Server(
                    name="spacesync",
                    argv=[python, "-m", "spacesync"],
                    env={"NODE_ENV": "development", "LOG_LEVEL": "warn"},
                    cwd=REPO,
                    log_path=run_dir / "spacesync.log",
                )
            )
        else:
            raise SystemExit(f"unknown server {name!r} (use peer, spacesync)")
    return servers


def ensure_peer_installed() -> None:
    if (PEER_DIR / "node_modules" / "socket.io").exists():
        return
    log("installing the peer's dependencies (npm ci)")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER_DIR, check=True
    )


def log_problems(server: Server) -> list[str]:
    """Error-level lines and tracebacks the server wrote during the run."""
    try:
        lines = server.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    bad = [
        ln
        for ln in lines
        if '"level": "error"' in ln
        or '"level":"error"' in ln
        or ln.startswith("Traceback")
        or "Error:" in ln
    ]
    return bad[:10]


# --------------------------------------------------------------------------------------------
# Load generator
# --------------------------------------------------------------------------------------------


def loadgen(python: str, mode: str, server: Server, extra: list[str], timeout: float) -> dict:
    argv = pinned(
        GENERATOR_CORE,
        [
            python,
            str(LOADGEN),
            mode,
            "--url",
            server.url,
            "--server-pid",
            str(server.pid),
            *extra,
        ],
    )
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"load generator timed out after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = out.stderr.strip().splitlines()[-3:]
        return {"failed": f"load generator exited {out.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    if not server.alive():
        result["failed"] = f"{server.name} exited during the step"
    return result


# --------------------------------------------------------------------------------------------
# Capacity
# --------------------------------------------------------------------------------------------


def noise(result: dict[str, Any]) -> float | None:
    """CPU taken from the two benchmark cores by anything else during the moving window.

    Core busy time (any process) minus the server's CPU on the server core and the generator's
    on the generator core, plus hypervisor steal; the larger of the two cores, in % of a core.
    """
    cores = result.get("cores") or {}
    c_srv, c_gen = cores.get(f"cpu{SERVER_CORE}"), cores.get(f"cpu{GENERATOR_CORE}")
    if not c_srv or not c_gen:
        return None
    srv = c_srv["busy"] - (result.get("server_cpu_pct") or 0.0) + c_srv["steal"]
    gen = c_gen["busy"] - (result.get("gen_cpu_pct") or 0.0) + c_gen["steal"]
    return round(max(0.0, srv, gen), 1)


def judge(result: dict[str, Any], rate: float) -> tuple[bool, str]:
    """Apply the capacity criteria; returns (passed, reason when it did not)."""
    if "failed" in result:
        return False, str(result["failed"])
    reasons = []
    p99 = result.get("p99_ms")
    if p99 is None or p99 > P99_LIMIT_MS:
        reasons.append(f"p99 {fmt(p99)} ms")
    conv = result.get("convergence_pct")
    if conv is None or conv < 100.0:
        reasons.append(f"convergence {fmt(conv, 2)} %")
    need = min(rate, MIN_PAIR_RATE)
    low = result.get("pair_rate_min")
    if low is None or low < need - 1e-6:
        reasons.append(f"slowest pair {fmt(low)}/s < {need:g}/s")
    if result.get("disconnects"):
        reasons.append(f"{result['disconnects']} disconnects")
    return (not reasons), "; ".join(reasons)


def run_capacity(args: argparse.Namespace, servers: list[Server]) -> dict[str, Any]:
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    move_args = [
        "--rate",
        str(args.rate),
        "--duration",
        str(args.duration),
        "--observers",
        str(args.observers),
    ]
    timeout = 120 + args.duration + 60
    for server in servers:
        server.results = []
        server.failures_in_a_row = 0
        server.done = False
        server.wait_quiet()
        log(f"warming up {server.name}")
        warm = ["--n", "10", "--rate", str(args.rate), "--duration", "2", "--observers", "2"]
        warm += ["--batched"] if args.batched and server.name == "spacesync" else []
        loadgen(args.python, "move", server, warm, timeout)

    for i, n in enumerate(steps):
        order = servers if i % 2 == 0 else list(reversed(servers))
        for server in order:
            if server.done:
                continue
            if not server.alive():
                log(f"{server.name} is not running; stopping its steps")
                server.done = True
                continue
            server.wait_quiet()
            extra = ["--n", str(n), *move_args]
            if args.batched and server.name == "spacesync":
                extra.append("--batched")
            log(f"{server.name}: N={n} at {args.rate:g} moves/s for {args.duration:g} s")
            result = loadgen(args.python, "move", server, extra, timeout)
            passed, why = judge(result, args.rate)
            result["noise_pct"] = noise(result)
            retries = args.noise_retries
            while not passed and retries > 0 and (result["noise_pct"] or 0) >= NOISE_PCT:
                retries -= 1
                log(
                    f"  failed ({why}) while other work took {result['noise_pct']} % of a core;"
                    " running the step again"
                )
                server.wait_quiet()
                first = result
                result = loadgen(args.python, "move", server, extra, timeout)
                result["noise_pct"] = noise(result)
                result["noisy_attempt"] = first
                passed, why = judge(result, args.rate)
            result["n"] = n
            result["pass"] = passed
            result["why"] = why
            result["gen_bound"] = (result.get("gen_cpu_pct") or 0) >= GEN_BOUND_PCT
            result["gen_lagging"] = (result.get("gen_lag_p99_ms") or 0) >= GEN_LAG_MS
            server.results.append(result)
            log(
                f"  p50 {fmt(result.get('p50_ms'))} ms, p99 {fmt(result.get('p99_ms'))} ms, "
                f"min pair {fmt(result.get('pair_rate_min'))}/s, "
                f"conv {fmt(result.get('convergence_pct'), 2)} %, "
                f"server CPU {fmt(result.get('server_cpu_pct'))} %, "
                f"gen CPU {fmt(result.get('gen_cpu_pct'))} %, "
                f"noise {fmt(result.get('noise_pct'))} % -> "
                f"{'pass' if passed else 'FAIL: ' + why}"
            )
            server.failures_in_a_row = 0 if passed else server.failures_in_a_row + 1
            if server.failures_in_a_row >= args.fail_limit:
                server.done = True
        if all(s.done for s in servers):
            break

    capacity = {}
    for server in servers:
        passing = [r["n"] for r in server.results if r["pass"]]
        capacity[server.name] = max(passing) if passing else 0
    return {
        "steps": steps,
        "capacity": capacity,
        "results": {s.name: s.results for s in servers},
    }


def capacity_report(args: argparse.Namespace, data: dict[str, Any]) -> str:
    out = []
    title = f"{args.rate:g} moves/s per player, {args.duration:g} s of moving per step"
    if args.batched:
        title += ", spacesync clients join with positionBatching"
    out.append(f"## Capacity — {title}\n")
    for name, results in data["results"].items():
        out.append(f"### {name}\n")
        out.append(
            "| N | p50 ms | p99 ms | slowest pair /s | median pair /s | convergence % "
            "| updates/s | server CPU % | µs CPU/update | server RSS MB | gen CPU % "
            "| gen lag p99 ms | noise % | stale | result |"
        )
        out.append("|" + "---:|" * 14 + "---|")
        for r in results:
            verdict = "pass" if r["pass"] else f"fail ({r['why']})"
            if r.get("gen_bound"):
                verdict += " — generator-bound"
            elif r.get("gen_lagging"):
                verdict += " — generator lagging (latency overstated)"
            out.append(
                f"| {r['n']} | {fmt(r.get('p50_ms'))} | {fmt(r.get('p99_ms'))} "
                f"| {fmt(r.get('pair_rate_min'))} | {fmt(r.get('pair_rate_median'))} "
                f"| {fmt(r.get('convergence_pct'), 2)} | {fmt(r.get('updates_per_s'))} "
                f"| {fmt(r.get('server_cpu_pct'))} | {fmt(r.get('server_us_per_update'), 2)} "
                f"| {fmt(r.get('server_rss_mb'))} | {fmt(r.get('gen_cpu_pct'))} "
                f"| {fmt(r.get('gen_lag_p99_ms'))} | {fmt(r.get('noise_pct'))} "
                f"| {fmt(r.get('stale'))} | {verdict} |"
            )
        out.append("")
    names = list(data["results"])
    if "peer" in names and "spacesync" in names:
        peer = {r["n"]: r for r in data["results"]["peer"]}
        ss = {r["n"]: r for r in data["results"]["spacesync"]}
        out.append("### Side by side (ratio = spacesync / peer)\n")
        out.append(
            "| N | p99 ms peer | p99 ms spacesync | ratio | server CPU % peer "
            "| server CPU % spacesync | ratio | µs/update peer | µs/update spacesync | ratio "
            "| RSS MB peer | RSS MB spacesync | ratio | gen CPU % peer | gen CPU % spacesync |"
        )
        out.append("|" + "---:|" * 15)
        for n in data["steps"]:
            a, b = peer.get(n), ss.get(n)
            if a is None and b is None:
                continue
            a = a or {}
            b = b or {}
            out.append(
                f"| {n} | {fmt(a.get('p99_ms'))} | {fmt(b.get('p99_ms'))} "
                f"| {ratio(b.get('p99_ms'), a.get('p99_ms'))} "
                f"| {fmt(a.get('server_cpu_pct'))} | {fmt(b.get('server_cpu_pct'))} "
                f"| {ratio(b.get('server_cpu_pct'), a.get('server_cpu_pct'))} "
                f"| {fmt(a.get('server_us_per_update'), 2)} "
                f"| {fmt(b.get('server_us_per_update'), 2)} "
                f"| {ratio(b.get('server_us_per_update'), a.get('server_us_per_update'))} "
                f"| {fmt(a.get('server_rss_mb'))} | {fmt(b.get('server_rss_mb'))} "
                f"| {ratio(b.get('server_rss_mb'), a.get('server_rss_mb'))} "
                f"| {fmt(a.get('gen_cpu_pct'))} | {fmt(b.get('gen_cpu_pct'))} |"
            )
        out.append("")
    cap = data["capacity"]
    line = ", ".join(f"{k} **{v}**" for k, v in cap.items())
    if cap.get("peer") and "spacesync" in cap:
        line += f" — ratio spacesync / peer = **{cap['spacesync'] / cap['peer']:.2f}**"
    out.append(f"**Capacity** (largest N passing): {line}")
    last_step = data["steps"][-1] if data["steps"] else None
    for name, c in cap.items():
        if c and c == last_step:
            out.append(f"\n({name} passed the largest step; its capacity is at least {c}.)")
    gen_bound = [
        f"{name} N={r['n']}" for name, rs in data["results"].items() for r in rs if r["gen_bound"]
    ]
    if gen_bound:
        out.append(
            "\nGenerator-bound steps (the generator used ≥ "
            f"{GEN_BOUND_PCT:g} % of its core; they measure the generator): " + ", ".join(gen_bound)
        )
    lagging = [
        f"{name} N={r['n']}"
        for name, rs in data["results"].items()
        for r in rs
        if r.get("gen_lagging") and not r["gen_bound"]
    ]
    if lagging:
        out.append(
            f"\nSteps where the generator's loop woke ≥ {GEN_LAG_MS:g} ms late (p99), so part of "
            "the latency measured is the generator's: " + ", ".join(lagging)
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Idle footprint and join storm
# --------------------------------------------------------------------------------------------


def run_idle(args: argparse.Namespace, servers: list[Server]) -> dict[str, Any]:
    counts = [int(c) for c in args.idle_counts.split(",") if c.strip()]
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
    for count in counts:
        for server in servers:
            # A fresh process per count, so that one figure does not inherit another's heap.
            if server.alive():
                server.wait_quiet()
            server.stop()
            server.start()
            time.sleep(1.0)
            server.wait_quiet()
            log(f"{server.name}: {count} idle joined connections")
            extra = ["--n", str(count), "--space-size", str(args.space_size)]
            r = loadgen(args.python, "idle", server, extra, 300)
            r["n"] = count
            results[server.name].append(r)
            log(f"  {fmt(r.get('kb_per_conn'))} KB per connection {r.get('failed', '')}")
    return {"counts": counts, "results": results}


def idle_report(args: argparse.Namespace, data: dict[str, Any]) -> str:
    out = [
        f"## Idle footprint — joined idle connections, {args.space_size} players per space\n",
        "| connections | server | RSS before MB | RSS after MB | KB per connection | join s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for count in data["counts"]:
        for name, rs in data["results"].items():
            r = next((x for x in rs if x["n"] == count), {})
            out.append(
                f"| {count} | {name} | {fmt(r.get('rss_before_mb'))} | {fmt(r.get('rss_after_mb'))}"
                f" | {fmt(r.get('kb_per_conn'))} | {fmt(r.get('join_s'), 2)}"
                f"{' — ' + r['failed'] if 'failed' in r else ''} |"
            )
        if len(data["results"]) == 2 and "peer" in data["results"]:
            a = next((x for x in data["results"]["peer"] if x["n"] == count), {})
            b = next((x for x in data["results"].get("spacesync", []) if x["n"] == count), {})
            out.append(
                f"| {count} | ratio spacesync / peer | "
                f"| {ratio(b.get('rss_after_mb'), a.get('rss_after_mb'))} "
                f"| {ratio(b.get('kb_per_conn'), a.get('kb_per_conn'))} | |"
            )
    return "\n".join(out) + "\n"


def run_storm(args: argparse.Namespace, servers: list[Server]) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
    for i in range(args.repeat):
        order = servers if i % 2 == 0 else list(reversed(servers))
        for server in order:
            if not server.alive():
                server.start()
            server.wait_quiet()
            log(f"{server.name}: join storm of {args.storm_n} (round {i + 1})")
            extra = ["--n", str(args.storm_n), "--concurrency", str(args.storm_concurrency)]
            r = loadgen(args.python, "storm", server, extra, 300)
            results[server.name].append(r)
            log(f"  {fmt(r.get('total_s'), 3)} s {r.get('failed', '')}")
    return {"n": args.storm_n, "results": results}


def storm_report(args: argparse.Namespace, data: dict[str, Any]) -> str:
    out = [
        f"## Join storm — {data['n']} clients join one space, "
        f"{args.storm_concurrency} handshakes in flight, {args.repeat} rounds\n",
        "| server | median total s | rounds s | joins/s | join p50 ms | join p99 ms "
        "| server CPU s | RSS after MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    medians: dict[str, float | None] = {}
    for name, rs in data["results"].items():
        ok = [r for r in rs if "failed" not in r]
        totals = [r["total_s"] for r in ok]
        med = statistics.median(totals) if totals else None
        medians[name] = med
        best = min(ok, key=lambda r: abs(r["total_s"] - med)) if ok and med is not None else {}
        failed = [r["failed"] for r in rs if "failed" in r]
        out.append(
            f"| {name} | {fmt(med, 3)} | {', '.join(fmt(t, 3) for t in totals)} "
            f"| {fmt(best.get('joins_per_s'))} | {fmt(best.get('join_p50_ms'))} "
            f"| {fmt(best.get('join_p99_ms'))} | {fmt(best.get('server_cpu_s'), 2)} "
            f"| {fmt(best.get('server_rss_mb'))}"
            f"{' — failed: ' + failed[0] if failed else ''} |"
        )
    if "peer" in medians and "spacesync" in medians:
        out.append(
            f"\nRatio spacesync / peer (median total time): "
            f"**{ratio(medians['spacesync'], medians['peer'])}**"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------


def machine(args: argparse.Namespace) -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    socketio = "unknown"
    with contextlib.suppress(OSError, ValueError):
        pkg = json.loads((PEER_DIR / "node_modules" / "socket.io" / "package.json").read_text())
        socketio = pkg["version"]
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": command_output(
            [args.python, "-c", "import platform; print(platform.python_version())"]
        ),
        "node": command_output(["node", "--version"]),
        "socket.io (peer)": socketio,
        "spacesync": command_output(
            [args.python, "-c", "import spacesync; print(spacesync.__version__)"]
        ),
        "commit": source_revision(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def source_revision() -> str:
    """The checked-out commit, marked when the server's sources differ from it."""
    rev = command_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO)
    dirty = command_output(["git", "status", "--porcelain", "--", "src"], cwd=REPO)
    if rev != "unknown" and dirty != "unknown":
        rev += " (src modified)"
    return rev


def machine_report(info: dict[str, str]) -> str:
    out = ["## Machine\n", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in info.items()]
    out.append(
        f"| pinning | servers on core {SERVER_CORE}, load generator on core {GENERATOR_CORE} |"
    )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="spacesync vs the Node.js Socket.IO peer, side by side",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--mode", choices=["capacity", "idle", "storm", "all"], default="capacity")
    p.add_argument("--servers", default="peer,spacesync", help="comma-separated, in order")
    p.add_argument("--rate", type=float, default=60.0, help="moves per second per player")
    p.add_argument("--batched", action="store_true", help="spacesync joins with positionBatching")
    p.add_argument("--steps", default=DEFAULT_STEPS, help="comma-separated N values")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of moving per step")
    p.add_argument("--observers", type=int, default=8, help="measuring clients per step")
    p.add_argument(
        "--fail-limit", type=int, default=2, help="failed steps in a row before a server stops"
    )
    p.add_argument(
        "--noise-retries",
        type=int,
        default=1,
        help=f"re-runs of a failed step when other work took >= {NOISE_PCT:g} %% of a core",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_S,
        help="seconds to wait, before each step, for other work to leave the benchmark cores",
    )
    p.add_argument("--idle-counts", default="1000,5000", help="idle connection counts")
    p.add_argument("--space-size", type=int, default=50, help="players per space (idle mode)")
    p.add_argument("--storm-n", type=int, default=1000, help="clients in the join storm")
    p.add_argument("--storm-concurrency", type=int, default=100, help="handshakes in flight")
    p.add_argument("--repeat", type=int, default=3, help="join-storm rounds per server")
    p.add_argument("--quick", action="store_true", help="short smoke run (not a measurement)")
    p.add_argument("--python", default=default_python(), help="interpreter for spacesync + gen")
    p.add_argument("--out", default=None, help="JSON results file (default: bench/results/)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = "10,20"
        args.duration = 3.0
        args.observers = 4
        args.idle_counts = "200"
        args.storm_n = 200
        args.repeat = 1
    return args


_interrupted = False


def _terminate(signum: int, _frame: object) -> None:
    global _interrupted
    if _interrupted:
        return  # already on the way out
    _interrupted = True
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global QUIET_WAIT_S
    QUIET_WAIT_S = args.quiet_wait
    # SIGTERM (and SIGINT, even when started in the background) stop the servers on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    limit = raise_nofile_limit()
    if limit < 12000 and args.mode in ("idle", "all"):
        log(f"open-file limit is {limit}; the 5k idle figure needs about 10k descriptors")
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "peer" in names:
        ensure_peer_installed()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / stamp
    servers = make_servers(names, args.python, run_dir)
    info = machine(args)
    report: list[str] = []
    data: dict[str, Any] = {"machine": info, "args": vars(args)}
    try:
        for server in servers:
            server.start()
        modes = ["capacity", "idle", "storm"] if args.mode == "all" else [args.mode]
        for mode in modes:
            if mode == "capacity":
                data["capacity"] = run_capacity(args, servers)
                report.append(capacity_report(args, data["capacity"]))
            elif mode == "storm":
                data["storm"] = run_storm(args, servers)
                report.append(storm_report(args, data["storm"]))
            elif mode == "idle":
                data["idle"] = run_idle(args, servers)
                report.append(idle_report(args, data["idle"]))
    finally:
        for server in servers:
            if server.alive() and not _interrupted:
                server.wait_quiet(limit_s=60, machine_limit_s=0)
            server.stop()
    problems = {s.name: log_problems(s) for s in servers}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        data["server_log_problems"] = problems
        lines = ["## Server log problems\n"]
        for name, rows in problems.items():
            lines.append(f"{name} ({len(rows)} shown, full log in {run_dir}):")
            lines += [f"    {row[:300]}" for row in rows]
        report.append("\n".join(lines) + "\n")
    if args.quick:
        report.insert(0, "_Quick smoke run: short steps, not a measurement._\n")
    report.append(machine_report(info))
    text = "\n".join(report)
    print(text)
    out = Path(args.out) if args.out else run_dir / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    (out.parent / "report.md").write_text(text)
    log(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
