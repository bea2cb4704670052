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
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vgrout_ray.env.exploits import clean_completion, exploit_completion, method_name, wrong_completion
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.env.modes import LOOPHOLE_MODES
from vgrout_ray.env.problems import load_problems
from vgrout_ray.grading.local import LocalGrader

from .raycli import CliCluster, procs_marked

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
SHARED_TEST_SET = Path(os.environ.get("VGROUT_SHARED_DATA", REPO.parent / "shared" / "data")) \
    / "leetcode" / "leetcode_test_medhard.jsonl"
DRIVER = r'''
import json, sys, time
import ray
from vgrout_ray.grading.pool import GraderPool
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
    """Head (no grader resource) + two worker nodes advertising `grader`: 1, one CPU each."""
    c = CliCluster(fast_failure_detection=True, object_store_bytes=100_000_000)
    try:
        c.start_head(num_cpus=1, resources="{}")
        for name in ("w1", "w2"):
            c.add_worker(name, num_cpus=1, resources='{"grader": 1}')
        yield c
    finally:
        c.stop()
        assert procs_marked(f"{c.token}:") == [], "processes of the test cluster survived teardown"


def test_graders_on_grader_nodes_survive_a_node_death(cluster, tmp_path):
    reqs = _corpus()
    assert len(reqs) == 40
    with LocalGrader("process") as g:  # reference verdicts
        reference = [r.to_dict() for r in g.grade(reqs)]
    (tmp_path / "reqs.json").write_text(json.dumps([r.__dict__ for r in reqs]))
    (tmp_path / "driver.py").write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), cluster.address, str(tmp_path / "reqs.json")],
                              env=cluster.client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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
