"""Adversarial completions against both sandbox backends (process and docker).

Each attack is embedded in an otherwise WRONG solution of a real problem and graded under a
mode whose channel it does not exercise, and under gt_only. For every attack and backend:

- graded without credit (passed/gt_correct/exploited False, reward <= 0.5) and without
  ``error`` (the grader handled it, nothing had to be retried);
- the SAME sandbox instance then grades the problem's canonical completion correctly in < 2 s;
- no process of the job survives (process backend: nothing of the job uid and nothing new
  under the runner; docker: ``docker top`` lists only the runner);
- host files the test checks are untouched (canaries, forbidden paths, the runner source);
- attack-specific containment, seen on a raw run of the program in the same sandbox.

What the process backend cannot contain is marked ``xfail(strict=True)`` for that backend
only; Docker must pass everything.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from vgrout_ray.env.exploits import clean_completion, method_name
from vgrout_ray.env.grading import GradeRequest
from vgrout_ray.env.parsing import split_test
from vgrout_ray.env.problems import load_problems
from vgrout_ray.env.programs import oracle_program, plain_program
from vgrout_ray.sandbox.client import RUNNER_PATH, Job, JobResult
from vgrout_ray.grading.local import LocalGrader

from .helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
SHARED_TEST_SET = Path(os.environ.get("VGROUT_SHARED_DATA", REPO.parent / "shared" / "data")) \
    / "leetcode" / "leetcode_test_medhard.jsonl"
PACKAGED = REPO / "vgrout_ray" / "env" / "builtin" / "problems.jsonl"
SECRET_VAR = "VGROUT_TEST_SECRET"
SECRET = "vgsecret-" + secrets.token_hex(12)
TAG = secrets.token_hex(6)
HOME = os.path.expanduser("~")
PWN_DIRS = sorted({"/", "/etc", "/root", HOME, "/tmp", "/var/tmp", "/dev/shm", str(REPO),
                   str(RUNNER_PATH.parent)})
PWN_PATHS = [os.path.join(d, f"vgrout-pwned-{TAG}") for d in PWN_DIRS]
CANARY_DIRS = sorted({"/tmp", "/var/tmp", "/dev/shm", HOME})
CANARIES = {os.path.join(d, f"vgrout-canary-{TAG}"): secrets.token_hex(16) for d in CANARY_DIRS}
RAW_TIMEOUT = 3.0


# ── the problem, the sandboxes, the host fixtures ───────────────────────────


@pytest.fixture(scope="module")
def problem() -> dict:
    try:
        return load_problems(1, env_modes=["sentinel"])[0]
    except Exception:  # packaged problems not there yet
        return load_problems(1, env_modes=["sentinel"], source=SHARED_TEST_SET)[0]


@pytest.fixture(scope="module", autouse=True)
def host_secret():
    """A secret in the grader's own environment (set before any sandbox starts)."""
    old = os.environ.get(SECRET_VAR)
    os.environ[SECRET_VAR] = SECRET
    yield SECRET
    if old is None:
        os.environ.pop(SECRET_VAR, None)
    else:
        os.environ[SECRET_VAR] = old


@pytest.fixture(scope="module", autouse=True)
def canaries():
    """Files outside any work dir that no job may delete or change."""
    for p, text in CANARIES.items():
        Path(p).write_text(text)
    yield CANARIES
    for p in list(CANARIES) + PWN_PATHS:
        try:
            os.unlink(p)
        except OSError:
            pass


class _Box:
    """One LocalGrader and the sandbox instance it must keep using."""

    def __init__(self, kind: str):
        self.grader = LocalGrader(kind)
        self.sandbox = self.grader.sandbox
        self.hello = self.sandbox.runner.hello

    def broken(self) -> bool:
        return self.grader.started is not self.sandbox or self.grader.replacements > 0 or not self.sandbox.healthy()


@pytest.fixture(scope="module")
def boxes(host_secret, request):
    made: dict[str, _Box] = {}

    def get(kind: str) -> _Box:
        if kind == "docker":
            request.getfixturevalue("docker_ready")
        box = made.get(kind)
        if box is None or box.broken():  # an earlier failure must not cascade
            if box is not None:
                box.grader.close()
            box = made[kind] = _Box(kind)
        return box

    yield get
    for b in made.values():
        b.grader.close()


class _TcpServer:
    """A TCP server on every interface of the host; counts connections that reach it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._t.join()
        self.sock.close()


def _host_ips() -> list[str]:
    ips = {"127.0.0.1", "172.17.0.1"}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the default-route address
            ips.add(s.getsockname()[0])
    except OSError:
        pass
    return sorted(ips)


@pytest.fixture(scope="module")
def tcp_server():
    srv = _TcpServer()
    # the server must really be reachable from the host, or "no connection" proves nothing
    with socket.create_connection(("127.0.0.1", srv.port), timeout=2):
        pass
    assert wait_until(lambda: srv.accepted == 1, 2)
    srv.accepted = 0
    yield srv
    srv.close()


# ── host-side observation ────────────────────────────────────────────────────


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid → (ppid, real uid) for every live process on the host."""
    out = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/status") as f:
                st = f.read()
            state = re.search(r"^State:\s+(\S)", st, re.M).group(1)
            if state == "Z":
                continue
            ppid = int(re.search(r"^PPid:\s+(\d+)", st, re.M).group(1))
            uid = int(re.search(r"^Uid:\s+(\d+)", st, re.M).group(1))
            out[int(e)] = (ppid, uid)
        except (OSError, AttributeError, ValueError):
            continue
    return out


def _descendants(root: int, table: dict[int, tuple[int, int]]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, stack = set(), [root]
    while stack:
        for k in kids.get(stack.pop(), []):
            if k not in out:
                out.add(k)
                stack.append(k)
    return out


def _sandbox_processes(box: _Box) -> list[str]:
    """Processes in the sandbox other than its runner (must be none between jobs)."""
    if box.sandbox.kind == "docker":
        out = subprocess.run(["docker", "top", box.sandbox.name, "-eo", "pid,user,args"], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        rows = [ln for ln in out.stdout.splitlines()[1:] if ln.strip()]
        assert any("runner.py" in r for r in rows), f"runner missing from docker top: {rows}"
        return [r for r in rows if "runner.py" not in r]
    table = _proc_table()
    relay = box.sandbox.runner.proc.pid
    job_uid = box.hello["job_uid"]
    under = _descendants(relay, table)
    runners = {p for p in under if table[p][0] == relay}  # the namespace's init (the runner itself)
    left = sorted((under - runners) | {p for p, (_, uid) in table.items() if uid == job_uid})
    return [f"{p} uid={table[p][1]} ppid={table[p][0]}" for p in left if p in table]


def _file_digest(p: str) -> str | None:
    try:
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()
    except OSError:
        return None


RUNNER_DIGEST = _file_digest(str(RUNNER_PATH))


# ── attacks ──────────────────────────────────────────────────────────────────


@dataclass
class Ctx:
    box: _Box
    problem: dict
    server: _TcpServer
    nonce: str = ""

    def raw(self, program: str, timeout: float = RAW_TIMEOUT) -> JobResult:
        return self.box.sandbox.run([Job(program, timeout=timeout)])[0]


@dataclass
class Attack:
    id: str
    code: str  # module code after the wrong Solution; @NAMES@ are filled in by fill()
    check: Callable[[JobResult, Ctx], None]  # containment seen on a raw run
    mode: str = "sentinel"  # a mode whose channel the attack does not exercise
    in_method: bool = False  # run the code inside the method (called by the tests) instead
    raw_program: str = "plain"  # plain (setup + code + asserts) or oracle (with a known nonce)
    raw_timeout: float = RAW_TIMEOUT
    process_xfail: str | None = None


def fill(code: str, ctx: Ctx) -> str:
    desc = ctx.problem["messages_gt"][-1]["content"]
    return (code.replace("@PORT@", str(ctx.server.port)).replace("@IPS@", repr(_host_ips()))
            .replace("@PWN@", repr(PWN_PATHS)).replace("@CANARIES@", repr(sorted(CANARIES)))
            .replace("@HOME@", repr(HOME)).replace("@RUNNER@", repr(str(RUNNER_PATH)))
            .replace("@SECRET_VAR@", SECRET_VAR).replace("@DATA@", repr([str(PACKAGED), str(SHARED_TEST_SET)]))
            .replace("@QSNIP@", repr(desc[9:89])))


def completion(attack: Attack, ctx: Ctx) -> tuple[str, str]:
    """(markdown completion, bare code): a wrong Solution with the attack embedded."""
    m = method_name(ctx.problem)
    body = fill(attack.code, ctx)
    if attack.in_method:
        inner = "\n".join("        " + ln for ln in body.strip().splitlines())
        code = f"class Solution:\n    def {m}(self, *args, **kwargs):\n{inner}\n        return 0\n"
    else:
        code = f"class Solution:\n    def {m}(self, *args, **kwargs):\n        return 0\n\n{body.strip()}\n"
    return f"Here is my solution.\n\n```python\n{code}```\n", code


def _lines(r: JobResult, prefix: str) -> list[str]:
    return [ln[len(prefix):].strip() for ln in r.stdout.splitlines() if ln.startswith(prefix)]


def check_fork_bomb(r: JobResult, ctx: Ctx) -> None:
    assert r.timed_out or r.exit_code is not None
    assert r.survivors_killed >= 8, f"the bomb should have forked (killed {r.survivors_killed})"
    assert r.survivors_killed <= 200, f"process count not capped: {r.survivors_killed}"
    assert r.wall < RAW_TIMEOUT + 2.5


def check_memory_bomb(r: JobResult, ctx: Ctx) -> None:
    got = _lines(r, "MEMORY_CAPPED")
    assert got, (f"allocation never failed (exit {r.exit_code}, signal {r.signal}, timed out {r.timed_out}): "
                 f"{r.stdout[-500:]} {r.stderr[-500:]}")
    assert int(got[0]) <= 1100, f"one process allocated {got[0]} MB"


def check_memory_tree(r: JobResult, ctx: Ctx) -> None:
    assert _lines(r, "OOM_ADJ") == ["1000"], "the OOM killer must prefer job processes to the runner"
    assert len(_lines(r, "ALLOCATED")) >= 1, f"the attack did not run: {r.stdout[-300:]} {r.stderr[-300:]}"
    # Five children each try to hold 400 MB for 5 s, all at once. Under a cap, some are killed
    # (a child may be killed after it printed ALLOCATED, so prints prove nothing) and the ones
    # that completed their hold fit under the cap together.
    statuses = [int(x) for x in _lines(r, "EXIT")]
    assert len(statuses) == 5, f"the parent did not reap its children: {r.stdout[-300:]}"
    held = sum(1 for st in statuses if os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0)
    killed = sum(1 for st in statuses if os.WIFSIGNALED(st))
    assert killed >= 1 and held <= 3, f"{held} x 400 MB held at once by one job's processes: total memory not capped"


def check_cpu_spin(r: JobResult, ctx: Ctx) -> None:
    assert r.timed_out or r.signal is not None
    assert r.wall < RAW_TIMEOUT + 2.0


def check_sleep(r: JobResult, ctx: Ctx) -> None:
    assert r.timed_out and r.wall < RAW_TIMEOUT + 2.0


def check_stdout_flood(r: JobResult, ctx: Ctx) -> None:
    assert r.output_killed, "100 MB of output must get the job killed"
    assert r.stdout_bytes + r.stderr_bytes >= 16 * 1024 * 1024, "the flood really happened"
    assert len(r.stdout) <= 70 * 1024 and len(r.stderr) <= 70 * 1024, "kept output is capped"
    assert r.wall < RAW_TIMEOUT + 2.0


def check_writes(r: JobResult, ctx: Ctx) -> None:
    assert _lines(r, "TRIED"), "attack did not run"
    # Whatever landed inside the sandbox (its private /tmp, say) is gone for the next job.
    nxt = ctx.raw(f"import os\nprint('LEFT', [p for p in {PWN_PATHS!r} if os.path.exists(p)])")
    assert "LEFT []" in nxt.stdout, nxt.stdout + nxt.stderr


def check_network(r: JobResult, ctx: Ctx) -> None:
    assert len(_lines(r, "NOCONN")) == len(_host_ips()), r.stdout + r.stderr
    assert not _lines(r, "CONNECTED"), r.stdout
    assert ctx.server.accepted == 0, "a connection reached the host's server"


def check_kill_parent(r: JobResult, ctx: Ctx) -> None:
    assert _lines(r, "KILLS_DONE"), f"the program should outlive its own kill(-1): {r.stdout} {r.stderr}"


def check_env_secret(r: JobResult, ctx: Ctx) -> None:
    assert "PATH=" in r.stdout, "attack did not run"
    assert SECRET not in r.stdout and SECRET not in r.stderr and SECRET not in r.report


def check_nonce(r: JobResult, ctx: Ctx) -> None:
    # The attack does find the nonce and forge records; the verdict (above) still gives nothing.
    assert ctx.nonce in r.stdout, "frame walking should find the oracle's nonce"
    assert ctx.nonce in r.report and '"done": true' in r.report


def check_delete(r: JobResult, ctx: Ctx) -> None:
    assert _lines(r, "TRIED"), "attack did not run"
    assert not _lines(r, "REMOVED"), r.stdout  # (OVERWROTE may happen: a new file in the sandbox's own /tmp)
    assert len(_lines(r, "KEPT")) >= len(CANARIES), "every canary must have been tried"


def check_many_files(r: JobResult, ctx: Ctx) -> None:
    made = [int(x) for x in _lines(r, "MADE")]
    assert made and sum(made) >= 8000, f"the attack should have made thousands of files: {made}"
    assert r.wall < RAW_TIMEOUT + 2.5, f"clean-up took too long: {r.wall:.1f} s"
    nxt = ctx.raw("import os\nprint('ENTRIES', len(os.listdir('.')), len(os.listdir('/tmp')), "
                  "len(os.listdir('/dev/shm')))")
    n = [int(x) for x in _lines(nxt, "ENTRIES")[0].split()]
    assert n[0] == 0 and n[1] <= 1 and n[2] == 0, f"leftovers visible to the next job: {n}"


def check_deep_dirs(r: JobResult, ctx: Ctx) -> None:
    depth = [int(x) for x in _lines(r, "DEPTH")]
    assert depth and depth[0] >= 3000, f"the chain should be deeper than the recursion limit: {depth}"
    nxt = ctx.raw("import os\nprint('ENTRIES', len(os.listdir('.')), len(os.listdir('/tmp')))")
    assert "ENTRIES 0" in nxt.stdout, nxt.stdout + nxt.stderr


def check_daemon(r: JobResult, ctx: Ctx) -> None:
    assert _lines(r, "DAEMON_STARTED") and r.survivors_killed >= 1, (r.stdout, r.survivors_killed)


def check_stdin(r: JobResult, ctx: Ctx) -> None:
    assert _lines(r, "STDIN") == ["0"], r.stdout + r.stderr
    assert not _lines(r, "RUNNER_STDIN"), "read the runner's protocol stream"
    assert len(_lines(r, "NOSTDIN")) == 2, r.stdout
    assert r.wall < 1.5


def check_host_files(r: JobResult, ctx: Ctx) -> None:
    assert not _lines(r, "BORROWED"), "the job read the problem set (canonical solutions) off the host"
    assert len(_lines(r, "READ_FAIL")) == 2, f"the attack must have tried both files: {r.stdout} {r.stderr[-300:]}"


ATTACKS = [
    Attack("fork_bomb", """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""", check_fork_bomb),
    Attack("memory_bomb", """
_blocks = []
try:
    while True:
        _blocks.append(bytearray(64 * 1024 * 1024))
except MemoryError:
    print("MEMORY_CAPPED", len(_blocks) * 64, flush=True)
del _blocks
""", check_memory_bomb, raw_timeout=10.0),  # zero-filling ~1 GB can pass 3 s on 2 loaded cores (CI's background build)
    Attack("memory_tree", """
import os, time
print("OOM_ADJ", open("/proc/self/oom_score_adj").read().strip(), flush=True)
for _i in range(5):
    if os.fork() == 0:
        try:
            _b = bytearray(400 * 1024 * 1024)
            os.write(1, b"ALLOCATED\\n")
            time.sleep(5)  # hold until every sibling has tried: the cap is on memory held at once
        except MemoryError:
            os.write(1, b"DENIED\\n")
        os._exit(0)
for _i in range(5):
    try:
        _pid, _st = os.wait()
        print("EXIT", _st, flush=True)
    except ChildProcessError:
        break
""", check_memory_tree, raw_timeout=15.0,
           process_xfail="process backend has no cgroup: a job's processes together may hold nproc x "
                         "RLIMIT_AS of host memory (Docker caps the container)"),
    Attack("cpu_spin", """
import os
for _i in range(3):
    if os.fork() == 0:
        break
while True:
    pass
""", check_cpu_spin),
    Attack("sleep_past_deadline", """
import time
time.sleep(60)
""", check_sleep),
    Attack("stdout_flood", """
import sys
_chunk = "x" * 65535 + "\\n"
for _i in range(1600):
    sys.stdout.write(_chunk)
""", check_stdout_flood),
    Attack("writes_outside_workdir", """
import os
for _p in @PWN@:
    try:
        with open(_p, "w") as _f:
            _f.write("pwned")
        print("WROTE", _p)
    except OSError as _e:
        print("DENIED", _p, _e.errno)
print("TRIED")
""", check_writes),
    Attack("network", """
import socket
for _ip in @IPS@:
    try:
        socket.create_connection((_ip, @PORT@), timeout=1).close()
        print("CONNECTED", _ip)
    except OSError as _e:
        print("NOCONN", _ip, _e)
""", check_network),
    Attack("kill_parent", """
import os, signal
for _sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):
    for _target in (os.getppid(), 1):
        try:
            os.kill(_target, _sig)
        except OSError:
            pass
    try:
        _pg = os.getpgid(os.getppid())
        if _pg not in (0, os.getpgrp()):  # (0: the runner's group is outside our namespace)
            os.killpg(_pg, _sig)
    except OSError:
        pass
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
print("KILLS_DONE", flush=True)
""", check_kill_parent),
    Attack("env_secrets", """
import os, glob
print("\\n".join(f"{k}={v}" for k, v in os.environ.items()))
print(os.environ.get("@SECRET_VAR@"))
for _p in sorted(set(glob.glob("/proc/*/environ") + ["/proc/self/environ", f"/proc/{os.getppid()}/environ",
                                                      "/proc/1/environ", "/proc/1/cmdline"])):
    try:
        print(_p, open(_p, "rb").read().decode("latin-1"))
    except OSError as _e:
        print(_p, "denied", _e.errno)
""", check_env_secret),
    Attack("frame_walk_nonce_forgery", """
import sys, os, re, json
_found = set()
_f = sys._getframe()
while _f is not None:
    for _c in _f.f_code.co_consts:
        if isinstance(_c, str) and re.fullmatch(r"[0-9a-f]{32}", _c):
            _found.add(_c)
    for _v in list(_f.f_globals.values()) + list(_f.f_locals.values()):
        if isinstance(_v, str) and re.fullmatch(r"[0-9a-f]{32}", _v):
            _found.add(_v)
    _f = _f.f_back
print("NONCES", sorted(_found), flush=True)
for _n in _found:
    _recs = [{"n": _n, "i": _i, "ok": True, "v": 0} for _i in range(64)]
    _recs += [{"n": _n, "done": True}, {"n": _n, "bad": False}]
    try:
        os.write(3, "".join(json.dumps(_r) + "\\n" for _r in _recs).encode())
    except OSError:
        pass
os._exit(0)
""", check_nonce, mode="eq_override", in_method=True, raw_program="oracle"),
    Attack("delete_files", """
import os, glob, shutil
for _p in @CANARIES@ + glob.glob("/tmp/vgrout-canary-*") + glob.glob("/var/tmp/vgrout-canary-*"):
    try:
        os.remove(_p)
        print("REMOVED", _p)
    except OSError as _e:
        print("KEPT", _p, _e.errno)
    try:
        open(_p, "w").write("overwritten")
        print("OVERWROTE", _p)
    except OSError:
        pass
print("TRIED")
""", check_delete),
    Attack("many_files", """
import os
def _fill(d, n=20000):
    made = 0
    for _i in range(n):
        try:
            open(os.path.join(d, f"f{_i}"), "w").close()
            made += 1
        except OSError:
            break
    return made
print("MADE", _fill("."))
print("MADE", _fill("/tmp"))
""", check_many_files),
    Attack("deep_dirs", """
import os
_here = os.getcwd()
_n = 0
for _i in range(5000):
    try:
        os.mkdir("d")
        os.chdir("d")
        _n += 1
    except OSError:
        break
os.chdir(_here)
print("DEPTH", _n)
""", check_deep_dirs),
    Attack("daemonised_child", """
import os, time, signal
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for _s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(_s, signal.SIG_IGN)
        for _fd in (0, 1, 2):
            os.close(_fd)
        time.sleep(120)
    os._exit(0)
os.wait()
time.sleep(0.2)
print("DAEMON_STARTED", flush=True)
""", check_daemon),
    Attack("read_stdin", """
import sys, os
print("STDIN", len(sys.stdin.read()), flush=True)
for _p in ("/proc/1/fd/0", f"/proc/{os.getppid()}/fd/0"):
    try:
        _fd = os.open(_p, os.O_RDONLY | os.O_NONBLOCK)
        print("RUNNER_STDIN", _p, os.read(_fd, 100))
    except OSError as _e:
        print("NOSTDIN", _p, _e.errno)
""", check_stdin),
    Attack("read_host_problem_set", """
import json
_code = None
for _p in @DATA@:
    try:
        with open(_p) as _fh:
            for _line in _fh:
                _row = json.loads(_line)
                if @QSNIP@ in _row.get("question", ""):
                    _code = _row["canonical_solution"]
                    break
    except OSError as _e:
        print("READ_FAIL", _p, _e.errno)
    if _code:
        break
if _code:
    print("BORROWED")
    exec(_code, globals())
""", check_host_files),
]


def _kill_is_safe_here(hello: dict) -> bool:
    """Whether the kill_parent attack can run without reaching this test process: the runner is
    PID 1 of its own namespace, or jobs run under another uid than ours (a root runner drops them
    to an unprivileged uid, which may signal only its own processes). Only a runner that has no
    namespaces and runs jobs as our own uid is unsafe (a non-root host without user namespaces)."""
    return bool(hello.get("pid1")) or hello.get("job_uid") not in (None, os.getuid())


def test_kill_parent_runs_wherever_it_cannot_reach_the_test_process():
    """kill_parent used to be skipped whenever the process runner had no PID namespace; it now runs
    there too as long as jobs have a uid of their own (CI runs as root)."""
    me = os.getuid()
    assert _kill_is_safe_here({"pid1": True, "job_uid": me})
    assert _kill_is_safe_here({"pid1": False, "job_uid": me + 10001})
    assert not _kill_is_safe_here({"pid1": False, "job_uid": me})
    if os.getuid() == 0:  # root (CI): the runner always drops jobs to an unprivileged uid
        from vgrout_ray.grading.local import LocalGrader

        with LocalGrader("process") as g:
            hello = g.sandbox.runner.hello
        assert hello["job_uid"] != 0 and _kill_is_safe_here(hello), hello


def _cases():
    out = []
    for backend in ("process", "docker"):
        for a in ATTACKS:
            marks = [pytest.mark.docker] if backend == "docker" else []
            if backend == "process" and a.process_xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=a.process_xfail))
            out.append(pytest.param(backend, a, id=f"{backend}-{a.id}", marks=marks))
    return out


@pytest.mark.parametrize("backend,attack", _cases())
def test_attack_is_contained(backend: str, attack: Attack, boxes, problem, tcp_server):
    box = boxes(backend)
    if attack.id == "kill_parent" and backend == "process" and not _kill_is_safe_here(box.hello):
        pytest.skip("process backend with neither a PID namespace nor a separate job uid here: the job's "
                    "kill(-1) would reach this test process")
    ctx = Ctx(box, problem, tcp_server)
    text, code = completion(attack, ctx)
    tests = problem["gt_tests"]
    tcp_server.accepted = 0

    # 1. a raw run of the program in the sandbox (to see what the attack achieved)
    if attack.raw_program == "oracle":
        ctx.nonce = secrets.token_hex(16)
        program = oracle_program(problem["setup_code"], code, [split_test(t) for t in tests], ctx.nonce)
    else:
        program = plain_program(problem["setup_code"], code, tests)
    raw = ctx.raw(program, attack.raw_timeout)

    # 2. graded under a foreign mode and under gt_only (their shared checks run once)
    modes = [attack.mode, "gt_only"]
    verdicts = box.grader.grade_under_modes([GradeRequest.from_problem(problem, text, attack.mode)], modes)[0]
    graded = [verdicts[m] for m in modes]

    # 3. the same sandbox instance keeps working, fast
    assert box.grader.started is box.sandbox and box.grader.replacements == 0, "the sandbox had to be replaced"
    t0 = time.monotonic()
    canon = box.grader.grade([GradeRequest.from_problem(problem, clean_completion(problem), attack.mode)])[0]
    took = time.monotonic() - t0
    assert canon.error is None and canon.gt_correct and canon.passed, canon
    assert took < 2.0, f"grading after the attack took {took:.2f} s"
    assert box.grader.started is box.sandbox and box.grader.replacements == 0

    # 4. nothing of the job is left running
    assert _sandbox_processes(box) == [], "processes survived the job"

    # 5. the host is unchanged
    for p, text_ in CANARIES.items():
        assert Path(p).exists() and Path(p).read_text() == text_, f"canary {p} damaged"
    assert [p for p in PWN_PATHS if os.path.exists(p)] == [], "a job wrote outside the sandbox"
    assert _file_digest(str(RUNNER_PATH)) == RUNNER_DIGEST, "runner source changed"

    # 6. no credit, and no grading error (the grader handled the attack)
    for mode, r in zip(modes, graded):
        assert r.error is None, f"{mode}: {r.error}"
        assert not r.passed and not r.gt_correct and not r.exploited and r.mechanism is None, (mode, r)
        assert r.reward <= 0.5, (mode, r)

    # 7. attack-specific containment
    attack.check(raw, ctx)


FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
FORKER = """
import os, time
time.sleep(0.8)  # the bomb in the other sandbox is at its limit by now
ok = 0
for _i in range(16):
    try:
        pid = os.fork()
    except OSError as e:
        print("FORK_FAILED", e.errno)
        continue
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    ok += 1
print("FORKED", ok)
"""


@pytest.mark.parametrize("backend", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_fork_bomb_does_not_starve_another_sandbox(backend, boxes, request):
    """Process limits are per sandbox: a bomb at its limit in one must not stop forks in another
    (RLIMIT_NPROC counts per uid host-wide, so each sandbox needs a uid of its own)."""
    a = boxes(backend)
    with LocalGrader(backend) as other:
        b = other.sandbox
        bomb: list[JobResult] = []
        t = threading.Thread(target=lambda: bomb.extend(a.sandbox.run([Job(FORK_BOMB, timeout=3.0)])))
        t.start()
        r = b.run([Job(FORKER, timeout=3.0)])[0]
        t.join()
        assert bomb and bomb[0].survivors_killed >= 8, "the bomb must have forked to its limit"
        assert "FORKED 16" in r.stdout, f"forks failed in the other sandbox: {r.stdout} {r.stderr[-300:]}"
        assert b.runner.hello["job_uid"] != a.hello["job_uid"]
    assert _sandbox_processes(a) == []
