"""Real Ray clusters started with the ``ray start`` CLI, for tests, torn down without ``ray stop``.

Each node is ``ray start --block`` in its own process group, and every process of the cluster
carries an environment marker, so teardown (or killing one node) reaches exactly this
cluster's processes, raylet workers included, and never another cluster on the machine.
The cluster uses token authentication with a token of its own (Ray 2.60 enables it by default
for ``ray start``); ``env`` holds what a client needs to connect.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "VGROUT_TEST_CLUSTER"


def free_port(used: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p not in used:
            used.add(p)
            return p


def free_range(n: int, taken: set[int]) -> tuple[int, int]:
    """n consecutive free ports (worker ports of one node)."""
    for lo in range(20000, 60000, n):
        if lo in taken:
            continue
        socks = []
        try:
            for p in range(lo, lo + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            taken.add(lo)
            return lo, lo + n - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def procs_marked(value: str) -> list[int]:
    """Pids whose environment carries MARK=<value...> (prefix match)."""
    out = []
    needle = f"{MARK}={value}".encode()
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) == os.getpid():
            continue
        try:
            with open(f"/proc/{e}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if any(v.startswith(needle) for v in env.split(b"\0")):
            out.append(int(e))
    return out


def kill_marked(value: str) -> int:
    pids = procs_marked(value)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return len(pids)


class CliCluster:
    """A head (and optional worker nodes) on this machine, each its own `ray start --block`."""

    def __init__(self, fast_failure_detection: bool = False, object_store_bytes: int | None = None,
                 temp_dir: str | None = None) -> None:
        """``temp_dir``: the head's ``--temp-dir`` (default: a fresh short dir under /tmp); ``ray start``
        writes its current-cluster file there, so ``<dir>`` = ``$RAY_TMPDIR/ray`` puts that file where a
        process with that RAY_TMPDIR looks for it. ``stop()`` removes the dir."""
        self.token = secrets.token_hex(16)
        if temp_dir is not None:
            os.makedirs(temp_dir, exist_ok=True)
        # short: socket paths are length-limited
        self.temp = temp_dir if temp_dir is not None else tempfile.mkdtemp(prefix="vgrc", dir="/tmp")
        self._used: set[int] = set()
        self._ranges: set[int] = set()
        self.gcs_port = free_port(self._used)
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = ""
        self.object_store_bytes = object_store_bytes
        self.nodes: dict[str, dict] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0",
                         "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        if fast_failure_detection:  # notice a dead node in seconds, not half a minute
            self.env.update({"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                             "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"})

    def client_env(self, **extra: str) -> dict:
        """Environment for a process that connects to this cluster (drivers, CLIs)."""
        return {**self.env, "RAY_ADDRESS": self.address, **extra}

    def _start(self, name: str, args: list[str], num_cpus: int) -> None:
        lo, hi = free_range(100, self._ranges)
        nm_port = free_port(self._used)
        argv = ["ray", "start", *args, f"--num-cpus={num_cpus}", "--disable-usage-stats", "--block",
                f"--node-manager-port={nm_port}", f"--object-manager-port={free_port(self._used)}",
                f"--min-worker-port={lo}", f"--max-worker-port={hi}",
                f"--dashboard-agent-listen-port={free_port(self._used)}",
                f"--dashboard-agent-grpc-port={free_port(self._used)}",
                f"--metrics-export-port={free_port(self._used)}", f"--runtime-env-agent-port={free_port(self._used)}"]
        if self.object_store_bytes:
            argv.append(f"--object-store-memory={self.object_store_bytes}")
        if name in self.nodes:
            self.nodes[name]["log"].close()
        log = open(Path(self.temp) / f"{name}.out", "w")
        proc = subprocess.Popen(argv, env={**self.env, MARK: f"{self.token}:{name}"}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes[name] = {"proc": proc, "log": log, "port": nm_port}

    def _start_node(self, name: str, args: list[str], num_cpus: int, tries: int = 2) -> None:
        # one node at a time: ports are picked before `ray start` binds them
        for _ in range(tries):
            self._start(name, args, num_cpus)
            if self._wait_started(name, 120):
                return
            self.kill_node(name)
        raise RuntimeError(f"ray start ({name}) failed: {self.log_tail(name)}")

    def start_head(self, num_cpus: int = 1, resources: str = "{}", dashboard: bool = False) -> "CliCluster":
        args = ["--head", f"--port={self.gcs_port}", f"--resources={resources}",
                f"--ray-client-server-port={free_port(self._used)}", f"--temp-dir={self.temp}"]
        dport = free_port(self._used)
        if dashboard:
            args += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dport}"]
            self.dashboard_url = f"http://127.0.0.1:{dport}"
        else:
            args += ["--include-dashboard=false", f"--dashboard-port={dport}"]
        self._start_node("head", args, num_cpus)
        return self

    def add_worker(self, name: str, num_cpus: int = 1, resources: str = "{}") -> None:
        self._start_node(name, [f"--address={self.address}", f"--resources={resources}"], num_cpus)

    def _wait_started(self, name: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "Ray runtime started" in self.log_tail(name, 1 << 20):
                return True
            if self.nodes[name]["proc"].poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def alive_nodes(self) -> list[dict]:
        """``ray.nodes()`` entries that are alive, read by a client process."""
        import json
        import sys

        code = ("import ray, json; ray.init(log_to_driver=False); "
                "print('NODES', json.dumps([n for n in ray.nodes() if n['Alive']], default=str))")
        out = subprocess.run([sys.executable, "-c", code], env=self.client_env(), capture_output=True, text=True,
                             timeout=60)
        for line in out.stdout.splitlines():
            if line.startswith("NODES "):
                return json.loads(line[6:])
        raise RuntimeError(f"cannot list nodes: {out.stderr[-1000:]}")

    def log_tail(self, name: str, n: int = 1500) -> str:
        try:
            return (Path(self.temp) / f"{name}.out").read_text()[-n:]
        except OSError:
            return ""

    def kill_node(self, name: str) -> int:
        """Kill one node: its `ray start` group and every process it started (raylet workers too)."""
        try:
            os.killpg(self.nodes[name]["proc"].pid, signal.SIGKILL)
        except OSError:
            pass
        return kill_marked(f"{self.token}:{name}") + 1

    def stop(self) -> None:
        for node in self.nodes.values():
            try:
                os.killpg(node["proc"].pid, signal.SIGKILL)
            except OSError:
                pass
        for _ in range(5):  # workers live in their own process groups: sweep by marker
            if not kill_marked(f"{self.token}:"):
                break
            time.sleep(0.5)
        for node in self.nodes.values():
            try:
                node["proc"].wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            node["log"].close()
        shutil.rmtree(self.temp, ignore_errors=True)


@contextlib.contextmanager
def jobs_head(prefix: str, num_cpus: int = 2):
    """A real `ray start` head with the jobs API in a temp root of its own; yields (cluster, root),
    stops it and removes the root afterwards."""
    root = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    c = CliCluster(temp_dir=f"{root}/ray")
    try:
        c.start_head(num_cpus=num_cpus, dashboard=True)
        yield c, root
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
