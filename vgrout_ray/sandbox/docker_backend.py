"""Docker backend: the warm runner as PID 1 of a long-lived, locked-down container.

Container: ``--network none``, read-only root, tmpfs work dirs, memory / pids / cpu limits,
all capabilities dropped, no-new-privileges, non-root user. The image is built from
``sandbox/Dockerfile`` (or offline by ``sandbox/build_image.sh``) and tagged with the runner
protocol version; a sandbox refuses to start on an image whose runner speaks another version.
"""
from __future__ import annotations

import random
import shutil
import uuid

from loguru import logger

from vgrout_ray.sandbox.client import RunnerProcess, RunnerSandbox, SandboxError
from vgrout_ray.sandbox.runner import RUNNER_VERSION

IMAGE_REPO = "vgrout-sandbox"
IMAGE = f"{IMAGE_REPO}:runner-v{RUNNER_VERSION}"
CONTAINER_PREFIX = "vgrout-sbx-"
SANDBOX_UID = 10001  # the image's user; each container runs as a uid of its own (below)
# RLIMIT_NPROC counts processes per uid across the whole host: with one shared uid, a fork bomb
# in one container would keep every other sandbox's jobs from forking until its deadline.
SANDBOX_UID_RANGE = (100_000, 199_999)  # disjoint from the process backend's job uids


def _client():
    import docker

    return docker.from_env(timeout=30)


def image_ready(image: str = IMAGE) -> tuple[bool, str]:
    """Whether Docker can run sandboxes now: engine reachable, CLI present, image built."""
    if shutil.which("docker") is None:
        return False, "the docker CLI is not installed"
    try:
        client = _client()
        client.ping()
    except Exception as e:  # the SDK raises several types for "no engine"
        return False, f"no Docker engine reachable ({type(e).__name__}: {str(e)[:120]})"
    try:
        img = client.images.get(image)
    except Exception:
        return False, (f"image {image} not found; build it with `bash sandbox/build_image.sh` "
                       "(offline) or `docker build -f sandbox/Dockerfile -t "
                       f"{image} .`")
    label = (img.labels or {}).get("vgrout.runner_version")
    if label != RUNNER_VERSION:
        return False, f"image {image} carries runner version {label!r}, this code needs {RUNNER_VERSION!r}"
    return True, ""


def docker_run_argv(name: str, image: str, *, cpus: float, memory_mb: int, pids: int,
                    job_memory_mb: int, work_mb: int = 256, inodes: int = 8192,
                    uid: int = SANDBOX_UID) -> list[str]:
    """The ``docker run`` command line of one sandbox container (its stdio is the protocol)."""
    return [
        "docker", "run", "-i", "--rm", "--name", name,
        "--network", "none",
        "--read-only",
        # (the engine copies the image dir's mode onto a tmpfs, so ownership is set by uid/gid)
        # (inode caps as in the process backend: a job leaving 100k files or a 100k-deep chain
        # would otherwise cost the runner seconds of clean-up after every job)
        "--tmpfs", f"/work:rw,nosuid,nodev,size={work_mb}m,nr_inodes={inodes},uid={uid},gid={uid}",
        "--tmpfs", f"/tmp:rw,nosuid,nodev,size=64m,nr_inodes={inodes},uid={uid},gid={uid}",
        "--ipc", "none",  # own IPC namespace, and /dev/shm only as the capped tmpfs below
        "--tmpfs", f"/dev/shm:rw,nosuid,nodev,noexec,size=64m,nr_inodes={inodes},mode=1777",
        "--memory", f"{memory_mb}m", "--memory-swap", f"{memory_mb}m",
        "--pids-limit", str(pids),
        "--cpus", str(cpus),
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--user", f"{uid}:{uid}",
        "--ulimit", "core=0",
        "--label", "vgrout.sandbox=1",
        image,
        "--work-root", "/work", "--scratch", "/work", "--scratch", "/tmp", "--scratch", "/dev/shm",
        "--memory-mb", str(job_memory_mb), "--nproc", str(max(16, pids // 2)),
    ]


class DockerSandbox(RunnerSandbox):
    """One container running the warm runner; replaced by the caller when it dies."""

    kind = "docker"

    def __init__(self, *, docker_image: str = "", docker_cpus: float = 1.0, docker_memory_mb: int = 1536,
                 docker_pids: int = 128, memory_mb: int = 1024, start_timeout: float = 60.0):
        self.image = docker_image or IMAGE
        self.name = CONTAINER_PREFIX + uuid.uuid4().hex[:12]
        self.uid = random.randint(*SANDBOX_UID_RANGE)
        argv = docker_run_argv(self.name, self.image, cpus=docker_cpus, memory_mb=docker_memory_mb,
                               pids=docker_pids, job_memory_mb=min(memory_mb, docker_memory_mb), uid=self.uid)
        self.runner = RunnerProcess(argv, name=self.name, start_timeout=start_timeout)
        hello = self.runner.hello
        if hello.get("version") != RUNNER_VERSION:
            self.close()
            raise SandboxError(f"{self.name}: image runner version {hello.get('version')!r} "
                               f"!= expected {RUNNER_VERSION!r}; rebuild the sandbox image")
        if hello.get("uid") == 0:
            self.close()
            raise SandboxError(f"{self.name}: runner runs as root inside the container; refusing")
        logger.debug(f"docker sandbox {self.name} up (pid1={hello.get('pid1')}, uid={hello.get('uid')})")

    def close(self) -> None:
        self.runner.close()
        force_remove(self.name)

    def describe(self) -> dict:
        return {**super().describe(), "container": self.name, "image": self.image}


def force_remove(name: str) -> None:
    """Remove a sandbox container if it still exists (the CLI session may be gone already)."""
    try:
        _client().containers.get(name).remove(force=True)
    except Exception:
        pass


def running_sandboxes() -> list[str]:
    """Names of live sandbox containers on this engine (for tests and clean-up)."""
    try:
        return [c.name for c in _client().containers.list(filters={"label": "vgrout.sandbox=1"})]
    except Exception:
        return []
