"""Sandbox backends: how a runner is started. Both speak the protocol in client.py.

- ``process``: the runner on the host, in new mount/PID/network namespaces when the host
  allows, jobs under an unprivileged uid when started as root. Weaker than Docker; what it
  lacks is logged once, plainly.
- ``docker``: the runner inside a locked-down long-lived container (docker_backend.py).

``make_sandbox("auto")`` picks docker when an engine and the sandbox image are there, and
otherwise says so once and uses the process backend; an explicit ``docker`` never falls back.
"""
from __future__ import annotations

import os
import random
import sys
from typing import Protocol


from vgrout_ray.util import warn_once
from vgrout_ray.sandbox.client import RUNNER_PATH, Job, JobResult, RunnerProcess, RunnerSandbox, SandboxError



class Sandbox(Protocol):
    kind: str

    def run(self, jobs: list[Job]) -> list[JobResult]: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...
    def describe(self) -> dict: ...


class ProcessSandbox(RunnerSandbox):
    """The warm runner as a host process (the laptop / CI-without-engine backend)."""

    kind = "process"

    def __init__(self, *, memory_mb: int = 1024, nproc: int = 64, job_uid: int | None = None,
                 isolate: bool = True, python: str | None = None):
        argv = [python or sys.executable, str(RUNNER_PATH), "--memory-mb", str(memory_mb),
                "--nproc", str(nproc)]
        if isolate:
            argv.append("--isolate")
        if os.geteuid() == 0:
            # A uid of its own per runner: jobs cannot touch root-owned files, and the per-uid
            # process limit counts only this runner's jobs.
            uid = job_uid if job_uid is not None else random.randint(200_000, 299_999)
            argv += ["--uid", str(uid)]
        self.runner = RunnerProcess(argv, name="process-sandbox")
        self._report_weaknesses(self.runner.hello)

    @staticmethod
    def _report_weaknesses(hello: dict) -> None:
        iso = hello.get("isolation", {})
        missing = []
        if not iso.get("netns"):
            missing.append("network namespace (jobs can open connections)")
        if not hello.get("pid1"):
            missing.append("PID namespace (a job's kill(-1) reaches this user's processes)")
        if not iso.get("mountns"):
            missing.append("private /tmp (jobs can write the host's world-writable dirs)")
        if hello.get("job_uid") == os.getuid() and os.getuid() != 0 and not iso.get("userns"):
            missing.append("separate uid (jobs run as you)")
        warn_once("process-sandbox", "grading in the PROCESS sandbox: untrusted code runs on this host "
                  "with rlimits" + (", without " + "; ".join(missing) if missing else
                                     " in its own namespaces under an unprivileged uid")
                  + ". Use --grader.sandbox=docker for real isolation.")



def docker_available() -> tuple[bool, str]:
    """(True, "") when an engine answers and the sandbox image exists, else (False, why)."""
    from vgrout_ray.sandbox.docker_backend import image_ready
    return image_ready()


def make_sandbox(kind: str = "auto", **opts) -> Sandbox:
    """Start a sandbox of ``kind`` (auto | process | docker)."""
    if kind not in ("auto", "process", "docker"):
        raise ValueError(f"grader.sandbox must be auto, process or docker, got {kind!r}")
    docker_opts = {k: v for k, v in opts.items() if k.startswith("docker_") or k == "memory_mb"}
    if kind == "docker":
        ok, why = docker_available()
        if not ok:
            raise SandboxError(f"--grader.sandbox=docker but Docker cannot be used: {why}")
        from vgrout_ray.sandbox.docker_backend import DockerSandbox
        return DockerSandbox(**docker_opts)
    if kind == "auto":
        ok, why = docker_available()
        if ok:
            from vgrout_ray.sandbox.docker_backend import DockerSandbox
            return DockerSandbox(**docker_opts)
        warn_once("auto-process", f"grader.sandbox=auto: Docker not usable ({why}); using the process sandbox")
    return ProcessSandbox(memory_mb=opts.get("memory_mb", 1024))
