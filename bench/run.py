"""Side-by-side benchmark runner: spacesync against the Node.js Socket.IO peer.

Starts each server itself (pinned to core 0), drives it with ``loadgen.py`` (pinned to core 1),
alternates the servers at every step, and prints markdown tables: one per server, one side by
side with the ratio spacesync / peer, and the machine the figures come from.

The server ``cluster2`` is spacesync in cluster mode (SPEC §9): two nodes sharing Redis database
10 of the machine's Redis (``--redis-url``; flushed before the nodes start), with the players of
each space spread round-robin over both. Both nodes are pinned to the same core as the single
server, so the comparison is at equal CPU budget.

    python bench/run.py                          # capacity at 60 moves/s, default N steps
    python bench/run.py --rate 10                # the throttled-client workload
    python bench/run.py --batched                # spacesync clients join with positionBatching
    python bench/run.py --mode idle              # RSS per joined idle connection (1k, 5k)
    python bench/run.py --mode storm             # 1,000 clients join one space at once
    python bench/run.py --mode all --quick       # short smoke run of every mode
    python bench/run.py --servers spacesync,cluster2 --batched   # one node against two + Redis

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
from urllib.parse import unquote, urlsplit

from procstats import proc_cpu_seconds, raise_nofile_limit

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
GEN_BOUND_PCT = 85.0  # the generator's own CPU (% of its core) at which a step is invalid
GEN_LAG_MS = 30.0
NOISE_PCT = 10.0
QUIET_WAIT_S = 30.0  # --quiet-wait

DEFAULT_STEPS = "10,15,20,25,30,35,40,50,60,70,80,100,120,140,160,200,250,300"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"  # --redis-url: database 10, for the benchmark
TESTS_REDIS_DB = "9"  # the cluster tests' database (tests/support/cluster.py): never flushed here
CLUSTERS = {"cluster2": 2}  # cluster server name -> spacesync nodes
BATCHING_SERVERS = {"spacesync", "careful", *CLUSTERS}  # servers that --batched applies to
# servers the others are compared with, in this order: the naive peer, the careful peer, spacesync
REFERENCES = ("peer", "careful", "spacesync")
PEERS = ("peer", "careful")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[run] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def comparisons(names: list[str]) -> list[tuple[str, str]]:
    """(server, reference) pairs to put side by side: each server against the naive peer, the
    careful peer and single-node spacesync, e.g. careful / peer, spacesync / peer,
    spacesync / careful, cluster2 / spacesync (never a pair and its reverse)."""
    pairs: list[tuple[str, str]] = []
    for a in REFERENCES:
        if a not in names:
            continue
        for b in names:
            if b not in (a, "peer") and (a, b) not in pairs:
                pairs.append((b, a))
    return pairs


# --------------------------------------------------------------------------------------------
# Redis (a few commands over RESP, so that the runner needs nothing outside the stdlib)
# --------------------------------------------------------------------------------------------


def _resp_command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _resp_reply(f: Any) -> Any:
    line = f.readline()
    if not line:
        raise ConnectionError("Redis closed the connection")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RuntimeError(f"Redis error: {body.decode()}")
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        return None if size < 0 else f.read(size + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        return [_resp_reply(f) for _ in range(max(0, int(body)))]
    raise RuntimeError(f"unexpected Redis reply {line[:40]!r}")


def redis_command(url: str, *args: str) -> Any:
    """Run one command on the database of a ``redis://host:port/db`` URL; returns its reply."""
    parts = urlsplit(url)
    db = (parts.path or "/0").strip("/") or "0"
    commands: list[tuple[str, ...]] = []
    if parts.password:
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password)
        commands.append(("AUTH", user, password) if user else ("AUTH", password))
    commands += [("SELECT", db), tuple(args)]
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 5) as s:
        s.sendall(b"".join(_resp_command(*c) for c in commands))
        with s.makefile("rb") as f:
            replies = [_resp_reply(f) for _ in commands]
    return replies[-1]


def redis_info(url: str) -> dict[str, str]:
    info: dict[str, str] = {}
    with contextlib.suppress(OSError, RuntimeError, ConnectionError):
        for line in str(redis_command(url, "INFO", "server")).splitlines():
            k, sep, v = line.partition(":")
            if sep:
                info[k] = v.strip()
    return info


def redis_pid(url: str) -> int | None:
    """The Redis server's pid, when it runs on this machine (its CPU can then be read)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        pid = int(redis_info(url).get("process_id", ""))
    except ValueError:
        return None
    return pid if proc_cpu_seconds(pid) is not None else None


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


@dataclass
class Server:
    """One server under test: a single process, or (``nodes`` > 1, with ``redis_url``) a
    spacesync cluster whose nodes all run on the server core."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    nodes: int = 1
    redis_url: str | None = None
    redis_pid: int | None = None
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    failures_in_a_row: int = 0
    done: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cluster(self) -> bool:
        return self.redis_url is not None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def pid(self) -> int:
        assert self.procs
        return self.procs[0].pid

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        """The generator's ``--url``: the node URLs, comma-separated."""
        return ",".join(self.urls)

    @property
    def pid_arg(self) -> str:
        """The generator's ``--server-pid``: the node pids, comma-separated."""
        return ",".join(str(pid) for pid in self.pids)

    @property
    def log_paths(self) -> list[Path]:
        if self.nodes == 1:
            return [self.log_path]
        return [self.log_path.with_name(f"{self.log_path.stem}-{k}.log") for k in self.node_names]

    @property
    def node_names(self) -> list[str]:
        return [chr(ord("a") + k) for k in range(self.nodes)]

    def start(self) -> None:
        if self.redis_url is not None:
            # A fresh cluster every time: no players, nodes or positions of an earlier life.
            redis_command(self.redis_url, "FLUSHDB")
            self.redis_pid = redis_pid(self.redis_url)
        self.ports, self.procs = [], []
        try:
            for k, log_path in zip(self.node_names, self.log_paths, strict=True):
                self._start_node(k, log_path)
            for port, proc, log_path in zip(self.ports, self.procs, self.log_paths, strict=True):
                self._wait_ready(port, proc, log_path)
        except BaseException:
            self.stop()
            raise
        where = ", ".join(
            f"port {p} (pid {pid})" for p, pid in zip(self.ports, self.pids, strict=True)
        )
        log(f"{self.name} up on {where}")

    def _start_node(self, node: str, log_path: Path) -> None:
        port = free_port()
        env = {**os.environ, **self.env, "PORT": str(port), "HOST": "127.0.0.1"}
        if self.redis_url is not None:
            env["REDIS_URL"] = self.redis_url
            env["HOSTNAME"] = f"bench-{self.name}-{node}"
            env["EXIT_OUTBOX_PATH"] = str(log_path.with_suffix(".exits.sqlite3"))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = log_path.open("ab")
        logf.write(f"--- start {time.strftime('%H:%M:%S')} port {port}\n".encode())
        logf.flush()
        # taskset execs the server, so the pid is the server's own. Every node of a cluster is
        # pinned to the same server core as a single server: equal CPU budget.
        proc = subprocess.Popen(
            pinned(SERVER_CORE, self.argv),
            cwd=self.cwd,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        self.ports.append(port)
        self.procs.append(proc)

    def _wait_ready(self, port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        # A cluster node is ready once Redis is connected and its state synchronised.
        path = "/health/ready" if self.cluster else "/health"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up; see {log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {path} within 30 s; see {log_path}")

    def stop(self) -> None:
        running = [p for p in self.procs if p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(timeout=12)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {proc.pid}) ignored SIGTERM for 12 s; killing it")
                proc.kill()
                proc.wait()

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def cpu_seconds(self) -> float | None:
        total = 0.0
        for pid in self.pids:
            cpu = proc_cpu_seconds(pid)
            if cpu is None:
                return None
            total += cpu
        return total

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
            c0, k0 = self.cpu_seconds(), core_busy_ticks()
            time.sleep(0.5)
            c1, k1 = self.cpu_seconds(), core_busy_ticks()
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


def export_revision(rev: str, run_dir: Path) -> tuple[str, Path]:
    """Extract ``src/`` of a git revision into the run directory, so that the server measured is
    that commit's, whatever the working tree holds. Returns (full hash, the extracted src)."""
    full = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = (run_dir / f"spacesync-{full[:10]}").resolve()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", full, "src"], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    if not (dest / "src" / "spacesync" / "__init__.py").is_file():
        raise SystemExit(f"{rev}: no src/spacesync in that revision")
    return full, dest / "src"


def make_servers(
    names: list[str],
    python: str,
    run_dir: Path,
    redis_url: str = DEFAULT_REDIS_URL,
    spacesync_src: Path | None = None,
) -> list[Server]:
    # spacesync from an extracted revision: its src/ goes ahead of the installed (editable) one.
    src_env = {"PYTHONPATH": str(spacesync_src)} if spacesync_src is not None else {}
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
        elif name == "careful":
            servers.append(
                Server(
                    name="careful",
                    argv=["node", "careful.js"],
                    env={"NODE_ENV": "production"},
                    cwd=PEER_DIR,
                    log_path=run_dir / "careful.log",
                )
            )
        elif name == "spacesync":
            servers.append(
                Server(
                    name="spacesync",
                    argv=[python, "-m", "spacesync"],
                    env={
                        "NODE_ENV": "development",
                        "LOG_LEVEL": "warn",
                        "HANDSHAKES_PER_IP": "0",
                        **src_env,
                    },
                    cwd=REPO,
                    log_path=run_dir / "spacesync.log",
                )
            )
        elif name in CLUSTERS:
            servers.append(
                Server(
                    name=name,
                    argv=[python, "-m", "spacesync"],
                    env={
                        "NODE_ENV": "development",
                        "LOG_LEVEL": "warn",
                        "HANDSHAKES_PER_IP": "0",
                        **src_env,
                    },
                    cwd=REPO,
                    log_path=run_dir / f"{name}.log",
                    nodes=CLUSTERS[name],
                    redis_url=redis_url,
                )
            )
        else:
            known = ", ".join(["peer", "careful", "spacesync", *CLUSTERS])
            raise SystemExit(f"unknown server {name!r} (use {known})")
    return servers


def check_redis(url: str) -> None:
    """The cluster servers need the machine's Redis; refuse to start without it."""
    if ((urlsplit(url).path or "/0").strip("/") or "0") == TESTS_REDIS_DB:
        raise SystemExit(f"{url}: database {TESTS_REDIS_DB} belongs to the cluster tests")
    try:
        reply = redis_command(url, "PING")
    except (OSError, RuntimeError, ConnectionError) as exc:
        raise SystemExit(f"cluster servers need Redis at {url}: {exc}") from exc
    if reply != "PONG":
        raise SystemExit(f"Redis at {url} answered {reply!r} to PING")


def ensure_peer_installed() -> None:
    if (PEER_DIR / "node_modules" / "socket.io").exists():
        return
    log("installing the peer's dependencies (npm ci)")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER_DIR, check=True
    )


def log_problems(server: Server) -> list[str]:
    """Error-level lines and tracebacks the server wrote during the run."""
    lines = []
    for path in server.log_paths:
        with contextlib.suppress(OSError):
            prefix = f"[{path.stem}] " if server.nodes > 1 else ""
            lines += [prefix + ln for ln in path.read_text(errors="replace").splitlines()]
    bad = [
        ln
        for ln in lines
        if '"level": "error"' in ln
        or '"level":"error"' in ln
        or ln.startswith("Traceback")
        or "] Traceback" in ln
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
            server.pid_arg,
            *(["--redis-pid", str(server.redis_pid)] if server.redis_pid else []),
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
    # A cluster's Redis is not pinned: its CPU lands on either core and is part of what is
    # measured, not noise. Take it off the larger excess first, then off the other.
    excess = sorted([srv, gen], reverse=True)
    left = result.get("redis_cpu_pct") or 0.0
    for k in range(2):
        take = min(left, max(0.0, excess[k]))
        excess[k] -= take
        left -= take
    return round(max(0.0, *excess), 1)


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
    drained = result.get("drain_pair_rate_min")
    if drained is not None and drained < need - 1e-6:
        reasons.append(f"slowest non-observer {fmt(drained)}/s < {need:g}/s")
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
        warm += ["--batched"] if args.batched and server.name in BATCHING_SERVERS else []
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
            if args.batched and server.name in BATCHING_SERVERS:
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
            if result["gen_bound"]:
                log(
                    f"  WARNING: the generator used {result.get('gen_cpu_pct')} % of its core "
                    f"(>= {GEN_BOUND_PCT:g} %): this step measures the generator, not the server"
                )
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
    bounds: dict[str, str] = {}
    for server in servers:
        passing = [r["n"] for r in server.results if r["pass"]]
        capacity[server.name] = max(passing) if passing else 0
        above = [r for r in server.results if r["n"] > capacity[server.name] and not r["pass"]]
        if not above:
            bounds[server.name] = "passed the largest step"
        elif above[0]["gen_bound"]:
            bounds[server.name] = "the first failed step was generator-bound"
    return {
        "steps": steps,
        "capacity": capacity,
        # servers whose capacity is only a lower bound, and why
        "lower_bound": bounds,
        "results": {s.name: s.results for s in servers},
    }


def both(nodes: int) -> str:
    return "Both nodes" if nodes == 2 else f"All {nodes} nodes"


def cluster_note(name: str, redis_url: str) -> str:
    db = (urlsplit(redis_url).path or "/0").strip("/") or "0"
    return (
        f"_{name}: {CLUSTERS[name]} spacesync nodes in cluster mode sharing Redis database {db} "
        "(flushed before the nodes start), players spread round-robin over the nodes, so every "
        f"space spans them. {both(CLUSTERS[name])} are pinned to the same server core "
        f"(core {SERVER_CORE}) as the single server and the peer: the comparison is at equal "
        "CPU budget, and the cluster's figures show what the cross-node fan-out costs, not what "
        "more cores would buy. Server CPU % and µs CPU/update are the sums over the nodes. Redis "
        "is not pinned and not counted in server CPU; its own CPU is the redis CPU % column "
        "(the machine's Redis may also serve other work). p99 same / cross node splits the "
        "latency by whether the observer and the sender are on the same node._"
    )


def cluster_cells(r: dict[str, Any]) -> str:
    same = (r.get("same_node") or {}).get("p99_ms")
    cross = (r.get("cross_node") or {}).get("p99_ms")
    nodes = " / ".join(fmt(x.get("cpu_pct")) for x in r.get("server_pids") or []) or "–"
    return f"{fmt(same)} / {fmt(cross)} | {nodes} | {fmt(r.get('redis_cpu_pct'))} | "


def capacity_report(args: argparse.Namespace, data: dict[str, Any]) -> str:
    out = []
    title = f"{args.rate:g} moves/s per player, {args.duration:g} s of moving per step"
    names = list(data["results"])
    clusters = [name for name in names if name in CLUSTERS]
    if args.batched:
        batching = [name for name in names if name in BATCHING_SERVERS]
        title += f", {' and '.join(batching) or 'spacesync'} clients join with positionBatching"
    out.append(f"## Capacity — {title}\n")
    for name in clusters:
        out.append(cluster_note(name, args.redis_url) + "\n")
    for name, results in data["results"].items():
        out.append(f"### {name}\n")
        cluster = name in CLUSTERS
        out.append(
            "| N | p50 ms | p99 ms | slowest pair /s | median pair /s "
            "| slowest pair /s, all clients | convergence % | updates/s | server CPU % "
            "| µs CPU/update | server RSS MB | gen CPU % "
            "| gen lag p99 ms | noise % | stale | "
            + ("p99 ms same / cross node | node CPU % | redis CPU % | " if cluster else "")
            + "result |"
        )
        out.append("|" + "---:|" * (18 if cluster else 15) + "---|")
        for r in results:
            verdict = "pass" if r["pass"] else f"fail ({r['why']})"
            if r.get("gen_bound"):
                verdict += " — INVALID: generator-bound"
            elif r.get("gen_lagging"):
                verdict += " — generator lagging (latency overstated)"
            out.append(
                f"| {r['n']} | {fmt(r.get('p50_ms'))} | {fmt(r.get('p99_ms'))} "
                f"| {fmt(r.get('pair_rate_min'))} | {fmt(r.get('pair_rate_median'))} "
                f"| {fmt(r.get('drain_pair_rate_min'))} "
                f"| {fmt(r.get('convergence_pct'), 2)} | {fmt(r.get('updates_per_s'))} "
                f"| {fmt(r.get('server_cpu_pct'))} | {fmt(r.get('server_us_per_update'), 2)} "
                f"| {fmt(r.get('server_rss_mb'))} | {fmt(r.get('gen_cpu_pct'))} "
                f"| {fmt(r.get('gen_lag_p99_ms'))} | {fmt(r.get('noise_pct'))} "
                f"| {fmt(r.get('stale'))} | "
                + (cluster_cells(r) if cluster else "")
                + f"{verdict} |"
            )
        out.append("")
    for b_name, a_name in comparisons(names):
        peer = {r["n"]: r for r in data["results"][a_name]}
        ss = {r["n"]: r for r in data["results"][b_name]}
        a_, b_ = a_name, b_name
        out.append(f"### Side by side (ratio = {b_} / {a_})\n")
        out.append(
            f"| N | p99 ms {a_} | p99 ms {b_} | ratio | server CPU % {a_} "
            f"| server CPU % {b_} | ratio | µs/update {a_} | µs/update {b_} | ratio "
            f"| RSS MB {a_} | RSS MB {b_} | ratio | gen CPU % {a_} | gen CPU % {b_} |"
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
    ratios = [
        f"{b} / {a} = **{cap[b] / cap[a]:.2f}**"
        for b, a in comparisons(list(cap))
        if cap.get(a) and cap.get(b) is not None
    ]
    if ratios:
        line += " — ratio " + ", ".join(ratios)
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
        for b_name, a_name in comparisons(list(data["results"])):
            a = next((x for x in data["results"][a_name] if x["n"] == count), {})
            b = next((x for x in data["results"][b_name] if x["n"] == count), {})
            out.append(
                f"| {count} | ratio {b_name} / {a_name} | "
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
    for b_name, a_name in comparisons(list(medians)):
        out.append(
            f"\nRatio {b_name} / {a_name} (median total time): "
            f"**{ratio(medians[b_name], medians[a_name])}**"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Baseline: the headline rows, spacesync against both peers, in one run
# --------------------------------------------------------------------------------------------


def run_baseline(args: argparse.Namespace, servers: list[Server]) -> dict[str, Any]:
    """Every round: batched capacity (the servers that batch), plain capacity (all servers),
    idle KB per connection (all servers). Rounds are repeated so that every figure is measured
    at least twice; ratios are only ever taken within one round."""
    rounds: list[dict[str, Any]] = []
    batching = [s for s in servers if s.name in BATCHING_SERVERS]
    for k in range(args.rounds):
        log(f"baseline round {k + 1} of {args.rounds}")
        one: dict[str, Any] = {}
        for server in servers:
            if not server.alive():
                server.start()
        b_args = argparse.Namespace(**{**vars(args), "batched": True, "rate": args.baseline_rate})
        b_args.steps = ",".join(sorted({*args.batched_steps.split(","), str(args.cpu_n)}, key=int))
        one["batched"] = run_capacity(b_args, batching)
        p_args = argparse.Namespace(**{**vars(args), "batched": False, "rate": args.baseline_rate})
        p_args.steps = args.plain_steps
        one["plain"] = run_capacity(p_args, servers)
        i_args = argparse.Namespace(**{**vars(args), "idle_counts": str(args.baseline_idle)})
        one["idle"] = run_idle(i_args, servers)
        one["reports"] = [
            capacity_report(b_args, one["batched"]),
            capacity_report(p_args, one["plain"]),
            idle_report(i_args, one["idle"]),
        ]
        rounds.append(one)
    return {"rounds": rounds, "summary": baseline_summary(args, rounds, [s.name for s in servers])}


def _step(data: dict[str, Any], name: str, n: int) -> dict[str, Any]:
    return next((r for r in data["results"].get(name, []) if r["n"] == n), {})


def _capacity_cell(data: dict[str, Any], name: str) -> str | None:
    if name not in data["capacity"]:
        return None
    cap = data["capacity"][name]
    bound = data.get("lower_bound", {}).get(name)
    return f"≥ {cap}" if bound else str(cap)


def baseline_summary(
    args: argparse.Namespace, rounds: list[dict[str, Any]], names: list[str]
) -> list[dict[str, Any]]:
    """One entry per headline row and round: each server's figure and spacesync's ratio to
    each peer (same round)."""
    rows: list[dict[str, Any]] = []
    for k, one in enumerate(rounds, start=1):
        b, p, idle = one["batched"], one["plain"], one["idle"]
        cpu = {name: _step(b, name, args.cpu_n) for name in names if name in b["results"]}
        rows.append(
            {
                "row": f"server CPU % at N={args.cpu_n}, every client batched, "
                f"{args.baseline_rate:g} moves/s",
                "round": k,
                "values": {name: r.get("server_cpu_pct") for name, r in cpu.items()},
                "gen_cpu": {name: r.get("gen_cpu_pct") for name, r in cpu.items()},
                "valid": {name: r.get("pass") for name, r in cpu.items()},
                "noise": {name: r.get("noise_pct") for name, r in cpu.items()},
                "lower_is_better": True,
            }
        )
        rows.append(
            {
                "row": f"server µs CPU per delivered position at N={args.cpu_n}, every client "
                f"batched, {args.baseline_rate:g} moves/s",
                "round": k,
                "values": {name: r.get("server_us_per_update") for name, r in cpu.items()},
                "display": {name: fmt(r.get("server_us_per_update"), 2) for name, r in cpu.items()},
                "gen_cpu": {name: r.get("gen_cpu_pct") for name, r in cpu.items()},
                "noise": {name: r.get("noise_pct") for name, r in cpu.items()},
                "lower_is_better": True,
            }
        )
        for label, data in (("every client batched", b), ("plain protocol", p)):
            rows.append(
                {
                    "row": f"capacity (players), {label}, {args.baseline_rate:g} moves/s",
                    "round": k,
                    "values": {name: data["capacity"][name] for name in data["capacity"]},
                    "display": {name: _capacity_cell(data, name) for name in data["capacity"]},
                    "gen_cpu": {
                        name: max((r.get("gen_cpu_pct") or 0 for r in rs), default=None)
                        for name, rs in data["results"].items()
                    },
                    "lower_is_better": False,
                }
            )
        count = args.baseline_idle
        rows.append(
            {
                "row": f"idle KB per joined WebSocket connection at {count:,}",
                "round": k,
                "values": {
                    name: next((r.get("kb_per_conn") for r in rs if r["n"] == count), None)
                    for name, rs in idle["results"].items()
                },
                "lower_is_better": True,
            }
        )
    return rows


def baseline_report(args: argparse.Namespace, data: dict[str, Any], names: list[str]) -> str:
    peers = [n for n in ("careful", "peer") if n in names]
    others = [n for n in names if n not in ("spacesync", *peers)]
    cols = ["spacesync", *peers, *others]
    label = {"peer": "naive peer", "careful": "careful peer"}
    out = [
        f"## Baseline — spacesync, the careful peer and the naive peer, {args.rounds} round(s)\n",
        "| row | round | "
        + " | ".join(label.get(c, c) for c in cols)
        + " | "
        + " | ".join(f"ratio spacesync / {label.get(p, p)}" for p in peers)
        + " | gen CPU % (max); noise % |",
        "|---|---:|" + "---:|" * (len(cols) + len(peers)) + "---|",
    ]
    for row in data["summary"]:
        values = row["values"]
        shown = row.get("display", {})
        cells = [shown.get(c) or fmt(values.get(c)) if c in values else "n/a" for c in cols]
        ratios = [ratio(values.get("spacesync"), values.get(p)) for p in peers]
        gen = row.get("gen_cpu") or {}
        gen_cell = ", ".join(f"{label.get(c, c)} {fmt(gen[c])}" for c in cols if c in gen) or "–"
        noisy = row.get("noise") or {}
        if noisy:
            gen_cell += "; noise % " + ", ".join(
                f"{label.get(c, c)} {fmt(noisy[c])}" for c in cols if c in noisy
            )
        out.append(
            f"| {row['row']} | {row['round']} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(ratios)
            + f" | {gen_cell} |"
        )
    out.append(
        "\nCapacity: the largest N with p99 ≤ "
        f"{P99_LIMIT_MS:g} ms, 100 % convergence and every pair (observers, and every other "
        f"client counted without decoding) receiving ≥ min(rate, {MIN_PAIR_RATE:g}) updates/s. "
        "“≥” marks a lower bound (the largest step passed, or the next failed step was "
        "generator-bound). CPU ratio < 1 and capacity ratio > 1 favour spacesync. The naive "
        "peer does not batch; it has no batched row."
    )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------


def machine(args: argparse.Namespace, clusters: list[str] | None = None) -> dict[str, str]:
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
        **({"redis": redis_description(args.redis_url)} if clusters else {}),
    }


def redis_description(url: str) -> str:
    info = redis_info(url)
    safe = url.split("@", 1)[-1] if "@" in url else url.split("://", 1)[-1]
    return f"{info.get('redis_version', 'unknown')} at {safe}"


def source_revision() -> str:
    """The checked-out commit, marked when the server's sources differ from it."""
    rev = command_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO)
    dirty = command_output(["git", "status", "--porcelain", "--", "src"], cwd=REPO)
    if rev != "unknown" and dirty != "unknown":
        rev += " (src modified)"
    return rev


def machine_report(info: dict[str, str], clusters: list[str] | None = None) -> str:
    out = ["## Machine\n", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in info.items()]
    out.append(
        f"| pinning | servers on core {SERVER_CORE}, load generator on core {GENERATOR_CORE} |"
    )
    for name in clusters or []:
        out.append(
            f"| {name} pinning | {both(CLUSTERS[name]).lower()} on core {SERVER_CORE}, the single "
            "server's core (equal CPU budget); Redis not pinned, its CPU reported apart |"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="spacesync vs the Node.js Socket.IO peer, side by side",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--mode", choices=["capacity", "idle", "storm", "all", "baseline"], default="capacity"
    )
    p.add_argument(
        "--servers",
        default=None,
        help="comma-separated, in order: peer (naive), careful (careful peer), spacesync, "
        "cluster2 (two spacesync nodes + Redis); default peer,spacesync "
        "(baseline mode: peer,careful,spacesync)",
    )
    p.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="Redis database of the cluster servers (FLUSHDB before they start: a spare db!)",
    )
    p.add_argument("--rate", type=float, default=60.0, help="moves per second per player")
    p.add_argument(
        "--batched", action="store_true", help="spacesync (and cluster2) join with positionBatching"
    )
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
    p.add_argument("--rounds", type=int, default=2, help="baseline mode: rounds of every row")
    p.add_argument(
        "--batched-steps",
        default="100,200,300,400,500,600,700",
        help="baseline mode: N steps of the batched capacity",
    )
    p.add_argument(
        "--plain-steps",
        default="40,50,60,80,100,120,150,200,300,400,500,600",
        help="baseline mode: N steps of the plain-protocol capacity",
    )
    p.add_argument(
        "--cpu-n", type=int, default=300, help="baseline mode: N of the batched server-CPU row"
    )
    p.add_argument(
        "--baseline-rate", type=float, default=60.0, help="baseline mode: moves/s per player"
    )
    p.add_argument(
        "--baseline-idle", type=int, default=5000, help="baseline mode: idle connection count"
    )
    p.add_argument("--quick", action="store_true", help="short smoke run (not a measurement)")
    p.add_argument("--python", default=default_python(), help="interpreter for spacesync + gen")
    p.add_argument(
        "--spacesync-rev",
        default=None,
        help="measure spacesync as of this git revision (its src/ is extracted into the run "
        "directory and put first on PYTHONPATH) instead of the working tree",
    )
    p.add_argument("--out", default=None, help="JSON results file (default: bench/results/)")
    p.add_argument(
        "--report-from",
        default=None,
        metavar="RESULTS_JSON",
        help="print the summary of a finished baseline run again (nothing is measured)",
    )
    args = p.parse_args(argv)
    if args.servers is None:
        args.servers = "peer,careful,spacesync" if args.mode == "baseline" else "peer,spacesync"
    if args.quick:
        args.steps = "10,20"
        args.duration = 3.0
        args.observers = 4
        args.idle_counts = "200"
        args.storm_n = 200
        args.repeat = 1
        args.rounds = 1
        args.batched_steps = "10,20"
        args.plain_steps = "10,20"
        args.cpu_n = 20
        args.baseline_idle = 200
    return args


_interrupted = False


def _terminate(signum: int, _frame: object) -> None:
    global _interrupted
    if _interrupted:
        return  # already on the way out
    _interrupted = True
    raise SystemExit(128 + signum)


def rerender(path: Path) -> int:
    """Print the summary of a finished baseline run again from its results.json."""
    data = json.loads(path.read_text())
    args = argparse.Namespace(**data["args"])
    base = data["baseline"]
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    base["summary"] = baseline_summary(args, base["rounds"], names)
    print(baseline_report(args, base, names))
    print(machine_report(data["machine"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_from:
        return rerender(Path(args.report_from))
    global QUIET_WAIT_S
    QUIET_WAIT_S = args.quiet_wait
    # SIGTERM (and SIGINT, even when started in the background) stop the servers on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    limit = raise_nofile_limit()
    if limit < 12000 and args.mode in ("idle", "all"):
        log(f"open-file limit is {limit}; the 5k idle figure needs about 10k descriptors")
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if any(name in PEERS for name in names):
        ensure_peer_installed()
    clusters = [name for name in names if name in CLUSTERS]
    if clusters:
        check_redis(args.redis_url)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / stamp
    spacesync_src = None
    if args.spacesync_rev:
        full, spacesync_src = export_revision(args.spacesync_rev, run_dir)
        log(f"spacesync from commit {full[:10]} ({spacesync_src})")
    servers = make_servers(names, args.python, run_dir, args.redis_url, spacesync_src)
    info = machine(args, clusters)
    if args.spacesync_rev:
        info["commit"] = f"{full[:10]} (--spacesync-rev {args.spacesync_rev})"
    info["uvloop"] = command_output(
        [
            args.python,
            "-c",
            "import importlib.util as u; "
            "print('on' if u.find_spec('uvloop') else 'off (not installed)')",
        ]
    )
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
            elif mode == "baseline":
                data["baseline"] = run_baseline(args, servers)
                report.append(baseline_report(args, data["baseline"], names))
                for k, one in enumerate(data["baseline"]["rounds"], start=1):
                    report.append(f"## Round {k}\n")
                    report += [r.replace("\n## ", "\n### ") for r in one.pop("reports")]
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
    report.append(machine_report(info, clusters))
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
