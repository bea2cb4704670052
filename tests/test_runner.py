"""The warm runner and its protocol, through the process backend (real forked children)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from vgrout_ray.sandbox.backends import ProcessSandbox
from vgrout_ray.sandbox.client import RUNNER_PATH, Job


@pytest.fixture(scope="module")
def sb():
    s = ProcessSandbox()
    yield s
    s.close()


def run1(sb, program: str, timeout: float = 3.0):
    return sb.run([Job(program, timeout)])[0]


@pytest.mark.parametrize("program,code", [
    ("pass", 0), ("import sys; sys.exit(3)", 3), ("raise SystemExit('bye')", 1), ("exit()", 0),
    ("raise ValueError('x')", 1), ("import os; os._exit(5)", 5), ("import sys; sys.exit(256)", 0),
])
def test_exit_status_like_python_c(sb, program, code):
    r = run1(sb, program)
    assert r.exit_code == code and not r.timed_out


def test_traceback_looks_like_python_c(sb):
    r = run1(sb, "def f():\n    raise KeyError('k')\nf()")
    assert r.stderr.startswith("Traceback (most recent call last):\n  File \"<string>\", line 3")
    assert "runner.py" not in r.stderr


def test_stdout_buffering_and_atexit_like_python_c(sb):
    assert run1(sb, "print('lost'); import os; os._exit(0)").stdout == ""  # buffered, never flushed
    r = run1(sb, "import atexit; atexit.register(lambda: print('bye')); print('hi')")
    assert r.stdout == "hi\nbye\n"


def test_deadline_kills_and_reports(sb):
    t = time.monotonic()
    r = run1(sb, "while True: pass", timeout=1.0)
    assert r.timed_out and r.exit_code is None and time.monotonic() - t < 3
    r = run1(sb, "import time; time.sleep(30)", timeout=0.5)
    assert r.timed_out


def test_output_is_capped_and_flood_is_killed(sb):
    r = run1(sb, "print('y' * 200_000)")
    assert len(r.stdout) == 64 * 1024 and r.stdout_bytes == 200_001 and r.exit_code == 0
    r = run1(sb, "import sys\nwhile True: sys.stdout.write('z' * 65536)")
    assert r.output_killed and not r.ok


def test_files_left_behind_are_reported_and_removed(sb):
    r = run1(sb, "open('result.txt','w').write('PASS')\nimport os; os.mkdir('d'); open('d/x','w').write('1')")
    names = {f["name"]: f for f in r.files}
    assert names["result.txt"]["head"] == "PASS" and "d/x" in names and r.n_files == 3
    r = run1(sb, "import os; print(sorted(os.listdir('.')))")
    assert r.stdout.strip() == "[]"  # a fresh work dir per program


def test_leftover_processes_are_killed(sb):
    r = run1(sb, "import os, time\nif os.fork() == 0:\n    os.setsid(); time.sleep(60)\nprint('ok')")
    assert r.stdout == "ok\n" and r.survivors_killed == 1
    assert run1(sb, "print(1)").stdout == "1\n"


def test_stdin_is_empty(sb):
    r = run1(sb, "import sys; print(repr(sys.stdin.read()))")
    assert r.stdout == "''\n"


def test_report_pipe(sb):
    r = run1(sb, "import os; os.write(3, b'hello\\n')")
    assert r.report == "hello\n"


def test_several_jobs_one_round_trip(sb):
    res = sb.run([Job(f"print({i})") for i in range(5)])
    assert [r.stdout for r in res] == [f"{i}\n" for i in range(5)]


def test_bad_requests_get_an_error_and_the_runner_keeps_serving():
    p = subprocess.Popen([sys.executable, str(RUNNER_PATH)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        hello = json.loads(p.stdout.readline())
        assert hello["hello"]["version"]
        for line in (b"not json\n", b'{"id": 1, "jobs": "x"}\n', b'{"id": 2, "jobs": [{"nope": 1}]}\n'):
            p.stdin.write(line)
            p.stdin.flush()
            assert "error" in json.loads(p.stdout.readline())
        p.stdin.write(b'{"id": 3, "jobs": [{"program": "print(7)"}]}\n')
        p.stdin.flush()
        assert json.loads(p.stdout.readline())["results"][0]["stdout"] == "7\n"
        p.stdin.write(b'{"id": 4, "op": "ping"}\n')
        p.stdin.flush()
        assert json.loads(p.stdout.readline())["pong"] is True
    finally:
        p.stdin.close()
        p.wait(timeout=10)
    assert p.returncode == 0


def test_runner_isolation_is_reported(sb):
    h = sb.describe()
    assert h["kind"] == "process" and h["version"]
    if h.get("uid") == 0:  # as root the runner gets its namespaces and an unprivileged job uid
        assert h["pid1"] and h["isolation"]["netns"] and h["isolation"]["mountns"]
        assert h["job_uid"] != 0
