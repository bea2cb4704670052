#!/usr/bin/env python3
"""Warm sandbox runner: one long-lived process per sandbox, one forked child per program.

Standard library only: the same file is the entrypoint of the Docker sandbox image and
the process the `process` backend starts on the host.

Protocol (JSON lines): the runner first writes ``{"hello": {...}}``; then each request
``{"id": ..., "jobs": [{"program": str, "timeout": s, ...}, ...]}`` gets one response
``{"id": ..., "results": [...]}`` with one result per job, in order. ``{"id":..,"op":"ping"}``
answers ``{"id":..,"pong":...}``; ``{"op":"exit"}`` (or EOF on stdin) ends the runner.

Each program runs like ``python -c PROGRAM`` but in a child forked from this warm
interpreter: fresh empty working directory, own session and process group, rlimits
(CPU seconds, address space, processes, file size, open files), stdin at EOF, stdout
and stderr captured (capped), a report pipe on fd 3 for harness code, and a wall
deadline after which every process the job left behind is killed. Files the program
left in its directory are listed, with the head of each, before the directory goes.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import selectors
import shutil
import signal
import stat
import sys
import tempfile
import time

RUNNER_VERSION = "6"

# Modules the grading programs import through the problems' setup code. Importing them
# once here means forked children find them in sys.modules and start in microseconds.
_WARM_IMPORTS = (
    "typing", "functools", "collections", "string", "math", "datetime", "itertools", "heapq",
    "bisect", "operator", "random", "re", "json", "copy", "decimal", "fractions", "statistics",
    "textwrap", "secrets", "traceback", "threading", "atexit", "io", "array", "dataclasses",
    "enum", "numbers", "cmath", "unicodedata", "queue", "struct", "hashlib", "base64",
)

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount(src: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    _check(_libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def _prctl(option: int, arg: int) -> int:
    return _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0)


class Config:
    """Limits and layout, fixed for the runner's lifetime (from the command line)."""

    def __init__(self, ns: argparse.Namespace):
        self.work_root: str = ns.work_root or tempfile.gettempdir()
        self.scratch: list[str] = list(ns.scratch or [])
        self.uid: int | None = ns.uid
        self.gid: int | None = ns.gid if ns.gid is not None else ns.uid
        self.isolate: bool = ns.isolate
        self.tmpfs_mb: int = ns.tmpfs_mb
        self.keep_stdout: int = ns.keep_output_kb * 1024
        self.kill_output: int = ns.kill_output_mb * 1024 * 1024
        self.nproc: int = ns.nproc
        self.fsize: int = ns.fsize_mb * 1024 * 1024
        self.nofile: int = ns.nofile
        self.memory_mb: int = ns.memory_mb
        self.max_files: int = 64
        self.max_depth: int = 16
        self.max_entries: int = 50_000
        self.file_head: int = 4096


# ── isolation set-up (process backend) ────────────────────────────────────────

def _write_id_maps(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def isolate(cfg: Config) -> dict:
    """Put this runner in fresh mount, PID and network namespaces (user namespace too when not root).

    The runner becomes PID 1 of its namespace, so a job's ``kill(-1, ...)`` or ``kill(ppid)``
    cannot reach it, and one ``kill(-1, SIGKILL)`` from the runner ends everything a job left.
    /tmp, /var/tmp and /dev/shm become private tmpfs mounts and /proc shows only the namespace.
    Returns what was obtained, for the hello message; the caller logs what is missing.
    """
    got: dict = {"pidns": False, "netns": False, "mountns": False, "userns": False}
    uid, gid = os.getuid(), os.getgid()
    base = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET
    attempts = [base] if uid == 0 else [base | CLONE_NEWUSER]
    attempts += [CLONE_NEWNET] if uid == 0 else [CLONE_NEWUSER | CLONE_NEWNET]
    flags = 0
    for f in attempts:
        try:
            _unshare(f)
            flags = f
            break
        except OSError as e:
            got["error"] = str(e)
    if flags & CLONE_NEWUSER:
        _write_id_maps(uid, gid)
        got["userns"] = True
        cfg.uid = cfg.gid = None  # inside a user namespace there is only our own uid to be
    got["netns"] = bool(flags & CLONE_NEWNET)
    if flags & CLONE_NEWPID:
        pid = os.fork()
        if pid > 0:  # the original process only relays the exit status of the namespace's init
            for fd in (0, 1):
                os.close(fd)
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # killing the outer process ends the namespace
        got["pidns"] = os.getpid() == 1
    if flags & CLONE_NEWNS:
        try:
            _mount("none", "/", "", MS_REC | MS_PRIVATE)
            opts = f"size={cfg.tmpfs_mb}m,nr_inodes=8192,mode=1777"
            if os.path.isdir("/dev/shm"):
                _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts)
            got["mountns"] = True
            try:
                _minimal_root(opts, got["pidns"])
                got["minimal_root"] = True
                cfg.scratch = ["/tmp", "/var/tmp", "/dev/shm"]
            except OSError as e:
                # fall back: the host filesystem, with private scratch dirs and /proc
                got["minimal_root"] = False
                got["root_error"] = str(e)
                for d in ("/tmp", "/var/tmp"):
                    if os.path.isdir(d):
                        _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, opts)
                cfg.scratch = [d for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d)]
                if got["pidns"]:
                    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                if cfg.uid is not None:
                    got["exposed"] = _expose_python_to_jobs()
            cfg.work_root = "/tmp"
        except OSError as e:
            got["mount_error"] = str(e)
    return got


# What a job's filesystem view is made of (read-only): the system and the interpreter. The
# project, its data (problem sets with canonical solutions) and home directories stay out.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


def _bind_ro(src: str, root: str) -> None:
    dst = root + src
    if os.path.islink(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.lexists(dst):
            os.symlink(os.readlink(src), dst)
        return
    if not os.path.isdir(src) or os.path.isdir(dst) and os.path.ismount(dst):
        return
    os.makedirs(dst, exist_ok=True)
    _mount(src, dst, "", MS_BIND | MS_REC)
    _mount("none", dst, "", MS_BIND | MS_REMOUNT | MS_RDONLY)


def _minimal_root(tmpfs_opts: str, pidns: bool) -> None:
    """Chroot the runner (so its jobs) into a fresh root: system dirs and the interpreter's install,
    read-only; fresh /tmp and /var/tmp; /dev; a /proc of the namespace. This package's own
    directory is masked even when it is installed inside the interpreter's site-packages."""
    _mount("tmpfs", "/mnt", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    root = "/mnt/root"
    os.mkdir(root)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    for d in _SYSTEM_DIRS:
        _bind_ro(d, root)
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}
    for p in sorted(prefixes):
        if not any(p == d or p.startswith(d + "/") for d in _SYSTEM_DIRS):
            _bind_ro(p, root)
    pkg = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    if os.path.basename(pkg) == "vgrout_ray" and os.path.isdir(root + pkg):
        _mount("tmpfs", root + pkg, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=755")
    os.makedirs(root + "/dev", exist_ok=True)
    _mount("/dev", root + "/dev", "", MS_BIND | MS_REC)
    os.makedirs(root + "/proc", exist_ok=True)
    if pidns:
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:
        _mount("/proc", root + "/proc", "", MS_BIND | MS_REC)
    for d in ("/tmp", "/var/tmp"):
        os.makedirs(root + d, exist_ok=True)
        _mount("tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_opts)
    os.chroot(root)
    os.chdir("/")


def _first_closed_ancestor(path: str) -> tuple[str, str] | None:
    """(A, C) where A is the first ancestor of ``path`` others cannot traverse and C its child on the way."""
    parts = os.path.abspath(path).strip("/").split("/")
    cur = "/"
    for part in parts:
        try:
            if not os.stat(cur).st_mode & stat.S_IXOTH:
                return cur, part
        except OSError:
            return None
        cur = os.path.join(cur, part)
    return None


def _expose_python_to_jobs() -> list[str]:
    """Let the unprivileged job uid import from an interpreter installed under a private dir.

    With Python under /root (mode 700), a job running as an unprivileged uid could import
    only what the runner pre-imported. In our private mount namespace the closed ancestor
    is masked by an empty tmpfs and the interpreter's directory is bound back read-only,
    so paths stay the same and the rest of the private dir stays hidden.
    """
    exposed = []
    for prefix in sorted({sys.base_prefix, sys.prefix, *[p for p in sys.path if p.startswith("/")]}):
        hit = _first_closed_ancestor(prefix)
        if hit is None:
            continue
        closed, child = hit
        real = os.path.join(closed, child)
        if real in exposed:
            continue
        hold = tempfile.mkdtemp(prefix=".hold-", dir="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
        _mount(real, hold, "", MS_BIND | MS_REC)
        _mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        target = os.path.join(closed, child)
        os.makedirs(target, exist_ok=True)
        _mount(hold, target, "", MS_BIND | MS_REC)
        _mount("none", target, "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)
        _check(_libc.umount2(hold.encode(), 2), "umount hold")
        os.rmdir(hold)
        exposed.append(real)
    return exposed


# ── one job ──────────────────────────────────────────────────────────────────

def _set_limits(cfg: Config, timeout: float, memory_mb: int) -> None:
    cpu = int(timeout) + 1
    lim = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, memory_mb * 1024 * 1024, memory_mb * 1024 * 1024),
        (resource.RLIMIT_FSIZE, cfg.fsize, cfg.fsize),
        (resource.RLIMIT_NOFILE, cfg.nofile, cfg.nofile),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NPROC, cfg.nproc, cfg.nproc),
    ]
    for what, soft, hard in lim:
        try:
            resource.setrlimit(what, (soft, hard))
        except (ValueError, OSError):
            pass


def _system_exit_code(exc: SystemExit) -> int:
    """Exit status CPython gives a SystemExit (None → 0, int → itself, else print it and 1)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:
        pass
    return 1


def _child(cfg: Config, job: dict, workdir: str, fds: tuple[int, int, int]) -> None:
    """Runs in the forked child: confine, then run the program as ``__main__``. Never returns."""
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        os.dup2(fds[2], 3)
        os.closerange(4, max(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
        os.chdir(workdir)
        _set_limits(cfg, float(job.get("timeout", 3.0)), int(job.get("memory_mb", cfg.memory_mb)))
        try:
            # The OOM killer must pick the job, never the runner. A process that is not dumpable
            # (inherited from the runner) has its /proc/self files owned by root, so without this
            # an unprivileged job (the docker backend) could not raise its own score.
            _prctl(PR_SET_DUMPABLE, 1)
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        finally:
            _prctl(PR_SET_DUMPABLE, 0)
        if cfg.uid is not None and os.getuid() == 0:
            os.setgroups([])
            os.setgid(cfg.gid)
            os.setuid(cfg.uid)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir,
                           "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"})
        import atexit
        import io
        atexit._clear()
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                                      encoding="utf-8", errors="backslashreplace")
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
                                      encoding="utf-8", errors="backslashreplace", line_buffering=True)
        sys.argv = ["-c"]
        if "random" in sys.modules:
            sys.modules["random"].seed()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        namespace = {"__name__": "__main__", "__builtins__": __builtins__, "__doc__": None}
        try:
            exec(compile(job["program"], "<string>", "exec"), namespace)
            code = 0
        except SystemExit as e:
            code = _system_exit_code(e)
        except BaseException as e:
            import traceback
            tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
            traceback.print_exception(type(e), e, tb)  # as `python -c` shows it: no runner frame
            code = 1
        try:
            import threading
            threading._shutdown()
        except BaseException:
            pass
        try:
            atexit._run_exitfuncs()
        except BaseException:
            pass
    except BaseException:
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def _kill_leftovers(child_pid: int, in_pidns: bool) -> dict[int, int]:
    """Kill every process the job left (daemons included) and reap them: {pid: wait status}."""
    reaped: dict[int, int] = {}
    try:
        os.killpg(child_pid, signal.SIGKILL)
    except OSError:
        pass
    if in_pidns:
        try:
            os.kill(-1, signal.SIGKILL)  # as PID 1 of the namespace: everyone but us
        except OSError:
            pass
    else:
        # Orphans are re-parented to us (child subreaper): kill our remaining children.
        me = os.getpid()
        for _ in range(3):
            kids = _children_of(me)
            if not kids:
                break
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            reaped.update(_reap_all())
    reaped.update(_reap_all())
    return reaped


def _children_of(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == ppid:
                out.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _reap_all(patience: float = 1.0) -> dict[int, int]:
    """Reap every child until none is left; SIGKILLed processes take a moment to die."""
    out: dict[int, int] = {}
    give_up = time.monotonic() + patience
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            if time.monotonic() > give_up:
                return out
            time.sleep(0.001)
            continue
        out[pid] = status


def _list_files(root: str, cfg: Config) -> tuple[list[dict], int]:
    """Files the job left (never following links), with the head of each regular file.

    Bounded (``max_depth`` levels, ``max_entries`` entries) so that a job that leaves a huge
    or absurdly deep tree cannot make the runner spend long listing it.
    """
    found: list[dict] = []
    count = 0
    stack = [(root, 0)]
    while stack and count < cfg.max_entries:
        d, depth = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            count += 1
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            rel = os.path.relpath(e.path, root)
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 < cfg.max_depth:
                    stack.append((e.path, depth + 1))
                continue
            if len(found) >= cfg.max_files:
                continue
            item = {"name": rel, "size": st.st_size, "kind": "file" if stat.S_ISREG(st.st_mode) else "other"}
            if stat.S_ISREG(st.st_mode):
                try:
                    fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    try:
                        item["head"] = os.read(fd, cfg.file_head).decode("utf-8", "replace")
                    finally:
                        os.close(fd)
                except OSError:
                    item["head"] = ""
            found.append(item)
    return found, count


def _force_rmtree(path: str) -> None:
    """Remove ``path`` and everything under it, however deep, whatever its modes; never raises.

    A job can leave a directory chain thousands of levels deep (deeper than the recursion
    limit of ``shutil.rmtree`` and longer than PATH_MAX) or directories it made unreadable.
    Every directory met is moved up next to ``path`` (so no path is ever longer than two
    names and nothing recurses), chmod-ed open and emptied, then removed.
    """
    path = os.path.abspath(path)
    parent, top = os.path.split(path)
    try:
        pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        try:
            st = os.stat(top, dir_fd=pfd, follow_symlinks=False)
        except OSError:
            return
        if not stat.S_ISDIR(st.st_mode):
            try:
                os.unlink(top, dir_fd=pfd)
            except OSError:
                pass
            return
        todo = [top]  # directories (entries of ``parent``) still to empty and remove
        tag, made = f".{top}.rm-{os.urandom(4).hex()}-", 0
        budget = 10_000_000  # bounded even against a tree that keeps changing under us
        while todo and budget > 0:
            name = todo.pop()
            budget -= 1
            try:
                os.chmod(name, 0o700, dir_fd=pfd)
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
            except OSError:
                try:
                    os.unlink(name, dir_fd=pfd)
                except OSError:
                    pass
                continue
            try:
                with os.scandir(fd) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
                for ename, is_dir in entries:
                    budget -= 1
                    if not is_dir:
                        try:
                            os.unlink(ename, dir_fd=fd)
                        except OSError:
                            pass
                        continue
                    made += 1
                    moved = f"{tag}{made}"
                    try:
                        os.chmod(ename, 0o700, dir_fd=fd)  # moving a dir needs write on it ('..')
                        os.rename(ename, moved, src_dir_fd=fd, dst_dir_fd=pfd)
                        todo.append(moved)
                    except OSError:
                        pass
            except OSError:
                pass
            finally:
                os.close(fd)
            try:
                os.rmdir(name, dir_fd=pfd)
            except OSError:
                pass
    finally:
        os.close(pfd)


def _clean_scratch(cfg: Config, keep: set[str]) -> None:
    """Empty the writable scratch roots so nothing written by one job is seen by the next."""
    for root in cfg.scratch:
        try:
            entries = os.listdir(root)
        except OSError:
            continue
        for name in entries:
            p = os.path.join(root, name)
            if p in keep:
                continue
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    _force_rmtree(p)
                else:
                    os.unlink(p)
            except OSError:
                pass


def _keep_chunk(fd: int, chunk: bytes, bufs: dict, totals: dict, keep: dict) -> None:
    """Count a chunk read from ``fd``; keep it up to that stream's cap."""
    totals[fd] += len(chunk)
    room = keep[fd] - len(bufs[fd])
    if room > 0:
        bufs[fd] += chunk[:room]


def _drain(fd: int, bufs: dict, totals: dict, keep: dict) -> None:
    """Read what is left in a non-blocking pipe without waiting."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        _keep_chunk(fd, chunk, bufs, totals, keep)


def _exit_status(status: int | None, killed: bool) -> tuple[int | None, int | None]:
    """(exit code, signal) of a wait status; no exit code for a job the runner killed."""
    if status is None:
        return None, None
    if not killed and os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return None, None


def run_job(cfg: Config, job: dict, in_pidns: bool) -> dict:
    """Run one program to completion or deadline; return its observable outcome."""
    timeout = float(job.get("timeout", 3.0))
    t0 = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="job-", dir=cfg.work_root)
    if cfg.uid is not None and os.getuid() == 0:
        os.chown(workdir, cfg.uid, cfg.gid)
    os.chmod(workdir, 0o700)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (out_r, err_r, rep_r):
            os.close(fd)
        _child(cfg, job, workdir, (out_w, err_w, rep_w))
    for fd in (out_w, err_w, rep_w):
        os.close(fd)
    bufs = {out_r: bytearray(), err_r: bytearray(), rep_r: bytearray()}
    totals = {out_r: 0, err_r: 0, rep_r: 0}
    keep = {out_r: cfg.keep_stdout, err_r: cfg.keep_stdout, rep_r: 1 << 20}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    try:
        pidfd = os.pidfd_open(pid)
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = None
    status = None
    timed_out = output_killed = False
    deadline = t0 + timeout
    drain_until = None
    open_fds = set(bufs)
    while True:
        now = time.monotonic()
        if status is None and now >= deadline:
            timed_out = True
            break
        if drain_until is not None and (now >= drain_until or not open_fds):
            break
        wait = min(deadline, drain_until or deadline) - now
        if pidfd is None:
            wait = min(wait, 0.005)
        for key, _ in sel.select(max(0.0, wait)):
            fd = key.fd
            if fd == pidfd:
                sel.unregister(pidfd)
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(fd)
                open_fds.discard(fd)
                continue
            _keep_chunk(fd, chunk, bufs, totals, keep)
        if totals[out_r] + totals[err_r] > cfg.kill_output and status is None:
            output_killed = True
            break
        if status is None:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                status = st
                drain_until = time.monotonic() + 0.05
    reaped = _kill_leftovers(pid, in_pidns)
    if status is None:
        status = reaped.get(pid)
    if status is None:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = None
    survivors = len([p for p in reaped if p != pid])
    # Whatever is still buffered in the pipes (the group is dead now) is read without waiting.
    for fd in list(open_fds):
        _drain(fd, bufs, totals, keep)
    sel.close()
    for fd in (out_r, err_r, rep_r):
        os.close(fd)
    if pidfd is not None:
        os.close(pidfd)
    files, n_files = _list_files(workdir, cfg)
    _force_rmtree(workdir)
    _clean_scratch(cfg, keep={cfg.work_root} if cfg.work_root in cfg.scratch else set())
    exit_code, sig = _exit_status(status, timed_out or output_killed)
    return {
        "exit_code": exit_code, "signal": sig, "timed_out": timed_out, "output_killed": output_killed,
        "stdout": bufs[out_r].decode("utf-8", "replace"),
        "stderr": bufs[err_r].decode("utf-8", "replace"),
        "report": bufs[rep_r].decode("utf-8", "replace"),
        "stdout_bytes": totals[out_r], "stderr_bytes": totals[err_r],
        "files": files, "n_files": n_files, "survivors_killed": survivors,
        "wall": round(time.monotonic() - t0, 6),
    }


# ── serving loop ─────────────────────────────────────────────────────────────

def _reply(obj: dict) -> None:
    sys.stdout.buffer.write(json.dumps(obj).encode() + b"\n")
    sys.stdout.buffer.flush()


def serve(cfg: Config, isolation: dict) -> int:
    in_pidns = os.getpid() == 1
    if not in_pidns:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_DUMPABLE, 0)  # a same-uid job may not ptrace or read /proc of the runner
    if in_pidns:
        # PID 1 only receives signals it handles: drop Python's SIGINT handler so a job's
        # SIGINT cannot interrupt the runner.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    for mod in _WARM_IMPORTS:
        try:
            __import__(mod)
        except ImportError:
            pass
    _reply({"hello": {"version": RUNNER_VERSION, "pid": os.getpid(), "uid": os.getuid(),
                      "job_uid": cfg.uid if os.getuid() == 0 else os.getuid(),
                      "python": sys.version.split()[0], "isolation": isolation,
                      "pid1": in_pidns}})
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return 0
        try:
            req = json.loads(line)
        except ValueError as e:
            _reply({"id": None, "error": f"bad request line: {e}"})
            continue
        rid = req.get("id")
        op = req.get("op", "run")
        if op == "exit":
            _reply({"id": rid, "bye": True})
            return 0
        if op == "ping":
            _reply({"id": rid, "pong": True, "pid": os.getpid()})
            continue
        jobs = req.get("jobs")
        if not isinstance(jobs, list) or not all(isinstance(j, dict) and isinstance(j.get("program"), str)
                                                 for j in jobs):
            _reply({"id": rid, "error": "request needs 'jobs': a list of {'program': str, ...}"})
            continue
        t0 = time.monotonic()
        results = []
        for job in jobs:
            try:
                results.append(run_job(cfg, job, in_pidns))
            except Exception as e:  # the runner itself failed (no work dir, no fork): say so, keep serving
                results.append({"runner_error": f"{type(e).__name__}: {e}"})
        _reply({"id": rid, "results": results, "elapsed": round(time.monotonic() - t0, 6)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-root", default=None, help="where job directories are made")
    ap.add_argument("--scratch", action="append", help="writable dirs emptied after every job")
    ap.add_argument("--uid", type=int, default=None, help="uid jobs run as (when started as root)")
    ap.add_argument("--gid", type=int, default=None)
    ap.add_argument("--isolate", action="store_true", help="new mount/pid/net namespaces (process backend)")
    ap.add_argument("--tmpfs-mb", type=int, default=256)
    ap.add_argument("--keep-output-kb", type=int, default=64)
    ap.add_argument("--kill-output-mb", type=int, default=16)
    ap.add_argument("--nproc", type=int, default=64)
    ap.add_argument("--fsize-mb", type=int, default=16)
    ap.add_argument("--nofile", type=int, default=64)
    ap.add_argument("--memory-mb", type=int, default=1024)
    cfg = Config(ap.parse_args(argv))
    isolation = isolate(cfg) if cfg.isolate else {}
    return serve(cfg, isolation)


if __name__ == "__main__":
    sys.exit(main())
