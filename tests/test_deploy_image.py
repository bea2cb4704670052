"""deploy/Dockerfile builds: the project image the manifests name, on the locally built sandbox base.

Offline: the build context is this working tree plus dist/ with the project's wheel and pip's
own wheel (the bare Debian base has no pip); the image installs the project with
``--no-index --no-deps`` and imports it. The GPU extra's resolution is checked separately
(scripts/check_gpu_extra.sh), so the only thing skipped here is downloading vllm.
"""
from __future__ import annotations

import glob
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import _unavailable

REPO = Path(__file__).resolve().parents[1]
BASE = "vgrout-sandbox-base:bookworm"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _have(image: str) -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True).returncode == 0


def _context(tmp: Path) -> Path:
    ctx = tmp / "ctx"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (ctx / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / f)
    dist = ctx / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(ctx)], check=True, capture_output=True, timeout=300)
    import ensurepip

    pip_whl = sorted(glob.glob(str(Path(ensurepip.__file__).parent / "_bundled" / "pip-*.whl")))
    assert pip_whl, "no pip wheel bundled with this Python's ensurepip"
    shutil.copy2(pip_whl[-1], dist)
    return ctx


def _build(ctx: Path, tag: str, **args: str) -> subprocess.CompletedProcess:
    cmd = ["docker", "build", "-q", "-f", str(ctx / "deploy" / "Dockerfile"), "-t", tag]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    return subprocess.run(cmd + [str(ctx)], capture_output=True, text=True, timeout=600,
                          env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin"})


OFFLINE = dict(BASE=BASE, SPEC="vgrout-ray", APT_PACKAGES="",
               PIP_ARGS="--no-index --no-deps --find-links /opt/vgrout-ray/dist",
               CHECK="import vgrout_ray.cluster.plan, vgrout_ray.config, vgrout_ray.cluster.memory_plan")


@pytest.fixture
def sandbox_base(docker_ready):
    """The locally built base image (skip, or fail under CI=true, like every Docker test)."""
    if not _have(BASE):
        _unavailable(f"{BASE} is missing (bash sandbox/build_image.sh)")


def test_project_image_builds_on_the_sandbox_base_and_runs_the_plan(sandbox_base, tmp_path):
    t0 = time.monotonic()
    ctx = _context(tmp_path)
    tag = f"vgrout-ray-test:{tmp_path.name.lower()[-20:]}"
    try:
        p = _build(ctx, tag, **OFFLINE)
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
        # the installed package (not the copied tree) answers: run it from another directory
        r = subprocess.run(["docker", "run", "--rm", "--network", "none", "-w", "/", tag, "python3", "-c",
                            "import vgrout_ray, vgrout_ray.cluster.plan as p; print(vgrout_ray.__file__); "
                            "print(p.driver_argv('python -m vgrout_ray.driver fast --steps 2', 'x'))"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "site-packages/vgrout_ray" in r.stdout or "dist-packages/vgrout_ray" in r.stdout, r.stdout
        assert "['fast', '--steps', '2']" in r.stdout
        # a build that cannot install fails (the wheel folder is empty): the check is real
        shutil.rmtree(ctx / "dist")
        (ctx / "dist").mkdir()
        bad = _build(ctx, tag + "bad", **OFFLINE)
        assert bad.returncode != 0
        print(f"image built and checked in {time.monotonic() - t0:.0f} s")
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag, tag + "bad"], capture_output=True)
