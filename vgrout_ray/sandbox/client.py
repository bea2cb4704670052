"""Host side of the runner protocol: start a runner, send batches of programs, read results.

A backend (process or docker) only decides *how* the runner process is started; talking
to it is the same JSON-lines exchange over its stdin/stdout, implemented once here.
"""
from __future__ import annotations

import itertools
import json
import os
import selectors
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RUNNER_PATH = Path(__file__).with_name("runner.py")


class SandboxError(RuntimeError):
    """The sandbox could not run a batch (runner died, hung, or broke protocol).

    The batch may be retried on a fresh sandbox: nothing about the programs' verdicts is known.
    """


@dataclass
class Job:
    """One program to run like ``python -c program`` inside the sandbox."""

    program: str
    timeout: float = 3.0
    memory_mb: int = 1024

    def to_wire(self) -> dict:
        return {"program": self.program, "timeout": self.timeout, "memory_mb": self.memory_mb}


@dataclass
class JobResult:
    """What the runner observed of one program (see runner.run_job)."""

    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    output_killed: bool = False
    stdout: str = ""
    stderr: str = ""
    report: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    files: list[dict] = field(default_factory=list)
    n_files: int = 0
    survivors_killed: int = 0
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        """Exited normally with status 0 inside its deadline (the plain grader's notion of pass)."""
        return self.exit_code == 0 and not self.timed_out and not self.output_killed

    @classmethod
    def from_wire(cls, d: dict) -> "JobResult":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


class RunnerProcess:
    """One live runner process and the protocol to it. Not thread-safe: one batch at a time."""

    def __init__(self, argv: list[str], *, env: dict | None = None, start_timeout: float = 60.0,
                 name: str = "runner"):
        self.argv = argv
        self.name = name
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        # The runner gets a scrubbed environment: nothing of the host's secrets reaches a job.
        base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                    "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env if env is not None else base_env,
                                     start_new_session=True)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b""
        line = self._read_line(time.monotonic() + start_timeout)
        try:
            msg = json.loads(line)
            self.hello: dict = msg["hello"]
        except (ValueError, KeyError, TypeError) as e:
            err = self._stderr_tail()
            self.kill()
            raise SandboxError(f"{name}: no hello from runner ({e}); stderr: {err}") from None

    # -- low level ------------------------------------------------------------
    def _stderr_tail(self) -> str:
        try:
            if self.proc.poll() is not None:
                return self.proc.stderr.read().decode(errors="replace")[-2000:]
        except Exception:
            pass
        return "(runner still running)"

    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"{self.name}: runner did not answer in time")
            if not self._sel.select(left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise SandboxError(f"{self.name}: runner exited (status {self.proc.poll()}); "
                                   f"stderr: {self._stderr_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def _call(self, req: dict, deadline: float) -> dict:
        req["id"] = rid = next(self._ids)
        with self._lock:
            try:
                self.proc.stdin.write(json.dumps(req).encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as e:
                raise SandboxError(f"{self.name}: cannot write to runner: {e}") from None
            while True:
                msg = json.loads(self._read_line(deadline))
                if msg.get("id") == rid:
                    break
        if "error" in msg:
            raise SandboxError(f"{self.name}: runner refused the request: {msg['error']}")
        return msg

    # -- API ------------------------------------------------------------------
    def run(self, jobs: list[Job]) -> list[JobResult]:
        """Run the jobs in order in one round trip. Raises SandboxError if the runner fails."""
        if not jobs:
            return []
        # Each job is bounded by its own deadline plus clean-up; allow generous slack on top.
        budget = sum(j.timeout + 2.0 for j in jobs) + 10.0
        msg = self._call({"jobs": [j.to_wire() for j in jobs]}, time.monotonic() + budget)
        results = msg.get("results")
        if not isinstance(results, list) or len(results) != len(jobs):
            raise SandboxError(f"{self.name}: runner answered {len(results or [])} results for {len(jobs)} jobs")
        broken = [r["runner_error"] for r in results if isinstance(r, dict) and "runner_error" in r]
        if broken:
            raise SandboxError(f"{self.name}: runner could not run a job: {broken[0]}")
        return [JobResult.from_wire(r) for r in results]

    def ping(self, timeout: float = 5.0) -> bool:
        try:
            return bool(self._call({"op": "ping"}, time.monotonic() + timeout).get("pong"))
        except (SandboxError, ValueError):
            return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        self._sel.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._call({"op": "exit"}, time.monotonic() + 5)
            except (SandboxError, ValueError):
                pass
        self.kill()


class RunnerSandbox:
    """A sandbox backed by one RunnerProcess; backends differ only in how they start it."""

    kind = "runner"
    runner: RunnerProcess

    def run(self, jobs: list[Job]) -> list[JobResult]:
        return self.runner.run(jobs)

    def healthy(self) -> bool:
        return self.runner.alive() and self.runner.ping()

    def close(self) -> None:
        self.runner.close()

    def describe(self) -> dict:
        return {"kind": self.kind, **self.runner.hello}
