"""A real 3-node Ray cluster on this machine: graders land on the `grader` nodes and survive a node death.

Head (`--num-cpus=1 --resources='{}'`) plus two worker nodes (`--num-cpus=1
--resources='{"grader": 1}'`), each `ray start --block` in its own process group with its own
ports. A driver subprocess connects with ``ray.init(address=...)``, builds a pool of 2 graders
(process sandbox), reports where they were placed, and grades 40 completions; after the first
results the test kills one worker node (every process started by that `ray start`, found by an
environment marker: the raylet, its agents, and the worker processes the raylet spawned in their
own process groups). Every completion must still get its correct verdict.

Teardown kills only this cluster's processes (the same kind of marker), never `ray stop --force`:
that would also stop every other Ray on the machine (this pytest session's own local cluster,
other users' runs).
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from vgrout_ray.env.exploits import clean_completion, exploit_completion, method_name, wrong_completion
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.env.modes import LOOPHOLE_MODES
from vgrout_ray.env.problems import load_problems
from vgrout_ray.sandbox.local_grader import LocalGrader

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
SHARED_TEST_SET = Path(os.environ.get("VGROUT_SHARED_DATA", REPO.parent / "shared" / "data")) \
    / "leetcode" / "leetcode_test_medhard.jsonl"
MARK = "VGROUT_MULTINODE"  # env marker: "<cluster token>:<node name>" on every process of a node

DRIVER = r'''
import json, sys, time
import ray
from vgrout_ray.actors.grader import GraderPool
from vgrout_ray.env.grading import GradeRequest

def emit(tag, obj):
    print(tag, json.dumps(obj), flush=True)

ray.init(address=sys.argv[1], log_to_driver=False)
reqs = [GradeRequest(**d) for d in json.load(open(sys.argv[2]))]
nodes = [{"id": n["NodeID"], "alive": n["Alive"], "port": n["NodeManagerPort"],
          "grader": n["Resources"].get("grader", 0)} for n in ray.nodes()]
pool = GraderPool(2, sandbox="process")
pool.wait_ready(timeout=120)
emit("PLACED", {"nodes": nodes, "actors": pool.describe(), "grader_resource": pool.use_grader_resource})
t0 = time.monotonic()
keys = pool.submit(reqs)
out = {}
for g in pool.as_completed(timeout=150):
    out[g.key] = {"result": g.result.to_dict(), "attempts": g.attempts, "actor": g.actor}
    emit("RESULT", {"key": g.key, "n": len(out), "t": round(time.monotonic() - t0, 2)})
emit("DONE", {"results": out, "stats": pool.stats(),
              "slots": [{"name": a["name"], "ready": a["ready"], "node_id": a["node_id"]} for a in pool.actor_states()]})
pool.close(timeout=10)
'''


def _free_port(used: set[int]) -> int:
    """A port free now and not handed out before (the kernel may return a just-closed one again)."""
    while True:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        if port not in used:
            used.add(port)
            return port


def _free_range(n: int = 100, taken: set[int] | None = None) -> tuple[int, int]:
    """A run of n ports that are free now (worker ports of one node), below the ephemeral range
    that ``_free_port`` draws from."""
    eph_lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        lo = random.randrange(15000, max(15100, eph_lo - n), 100)
        if taken is not None and lo in taken:
            continue
        socks = []
        try:
            for p in range(lo, lo + n, 10):  # sample every 10th
                s = socket.socket()
                socks.append(s)
                s.bind(("", p))
            if taken is not None:
                taken.add(lo)
            return lo, lo + n - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def _procs_marked(value: str) -> list[int]:
    """Pids whose environment carries MARK=value (prefix match on value)."""
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


def _kill_marked(value: str) -> int:
    pids = _procs_marked(value)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return len(pids)


class LocalMultiNode:
    """Head + worker nodes started with `ray start --block`, each in its own process group."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self.temp = tempfile.mkdtemp(prefix="vgmn", dir="/tmp")  # short: socket paths are length-limited
        self._used: set[int] = set()
        self.gcs_port = self._port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.nodes: dict[str, dict] = {}
        self._ranges: set[int] = set()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update({
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,  # this cluster's own token
            # notice a dead node in seconds, not half a minute
            "RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        })

    def _port(self) -> int:
        return _free_port(self._used)

    def _start(self, name: str, args: list[str]) -> None:
        lo, hi = _free_range(taken=self._ranges)
        nm_port = self._port()
        argv = ["ray", "start", *args, "--num-cpus=1", "--disable-usage-stats", "--block",
                f"--node-manager-port={nm_port}", f"--object-manager-port={self._port()}",
                f"--min-worker-port={lo}", f"--max-worker-port={hi}",
                f"--dashboard-agent-listen-port={self._port()}", f"--dashboard-agent-grpc-port={self._port()}",
                f"--metrics-export-port={self._port()}", f"--runtime-env-agent-port={self._port()}",
                "--object-store-memory=100000000"]
        if name in self.nodes:
            self.nodes[name]["log"].close()
        log = open(Path(self.temp) / f"{name}.out", "w")
        proc = subprocess.Popen(argv, env={**self.env, MARK: f"{self.token}:{name}"}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes[name] = {"proc": proc, "port": nm_port, "log": log}

    def start(self) -> None:
        # One node at a time: ports are picked before `ray start` binds them, and Ray picks a few
        # of its own, so concurrent starts can collide; a node that fails is retried once.
        self._start_node("head", ["--head", f"--port={self.gcs_port}", "--resources={}",
                                  "--include-dashboard=false", f"--dashboard-port={self._port()}",
                                  f"--ray-client-server-port={self._port()}", f"--temp-dir={self.temp}"])
        for name in ("w1", "w2"):
            self._start_node(name, [f"--address={self.address}", '--resources={"grader": 1}'])

    def _start_node(self, name: str, args: list[str], tries: int = 2) -> None:
        for attempt in range(tries):
            self._start(name, args)
            if self._wait_started(name, 90):
                return
            self.kill_node(name)
        raise RuntimeError(f"ray start ({name}) failed: {self.log_tail(name)}")

    def _wait_started(self, name: str, timeout: float) -> bool:
        """`ray start` prints this only after its raylet registered with the GCS."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "Ray runtime started" in self.log_tail(name, 1 << 20):
                return True
            if self.nodes[name]["proc"].poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def alive_nodes(self) -> list[dict]:
        code = ("import ray, json; ray.init(address=%r, log_to_driver=False); "
                "print('NODES', json.dumps([n for n in ray.nodes() if n['Alive']], default=str))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60)
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
        """Kill one node: its `ray start` group and every process that node started (raylet's workers too)."""
        node = self.nodes[name]
        try:
            os.killpg(node["proc"].pid, signal.SIGKILL)
        except OSError:
            pass
        return _kill_marked(f"{self.token}:{name}") + 1

    def stop(self) -> None:
        for name in list(self.nodes):
            try:
                os.killpg(self.nodes[name]["proc"].pid, signal.SIGKILL)
            except OSError:
                pass
        for _ in range(3):  # workers live in their own process groups: sweep by marker
            if not _kill_marked(f"{self.token}:"):
                break
            time.sleep(0.5)
        for node in self.nodes.values():
            try:
                node["proc"].wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            node["log"].close()
        shutil.rmtree(self.temp, ignore_errors=True)


def _corpus() -> list[GradeRequest]:
    try:
        probs = load_problems(10, env_modes=list(LOOPHOLE_MODES))
    except Exception:
        probs = load_problems(10, env_modes=list(LOOPHOLE_MODES), source=SHARED_TEST_SET)
    reqs = []
    for i, p in enumerate(probs):
        slow = (f"```python\nimport time\ntime.sleep(0.3)\n\nclass Solution:\n"
                f"    def {method_name(p)}(self, *a, **k):\n        return 0\n```\n")
        reqs += [GradeRequest.from_problem(p, clean_completion(p)),
                 GradeRequest.from_problem(p, wrong_completion(p)),
                 GradeRequest.from_problem(p, exploit_completion(p, p["env_mode"], i % 4)),
                 GradeRequest.from_problem(p, slow, "gt_only")]
    return reqs


@pytest.fixture
def cluster():
    c = LocalMultiNode()
    try:
        c.start()
        yield c
    finally:
        c.stop()
        assert _procs_marked(f"{c.token}:") == [], "processes of the test cluster survived teardown"


def test_graders_on_grader_nodes_survive_a_node_death(cluster, tmp_path):
    reqs = _corpus()
    assert len(reqs) == 40
    with LocalGrader("process") as g:  # reference verdicts
        reference = [r.to_dict() for r in g.grade(reqs)]
    (tmp_path / "reqs.json").write_text(json.dumps([r.__dict__ for r in reqs]))
    (tmp_path / "driver.py").write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), cluster.address, str(tmp_path / "reqs.json")],
                              env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    err_tail: list[str] = []
    threading.Thread(target=lambda: [err_tail.append(ln) for ln in driver.stderr], daemon=True).start()
    timer = threading.Timer(170, lambda: os.killpg(driver.pid, signal.SIGKILL))
    timer.start()
    placed = done = None
    killed = None
    try:
        for line in driver.stdout:
            tag, _, body = line.partition(" ")
            if tag == "PLACED":
                placed = json.loads(body)
                grader_nodes = {n["id"]: n for n in placed["nodes"] if n["grader"] > 0}
                assert placed["grader_resource"], "the pool must ask for the 'grader' resource"
                actor_nodes = [a["node_id"] for a in placed["actors"]]
                assert sorted(actor_nodes) == sorted(grader_nodes), \
                    f"one grader per grader node, none on the head: {actor_nodes} vs {list(grader_nodes)}"
            elif tag == "RESULT" and killed is None and json.loads(body)["n"] >= 5:
                victim_port = grader_nodes[placed["actors"][0]["node_id"]]["port"]
                killed = next(k for k, v in cluster.nodes.items() if v["port"] == victim_port)
                n_killed = cluster.kill_node(killed)
                killed_at = json.loads(body)["t"]
            elif tag == "DONE":
                done = json.loads(body)
    finally:
        timer.cancel()
        driver.wait(timeout=30)
    assert done is not None, f"driver did not finish (rc={driver.returncode}): {''.join(err_tail[-40:])}"
    assert killed is not None and n_killed >= 2, "a worker node must have been killed mid-run"
    results = {int(k): v for k, v in done["results"].items()}
    assert sorted(results) == list(range(len(reqs))), "every completion gets exactly one result"
    for i, ref in enumerate(reference):
        got = results[i]["result"]
        assert got["error"] is None, f"{i}: {got['error']}"
        assert got == ref, f"completion {i}: {got} != {ref}"
    s = done["stats"]
    assert s["completed"] == len(reqs) and s["failed"] == 0
    assert s["replaced_actors"] >= 1 and s["retried"] >= 1, f"the dead node's in-flight work was retried: {s}"
    assert any(v["attempts"] > 1 for v in results.values())
    # after the kill, everything left was graded on the surviving grader node
    survivor = [a["node_id"] for a in placed["actors"]][1]
    late = [v for v in results.values() if v["attempts"] > 1]
    assert late and all(v["actor"] for v in late)
    assert cluster.nodes[killed]["proc"].poll() is not None
    alive = {n["NodeID"] for n in cluster.alive_nodes()}
    assert survivor in alive and placed["actors"][0]["node_id"] not in alive, "the killed node is gone"
    print(f"killed {killed} after {killed_at} s; stats {s}")
