"""``vgrout plan MANIFEST`` (``python -m vgrout_ray plan``): check a deploy manifest's run before anything starts.

A manifest in ``deploy/`` (KubeRay RayJob / RayCluster, or a Ray cluster-launcher YAML) names a
driver entrypoint and node shapes. The plan parses the entrypoint with the driver's own config
parser and checks, without starting anything:

- paths: every path the run reads or writes is absolute and on a persistent volume mounted on
  every node group whose actors touch it (the driver on the head writes the run dir and logs and
  reads the teacher pool; the learner writes the SVD and v_hack caches and reads the pairs; the
  rollout actors read the SVD cache). A relative path would land in Ray's per-job copy of the
  working dir, which is deleted with the job and differs per node.
- resources: the actors fit the node groups at the autoscaler's maximum (``cluster.run_demands``
  and ``cluster.check_fit``, the driver's own check);
- memory: every GPU actor's memory plan (``memory_plan``) fits the GPU its group declares.

It prints the plan and exits 1 naming the flag or manifest field that would make it fit.
The entrypoint of a RayJob is ``spec.entrypoint``; a RayCluster or cluster-launcher YAML names it
in a ``# vgrout-entrypoint: python -m vgrout_ray.driver ...`` comment line (or ``--entrypoint``).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vgrout_ray.cluster import memory_plan as mp

ENTRY_RE = re.compile(r"^#\s*vgrout-entrypoint:\s*(.+)$", re.M)


class ManifestError(ValueError):
    """The manifest cannot be read as a run; the message names the file and field."""


@dataclass
class Group:
    """A node group: resources of one node, how many at most, what it mounts and sets."""

    name: str
    max: int
    resources: dict[str, float]
    gpu_gib: float | None = None
    mounts: dict[str, str] = field(default_factory=dict)  # mount path → kind (pvc, nfs, emptyDir, …)
    env: dict[str, str] = field(default_factory=dict)
    head: bool = False
    min: int = -1  # nodes up before the autoscaler adds any (-1: max)
    tcp_docker: list[str] = field(default_factory=list)  # containers whose dockerd listens on TCP without TLS

    def holds(self, bundle: dict[str, float]) -> bool:
        return all(self.resources.get(k, 0.0) + 1e-6 >= v for k, v in bundle.items())


@dataclass
class Manifest:
    path: Path
    kind: str
    entrypoint: str
    groups: list[Group]
    autoscales: bool
    auth_token: bool
    notes: list[str] = field(default_factory=list)


# ── reading manifests ────────────────────────────────────────────────────────


def _quantity(v, where: str) -> float:
    """A Kubernetes quantity as a number (CPUs: ``500m`` → 0.5; memory: ``32Gi`` → bytes)."""
    s = str(v).strip()
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30,
             "Ti": 2 ** 40}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", s)
    if not m or (m.group(2) and m.group(2) not in units):
        raise ManifestError(f"{where}: cannot read the quantity {v!r}")
    return float(m.group(1)) * units.get(m.group(2), 1.0)


def _ray_resources(params: dict, where: str) -> dict[str, float]:
    raw = params.get("resources")
    if not raw:
        return {}
    text = str(raw).strip().strip("'")
    if text.startswith('"') and text.endswith('"'):
        text = json.loads(text)
    try:
        return {k: float(v) for k, v in json.loads(text).items()}
    except (json.JSONDecodeError, AttributeError, ValueError) as e:
        raise ManifestError(f"{where}.rayStartParams.resources: not a JSON object of numbers ({e})") from None


def _pod_group(name: str, spec: dict, max_n: int, head: bool, where: str) -> Group:
    tmpl = ((spec.get("template") or {}).get("spec")) or {}
    containers = tmpl.get("containers") or []
    if not containers:
        raise ManifestError(f"{where}.template.spec.containers: none")
    ray_c = containers[0]
    limits = ((ray_c.get("resources") or {}).get("limits")) or {}
    params = spec.get("rayStartParams") or {}
    res = {"CPU": _quantity(params.get("num-cpus", limits.get("cpu", 0)), f"{where} cpu"),
           "GPU": _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)), f"{where} GPUs")}
    res.update(_ray_resources(params, where))
    res = {k: v for k, v in res.items() if v}
    volumes = {v.get("name"): v for v in tmpl.get("volumes") or []}
    mounts = {}
    for vm in ray_c.get("volumeMounts") or []:
        vol = volumes.get(vm.get("name"))
        if vol is None:
            raise ManifestError(f"{where}: volumeMount {vm.get('name')!r} names no volume of the pod")
        kind = next((k for k in vol if k != "name"), "?")
        mounts[str(vm["mountPath"])] = kind
    env = {e["name"]: str(e.get("value", "")) for e in ray_c.get("env") or [] if "name" in e}
    sel = tmpl.get("nodeSelector") or {}
    gpu_kind = sel.get("nvidia.com/gpu.product") or sel.get("cloud.google.com/gke-accelerator")
    acc = [k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")]
    gib = mp.gpu_gib_for(gpu_kind or (acc[0] if acc else "")) if (gpu_kind or acc) else None
    tcp = []
    for c in containers:
        args = " ".join(str(a) for a in [*(c.get("command") or []), *(c.get("args") or [])])
        if re.search(r"(--host[= ]|-H[= ]?)tcp://", args) and "--tlsverify" not in args:
            tcp.append(str(c.get("name", "?")))
    return Group(name, max_n, res, gib, mounts, env, head, tcp_docker=tcp)


def _kuberay(doc: dict, path: Path) -> Manifest:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    notes = []
    if kind == "RayJob":
        entry = spec.get("entrypoint")
        if not entry:
            raise ManifestError(f"{path}: spec.entrypoint is missing")
        cspec = spec.get("rayClusterSpec") or {}
        where = "spec.rayClusterSpec"
    else:
        entry = None
        cspec, where = spec, "spec"
    auto = bool(cspec.get("enableInTreeAutoscaling"))
    head_spec = cspec.get("headGroupSpec")
    if not head_spec:
        raise ManifestError(f"{path}: {where}.headGroupSpec is missing")
    groups = [_pod_group("head", head_spec, 1, True, f"{where}.headGroupSpec")]
    for i, w in enumerate(cspec.get("workerGroupSpecs") or []):
        gw = f"{where}.workerGroupSpecs[{i}]"
        reps = int(w.get("replicas", 0) or 0)
        n = int(w.get("maxReplicas", reps)) if auto else reps
        grp = _pod_group(w.get("groupName") or f"group{i}", w, n, False, gw)
        grp.min = int(w.get("minReplicas", reps)) if auto else reps
        groups.append(grp)
    auth = ((cspec.get("authOptions") or {}).get("mode") == "token")
    import yaml

    try:
        job_env = (yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}).get("env_vars") or {}
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: spec.runtimeEnvYAML is not YAML ({e})") from None
    for g in groups:  # the job's env_vars reach every process of the job
        g.env = {**{k: str(v) for k, v in job_env.items()}, **g.env}
    return Manifest(path, str(kind), str(entry or ""), groups, auto, auth, notes)


def _launcher(doc: dict, path: Path) -> Manifest:
    types = doc.get("available_node_types") or {}
    head = doc.get("head_node_type")
    if head not in types:
        raise ManifestError(f"{path}: head_node_type {head!r} is not in available_node_types")
    # setup_commands run on every node, then head_setup_commands / worker_setup_commands on their kind
    common = list(doc.get("setup_commands") or [])
    head_mounts = _launcher_mounts(common + list(doc.get("head_setup_commands") or []))
    worker_mounts = _launcher_mounts(common + list(doc.get("worker_setup_commands") or []))
    groups = []
    for name, t in types.items():
        res = {k: float(v) for k, v in (t.get("resources") or {}).items() if v}
        itype = (t.get("node_config") or {}).get("InstanceType", "")
        gib = mp.gpu_gib_for(itype) if res.get("GPU") and itype else None
        n = 1 if name == head else int(t.get("max_workers", 0))
        groups.append(Group(name, n, res, gib, dict(head_mounts if name == head else worker_mounts), {}, name == head,
                            1 if name == head else int(t.get("min_workers", 0))))
    start = " ".join(str(c) for c in (doc.get("head_start_ray_commands") or []))
    auth = "RAY_AUTH_MODE=token" in start
    for g in groups:  # variables exported where `ray start` runs reach every worker process of the node
        cmds = doc.get("head_start_ray_commands" if g.head else "worker_start_ray_commands") or []
        for m in re.finditer(r"\bexport\s+([^;&|]+)", " ; ".join(map(str, cmds))):
            g.env.update(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
    cap = int(doc.get("max_workers", 10 ** 6))
    notes = []
    if sum(g.max for g in groups if not g.head) > cap:
        notes.append(f"max_workers {cap} caps the sum of the node types' max_workers; placement below uses "
                     "each type's max")
    return Manifest(path, "cluster-launcher", "", groups, True, auth, notes)


def _launcher_mounts(commands: list) -> dict[str, str]:
    """Filesystems a node's setup commands mount: ``mount -t TYPE [-o OPTS] SRC DIR``."""
    out = {}
    for cmd in commands:
        for m in re.finditer(r"\bmount\s+-t\s+(\S+)\s+(?:-o\s+\S+\s+)?\S+\s+(/\S+)", str(cmd)):
            out[m.group(2).rstrip(";)")] = m.group(1)
    return out


def read_manifest(path: str | Path, entrypoint: str | None = None) -> Manifest:
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ManifestError(f"{path}: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not YAML ({e})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{path}: not a manifest (a YAML mapping)")
    if doc.get("kind") in ("RayJob", "RayCluster"):
        man = _kuberay(doc, path)
    elif "available_node_types" in doc:
        man = _launcher(doc, path)
    else:
        raise ManifestError(f"{path}: neither a KubeRay RayJob/RayCluster nor a cluster-launcher YAML")
    if entrypoint:
        man.entrypoint = entrypoint
    elif not man.entrypoint:
        m = ENTRY_RE.search(text)
        if not m:
            raise ManifestError(f"{path}: no entrypoint (a RayJob's spec.entrypoint, a '# vgrout-entrypoint: "
                                "python -m vgrout_ray.driver ...' line, or --entrypoint)")
        man.entrypoint = m.group(1).strip()
    return man


def driver_argv(entrypoint: str, where: str) -> list[str]:
    """The driver's arguments (preset and flags) from an entrypoint command line."""
    words = shlex.split(entrypoint)
    for i in range(len(words) - 2):
        if words[i] == "-m" and words[i + 1] == "vgrout_ray.driver":
            return words[i + 2:]
    if words and words[0] == "vgrout-driver":
        return words[1:]
    raise ManifestError(f"{where}: entrypoint {entrypoint!r} does not run `python -m vgrout_ray.driver`")


# ── checks ───────────────────────────────────────────────────────────────────

# config path field → (flag, which role reads or writes it, persistent: must outlive the job)
PATH_FIELDS = {
    "out_dir": ("--out-dir", "driver+learner", True),  # the learner writes the v_hack cache under it
    "logs_dir": ("--logs-dir", "driver", True),
    "svd_cache": ("--svd-cache", "learner+rollout", True),
    "teacher_pool_dir": ("--teacher-pool-dir", "driver", False),
    "v_hack_pairs_path": ("--v-hack-pairs-path", "learner", False),
    "v_hack_path": ("--v-hack-path", "learner", False),
    "resume": ("--resume", "driver", False),
    "problems": ("--problems", "driver+learner", False),
}
PERSISTENT = {"persistentVolumeClaim", "nfs", "csi", "cephfs", "glusterfs", "efs", "nfs4", "lustre", "hostPath"}


def _mount_of(path: PurePosixPath, g: Group) -> tuple[str, str] | None:
    best = None
    for mnt, kind in g.mounts.items():
        if path == PurePosixPath(mnt) or PurePosixPath(mnt) in path.parents:
            if best is None or len(mnt) > len(best[0]):
                best = (mnt, kind)
    return best


def role_groups(cfg, man: Manifest) -> dict[str, list[Group]]:
    """Which node groups may host each role: the head hosts the driver; an actor role any group
    whose node holds its bundle (the demands the driver's fit check uses)."""
    from vgrout_ray.cluster.ray_cluster import run_demands

    g_res = any(g.resources.get("grader", 0) > 0 for g in man.groups)
    demands = run_demands(cfg, g_res)
    # a custom resource one role asks for (learner, grader, ...) reserves its group for that role
    pinned = {d.role: {k for k, _ in d.bundle if k not in ("CPU", "GPU")} for d in demands}
    out = {"driver": [g for g in man.groups if g.head]}
    for d in demands:
        others = set().union(*(v for r, v in pinned.items() if r != d.role)) - pinned[d.role]
        out[d.role] = [g for g in man.groups if g.max > 0 and g.holds(d.resources)
                       and not any(g.resources.get(k) for k in others)]
    return out


def check_paths(cfg, man: Manifest) -> list[str]:
    """Problems with the run's paths: relative, not on a persistent volume, or not on every node that uses it."""
    hosts = role_groups(cfg, man)
    problems = []
    for name, (flag, roles, persistent) in PATH_FIELDS.items():
        v = getattr(cfg, name)
        if v is None or (name == "problems" and str(v).startswith("hf:")):
            continue
        p = PurePosixPath(str(v))
        if not p.is_absolute():
            problems.append(f"{flag} {v}: relative, so it would resolve inside Ray's per-job copy of the working "
                            "dir (deleted with the job, different on every node); give an absolute path on the "
                            "shared volume")
            continue
        for role in roles.split("+"):
            for g in hosts.get(role, []):
                m = _mount_of(p, g)
                if m is None:
                    problems.append(f"{flag} {v}: group {g.name} ({role}) mounts no volume there; mount the shared "
                                    f"volume on it (mounts: {sorted(g.mounts) or 'none'})")
                elif persistent and m[1] not in PERSISTENT:
                    problems.append(f"{flag} {v}: on group {g.name} it is on a {m[1]} volume at {m[0]}, which dies "
                                    "with the pod; use a persistentVolumeClaim (ReadWriteMany) or NFS")
    return problems


def check_resources(cfg, man: Manifest, at_min: bool = False):
    """The driver's fit check on the groups at their maximum (or minimum) size (one node dict per node)."""
    from vgrout_ray.cluster.ray_cluster import check_fit

    n_of = (lambda g: g.max if g.min < 0 else g.min) if at_min else (lambda g: g.max)
    nodes = [dict(g.resources) for g in man.groups for _ in range(n_of(g))]
    size = "minimum" if at_min else ("autoscaling maximum" if man.autoscales else "fixed size")
    return check_fit(cfg, nodes, f"{man.path.name} at its {size}", local=False)


def gpu_memory_by_role(cfg, man: Manifest, override_gib: float | None) -> dict[str, float | None]:
    """GPU memory (bytes) for each GPU role: the smallest GPU among the groups that can host it."""
    hosts = role_groups(cfg, man)
    out: dict[str, float | None] = {}
    for role in ("learner", "rollout"):
        gib = [override_gib if override_gib else g.gpu_gib for g in hosts.get(role, []) if g.resources.get("GPU")]
        out[role] = None if not gib or None in gib else min(gib) * mp.GiB
    return out


@dataclass
class PlanResult:
    ok: bool
    lines: list[str]


def plan(man: Manifest, model_config: str | None = None, gpu_gib: float | None = None) -> PlanResult:
    from vgrout_ray.config import ConfigError, parse_config

    lines = [f"manifest: {man.path} ({man.kind}; {'autoscales to the max below' if man.autoscales else 'fixed size'})",
             f"entrypoint: {man.entrypoint}"]
    bad: list[str] = []
    argv = driver_argv(man.entrypoint, str(man.path))
    try:
        cfg = parse_config(argv)
    except SystemExit as e:
        return PlanResult(False, lines + [f"FAIL config: the entrypoint's flags do not parse (exit {e.code}); "
                                          "see the message above"])
    except ConfigError as e:
        return PlanResult(False, lines + [f"FAIL config: {e}"])
    lines.append(f"config: preset {cfg.preset_name}, model {cfg.model}, group {cfg.group}, max_new {cfg.max_new}, "
                 f"rollout {cfg.rollout.backend}×{cfg.rollout.num_actors}, graders {cfg.grader.num_actors}")
    lines.append("nodes:")
    for g in man.groups:
        res = ", ".join(f"{k}: {v:g}" for k, v in sorted(g.resources.items()))
        gpu = f", GPU {g.gpu_gib:g} GiB" if g.gpu_gib else ""
        lines.append(f"  {g.name}: ≤{g.max} × {{{res}}}{gpu}; mounts {g.mounts or 'none'}")
    lines.extend(f"  note: {n}" for n in man.notes)
    if not man.auth_token:
        bad.append("auth: the cluster does not use token auth (KubeRay: rayClusterSpec.authOptions.mode: token; "
                   "launcher: RAY_AUTH_MODE=token on every `ray start`)")
    for env_g in man.groups:
        for cname in env_g.tcp_docker:
            bad.append(f"security: group {env_g.name}, container {cname}: dockerd listens on TCP without TLS; "
                       "use --host=unix:///var/run/dind/docker.sock on a pod-local emptyDir")
        dh = env_g.env.get("DOCKER_HOST", "")
        if dh.startswith("tcp://"):
            bad.append(f"security: group {env_g.name} reaches Docker at {dh} (a daemon on TCP without TLS); use "
                       "unix:///var/run/dind/docker.sock on a pod-local emptyDir")
    hf = {g.env.get("HF_HOME") for g in role_groups(cfg, man).get("learner", []) + role_groups(cfg, man).get("rollout", [])}
    if "/" in cfg.model and not Path(cfg.model).is_absolute() and None in hf:
        lines.append(f"  note: HF_HOME is not set where the model loads: every node downloads {cfg.model} into its own "
                     "~/.cache (set HF_HOME on the shared volume to keep one copy)")
    path_problems = check_paths(cfg, man)
    lines.append("paths: " + ("every path absolute and on a persistent volume where it is used" if not path_problems
                              else f"{len(path_problems)} problem(s)"))
    bad.extend(f"paths: {p}" for p in path_problems)
    fc = check_resources(cfg, man)
    lines.append(fc.message if fc.ok else "resources: DO NOT FIT")
    if not fc.ok:
        bad.append("resources: " + fc.message)
    elif man.autoscales and not cfg.cluster.autoscales and not check_resources(cfg, man, at_min=True).ok:
        bad.append("resources: the run fits only once the autoscaler adds nodes, but the driver would exit 2 on "
                   "the nodes up at start; add --cluster.autoscales to the entrypoint (and a --cluster.pending-fail-s "
                   "that covers node start-up)")
    lines.append("memory:")
    try:
        shape = mp.model_shape(cfg.model, model_config)
    except mp.ShapeError as e:
        shape = None
        if cfg.cluster.learner_gpus or cfg.rollout.gpus_per_actor:
            bad.append(f"memory: {e}")
        lines.append(f"  not planned: {e}")
    if shape is not None:
        lines.append(f"  model {shape.name}: {shape.params / 1e9:.2f} B params, {shape.layers} layers, hidden "
                     f"{shape.hidden}, {shape.rank_sum} δS knobs; longest group {cfg.group} × "
                     f"({mp.PROMPT_TOKENS} prompt + {cfg.max_new}) tokens")
        for m in mp.memory_plan(cfg, shape, gpu_memory_by_role(cfg, man, gpu_gib)):
            lines.append("  " + m.line())
            if m.fits is False:
                bad.append(f"memory: {m.role} does not fit; would fit: {m.fix}")
            elif m.fits is None:
                bad.append(f"memory: {m.role}: the GPU's memory is unknown; name it (KubeRay: nodeSelector "
                           "nvidia.com/gpu.product; launcher: a known InstanceType) or pass --gpu-gib")
    lines.append("PLAN OK" if not bad else f"PLAN FAILS ({len(bad)}):")
    lines.extend(f"  - {b}" for b in bad)
    return PlanResult(not bad, lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vgrout plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", nargs="+", help="deploy manifest(s): KubeRay RayJob/RayCluster or cluster-launcher YAML")
    ap.add_argument("--entrypoint", help="the driver command line, for a manifest that does not name one")
    ap.add_argument("--model-config", help="the model's config.json, for a model whose shape is not known offline")
    ap.add_argument("--gpu-gib", type=float, help="GiB of each GPU, when the manifest does not say which GPU")
    ap.add_argument("--prompt-tokens", type=int, default=mp.PROMPT_TOKENS,
                    help=f"prompt tokens budgeted per sequence (default {mp.PROMPT_TOKENS})")
    args = ap.parse_args(argv)
    mp.PROMPT_TOKENS = args.prompt_tokens
    rc = 0
    for path in args.manifest:
        try:
            res = plan(read_manifest(path, args.entrypoint), args.model_config, args.gpu_gib)
        except ManifestError as e:
            print(f"plan: {e}", file=sys.stderr)
            rc = max(rc, 2)
            continue
        print("\n".join(res.lines) + "\n", flush=True)
        rc = max(rc, 0 if res.ok else 1)
    return rc


def driver_memory_check(cfg, nodes_info: list[dict]) -> list[str]:
    """The memory plan on a live cluster: GPU memory from the nodes' ``accelerator_type:*``
    resources (the smallest GPU type present). Returns lines to log; raises ConfigError when an
    actor does not fit, naming what would."""
    from vgrout_ray.config import ConfigError

    if not (cfg.cluster.learner_gpus > 0 or cfg.rollout.gpus_per_actor > 0):
        return []
    kinds = {k.split(":", 1)[1] for n in nodes_info if n.get("Alive", True)
             for k in (n.get("Resources") or {}) if k.startswith("accelerator_type:")}
    gib = [g for g in (mp.gpu_gib_for(k) for k in kinds) if g]
    try:
        shape = mp.model_shape(cfg.model)
    except mp.ShapeError as e:
        return [f"memory plan: skipped ({e})"]
    if not gib:
        return [f"memory plan: skipped (the cluster reports no known GPU type: {sorted(kinds) or 'none'})"]
    per = min(gib) * mp.GiB
    plan_ = mp.memory_plan(cfg, shape, {"learner": per, "rollout": per})
    lines = [f"memory plan ({shape.name} on {min(gib):g} GiB GPUs): " + m.line() for m in plan_]
    bad = [m for m in plan_ if m.fits is False]
    if bad:
        raise ConfigError("memory: " + "; ".join(f"{m.line()}" for m in bad))
    return lines
