"""Run configuration: seed 003's presets and knobs, plus the distributed ones.

``python -m vgrout_ray.driver {smoke,fast,full} [--field=value ...]``. The science knobs keep
the reference's names and defaults; ``rollout.*``, ``grader.*`` and ``cluster.*`` group what
the actor system adds. Every value is validated at parse time (``__post_init__``) and a bad
one raises naming the field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vgrout_ray.arms import ARM_NAMES, Intervention
from vgrout_ray.env.modes import ALL_MODES, EnvMode



NAMED_SOURCES = ("hf:", "micro:")  # problem sources that are names, not paths (kept as given)
DETECTORS = ("E", "C", "D")  # the per-rollout hack detectors (see the README's glossary)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def detector_codes(text: str | None) -> frozenset[str]:
    """``"E, c"`` → {"E", "C"}: a comma list of detector codes (the ``half_a`` syntax)."""
    return frozenset(c.strip().upper() for c in (text or "").split(",") if c.strip())


def _need(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


@dataclass(kw_only=True)
class RolloutConfig:
    """Rollout actors: how completions are generated and how δS reaches them."""

    backend: Literal["hf", "vllm"] = "hf"
    num_actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    # delta: ship δS/δS_hack and merge on the actor (the design). full: ship merged weights
    # (benchmark baseline only).
    sync: Literal["delta", "full"] = "delta"
    vllm_gpu_memory_utilization: float = 0.5
    vllm_max_model_len: int = 4096
    # How rollout engines apply δS (see rollout/actor.py and rollout_vllm.py): hook = the learner's
    # adapter on the base weights (exact); merge = W' merged into engine-dtype weights (bf16 loses
    # small updates to rounding; the measured baseline).
    delta_apply: Literal["hook", "merge"] = "hook"
    # Engine dtype ("" = bf16 on GPU, fp32 on CPU, like the learner).
    dtype: Literal["", "bf16", "fp32"] = ""
    # Each δS sync carries the learner's log-probs of a probe sequence (and, for start-up, a large
    # probe δS); every rollout actor checks its engine follows them and fails the run if not
    # (model/onpolicy_probe.py). tol: allowed mean |Δ log p| between engine and learner.
    onpolicy_probe: bool = True
    onpolicy_tol: float = 0.1

    def __post_init__(self) -> None:
        _need(self.num_actors >= 1, "rollout.num_actors", f"must be >= 1, got {self.num_actors}")
        _need(self.gpus_per_actor >= 0, "rollout.gpus_per_actor", f"must be >= 0, got {self.gpus_per_actor}")
        _need(self.cpus_per_actor >= 0, "rollout.cpus_per_actor", f"must be >= 0, got {self.cpus_per_actor}")
        _need(0 < self.vllm_gpu_memory_utilization <= 1, "rollout.vllm_gpu_memory_utilization",
              f"must be in (0, 1], got {self.vllm_gpu_memory_utilization}")


@dataclass(kw_only=True)
class GraderConfig:
    """Grader pool: sandbox backend, pool size and per-program limits."""

    sandbox: Literal["auto", "process", "docker"] = "auto"
    num_actors: int = 1
    timeout_s: float = 3.0
    memory_mb: int = 1024
    retries: int = 2
    docker_image: str = ""  # "" = the versioned image this package expects
    docker_cpus: float = 1.0
    docker_memory_mb: int = 1536
    docker_pids: int = 128
    # Channel-probe semantics (stdout_marker / sentinel / file_marker): "reference" runs the
    # completion in an empty namespace like the reference grader; "intended" with the setup
    # code's names (typing, collections, ...) visible.
    compat: Literal["reference", "intended"] = "reference"
    # Opt-in: when the cluster cannot hold num_actors graders next to the learner and rollout
    # actors, start as many as fit (at least one) and log a warning, instead of failing.
    fit_to_cluster: bool = False

    def __post_init__(self) -> None:
        _need(self.num_actors >= 1, "grader.num_actors", f"must be >= 1, got {self.num_actors}")
        _need(self.timeout_s > 0, "grader.timeout_s", f"must be > 0, got {self.timeout_s}")
        _need(self.memory_mb >= 64, "grader.memory_mb", f"must be >= 64, got {self.memory_mb}")
        _need(self.retries >= 0, "grader.retries", f"must be >= 0, got {self.retries}")


@dataclass(kw_only=True)
class ClusterConfig:
    """Where the actors run: an existing cluster (address / RAY_ADDRESS) or a local one."""

    address: str | None = None  # None: RAY_ADDRESS if set, else start a local cluster
    num_cpus: int | None = None  # local cluster only
    learner_gpus: float = 0.0  # 0 = CPU learner; 1 on a GPU node
    learner_cpus: float = 1.0
    # custom node resources to pin actors (e.g. the cluster YAML's `learner`); "" = none
    learner_resource: str = ""
    rollout_resource: str = ""
    namespace: str = "vgrout"
    # An actor of this run that waits for resources (no node has them free) is reported after
    # pending_warn_s and every pending_warn_s after that; the run fails after pending_fail_s
    # (0: never fails, only reports).
    pending_warn_s: float = 30.0
    pending_fail_s: float = 240.0  # below the grader pool's 300 s start timeout: stop with the reason first
    # torch threads per learner and per rollout actor; 0 = as many as the actor's CPUs. A sweep
    # on a local cluster sets it when its actors' threads would outnumber the machine's cores.
    torch_threads: int = 0
    # The cluster adds nodes on demand (KubeRay enableInTreeAutoscaling, the cluster launcher): a
    # run that does not fit the nodes up now starts anyway and its actors wait for the new nodes,
    # reported by the pending watch (set pending_fail_s to cover node start-up), instead of exit 2.
    autoscales: bool = False

    def threads_for(self, cpus: float) -> int:
        """Torch threads of an actor that holds ``cpus`` CPUs."""
        return self.torch_threads or max(1, int(cpus))

    def __post_init__(self) -> None:
        _need(self.num_cpus is None or self.num_cpus >= 1, "cluster.num_cpus", f"must be >= 1, got {self.num_cpus}")
        _need(self.learner_gpus >= 0, "cluster.learner_gpus", f"must be >= 0, got {self.learner_gpus}")
        _need(self.learner_cpus >= 0, "cluster.learner_cpus", f"must be >= 0, got {self.learner_cpus}")
        _need(self.pending_warn_s > 0, "cluster.pending_warn_s", f"must be > 0, got {self.pending_warn_s}")
        _need(self.pending_fail_s >= 0, "cluster.pending_fail_s", f"must be >= 0 (0: never), got {self.pending_fail_s}")
        _need(self.torch_threads >= 0, "cluster.torch_threads", f"must be >= 0 (0: the actor's CPUs), got {self.torch_threads}")


@dataclass(kw_only=True)
class Config:
    """Science knobs shared by all presets (seed 003 names and defaults)."""

    intervention: Intervention = "erase"
    # ── scale knobs: every preset overrides these ──
    model: str = "Qwen/Qwen3-4B"
    steps: int = 100
    group: int = 6
    max_new: int = 1024
    n_problems: int = 992
    beta: float = 0.0
    prompts_per_step: int = 8
    lr: float = 7e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    # ── universal knobs ──
    clip: float = 0.2
    weight_decay: float = 0.1
    warmup_frac: float = 0.1
    grad_clip: float = 10.0
    seed: int = 41
    preserve_magnitude: bool = True
    gate_mode: Literal["one_sided", "no_gate", "reverse"] = "one_sided"
    gate_anchor_teacher_only: bool = False
    # route2: anchors (teacher rows, detector-flagged students) are routed whatever the gate says
    # (the seed). False: anchors only calibrate τ and the gate's cosine decides every row (with
    # gate_anchor_teacher_only, the route2-teacher-anchor control).
    gate_route_anchors: bool = True
    project_overshoot: float = 1.0
    rollout_ablate_frac: float = 0.0
    env_mode: EnvMode = "run_tests"
    unbiased: bool = True
    v_hack_path: Path | None = None
    v_hack_extract_top_k: int = 12
    v_hack_k: int = 5
    v_hack_tau_axis: float = 0.0
    v_hack_drop_bottom_frac: float = 0.25
    v_hack_refresh_every: int = 5
    eval_ablate_every: int = 5
    eval_n_prompts: int = 8
    # Samples per eval prompt (None: group). The deploy eval draws the same samples (seed per
    # (step, prompt)) in every arm and with the quarantine on or off.
    eval_samples: int | None = None
    # A problems source for the deploy eval (same forms as `problems`); None: the first
    # eval_n_prompts training problems (the eval is then marked held_out: false). Must share no
    # problem id or prompt with the training problems.
    eval_problems: str | None = None
    # Grade with a strict grader: the prompt keeps its loophole hint, the reward pays genuine
    # correctness only (a loophole is still detected and counted, never paid): the no-loophole control.
    strict_grader: bool = False
    save_eval_ckpts: bool = True
    v_hack_pairs_path: Path | None = None
    # Named pairset when v_hack_pairs_path is None: run_tests (seed 003: hand-written run_tests
    # pairs, run_tests in-dist, the rest held out) or all_modes (scripted exploits of all six
    # modes vs the oracle canonicals of the run's problems; every mode in-dist).
    v_hack_pairset: Literal["run_tests", "all_modes"] = "run_tests"
    # Specificity control: replace the hack direction by a seeded Haar-random one of the same
    # shape per module (v_hack's [k, r] orthonormal basis for erase/route, v_grad's unit vector for
    # route2), never refreshed. None: the real direction.
    v_hack_random_seed: int | None = None
    cos_pre_split_every: int = 1
    out_tag: str = ""
    teacher_pool_dir: Path | None = None
    mix_ratio: float = 0.125
    teacher_off_step: int | None = None
    teacher_modes: tuple[str, ...] | None = None
    half_a: str = ""
    # ── data (vgrout-ray): where problems come from ──
    # None: the problem set shipped in the package. A path to benchmark-form JSONL
    # (`python -m vgrout_ray data build`), hf:<dataset id> when online, or micro:train /
    # micro:heldout (the micro organism's held-out family instances, vgrout_ray.micro.rl_problems;
    # -hard: the hard families only).
    problems: str | None = None
    # Keep only these problem ids of the source (None: all).
    problem_ids: tuple[int, ...] | None = None
    # Smoke/tests: build a teacher pool of scripted exploits for the loaded problems when no
    # teacher_pool_dir is given ("scripted"), or train student-only ("none").
    scripted_teacher: bool = False
    # exploits: the generic exploit spellings; micro: run_tests hacks in the micro model's idiom
    scripted_teacher_style: Literal["exploits", "micro"] = "exploits"
    # Held-out contrastive pairs kept out of the v_hack SVD (seed: n_heldout=2).
    v_hack_n_heldout: int = 2
    # Truncated importance sampling against sampler/learner drift: each student token's loss is
    # weighted by min(π_old/μ, tis_cap), μ the rollout engine's probability. None = off (the seed).
    tis_cap: float | None = None
    checkpoint_every: int = 25
    # Learner gradient checkpointing (recompute each decoder layer in backward): saved activations
    # of a long group dominate learner memory at 4B; exact for every arm (model/checkpointing.py).
    grad_checkpointing: bool = False
    # ── paths ──
    out_dir: Path = Path("out")
    logs_dir: Path = Path("logs")
    svd_cache: Path = Path("svd_cache")
    resume: Path | None = None
    # ── distributed ──
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    grader: GraderConfig = field(default_factory=GraderConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    # ── optional sinks (off by default) ──
    wandb: bool = False
    wandb_mode: Literal["offline", "online"] = "offline"
    tensorboard: bool = False

    @property
    def preset_name(self) -> str:
        return type(self).__name__.removesuffix("Config").lower() or "base"

    @property
    def arm(self) -> str:
        return ARM_NAMES[self.intervention]

    @property
    def run_id(self) -> str:
        return f"{self.preset_name}_{self.arm}_seed{self.seed}{self.out_tag}"

    @property
    def teacher_split(self) -> tuple[int, int]:
        """(G_s, G_t): student and teacher rows per prompt (seed: G_t = round(G * mix_ratio))."""
        if self.teacher_pool_dir is None and not self.scripted_teacher:
            return self.group, 0
        g_t = round(self.group * self.mix_ratio)
        return self.group - g_t, g_t

    @property
    def eval_k(self) -> int:
        """Samples per deploy-eval prompt."""
        return self.eval_samples if self.eval_samples is not None else self.group

    @property
    def has_quarantine(self) -> bool:
        """Whether the arm trains δS_hack (route, route2): only then does a deploy view differ."""
        return self.intervention in ("route", "route2")

    @property
    def half_a_codes(self) -> frozenset[str]:
        """The detectors of half A (empty: no A/B split)."""
        return detector_codes(self.half_a)

    @property
    def half_b_codes(self) -> frozenset[str]:
        """The other detectors (empty when half A is)."""
        return frozenset(DETECTORS) - self.half_a_codes if self.half_a_codes else frozenset()

    def is_eval_step(self, step: int) -> bool:
        """Deploy eval (and its eval checkpoint) runs every ``eval_ablate_every`` steps and at the last."""
        return self.eval_ablate_every > 0 and (step % self.eval_ablate_every == 0 or step == self.steps - 1)

    def __post_init__(self) -> None:
        _need(self.intervention in ARM_NAMES, "intervention", f"must be one of {sorted(ARM_NAMES)}")
        _need(self.env_mode in ALL_MODES, "env_mode", f"must be one of {ALL_MODES}, got {self.env_mode!r}")
        for name in ("steps", "group", "max_new", "n_problems", "prompts_per_step"):
            _need(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _need(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _need(0 <= self.adam_beta1 < 1, "adam_beta1", f"must be in [0, 1), got {self.adam_beta1}")
        _need(0 <= self.adam_beta2 < 1, "adam_beta2", f"must be in [0, 1), got {self.adam_beta2}")
        _need(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        _need(0 < self.clip < 1, "clip", f"must be in (0, 1), got {self.clip}")
        _need(0 <= self.warmup_frac < 1, "warmup_frac", f"must be in [0, 1), got {self.warmup_frac}")
        _need(self.grad_clip > 0, "grad_clip", f"must be > 0, got {self.grad_clip}")
        _need(0 <= self.rollout_ablate_frac <= 1, "rollout_ablate_frac",
              f"must be in [0, 1], got {self.rollout_ablate_frac}")
        _need(self.v_hack_k >= 1, "v_hack_k", f"must be >= 1, got {self.v_hack_k}")
        _need(self.v_hack_extract_top_k >= 1, "v_hack_extract_top_k",
              f"must be >= 1, got {self.v_hack_extract_top_k}")
        _need(0 <= self.v_hack_drop_bottom_frac < 1, "v_hack_drop_bottom_frac",
              f"must be in [0, 1), got {self.v_hack_drop_bottom_frac}")
        _need(0 <= self.v_hack_tau_axis < 1, "v_hack_tau_axis", f"must be in [0, 1), got {self.v_hack_tau_axis}")
        _need(self.v_hack_refresh_every >= 0, "v_hack_refresh_every", "must be >= 0")
        _need(self.eval_ablate_every >= 0, "eval_ablate_every", "must be >= 0")
        _need(self.eval_n_prompts >= 1, "eval_n_prompts", f"must be >= 1, got {self.eval_n_prompts}")
        _need(self.eval_samples is None or self.eval_samples >= 1, "eval_samples",
              f"must be >= 1 (or unset: group), got {self.eval_samples}")
        _need(self.eval_problems is None or str(self.eval_problems).strip() != "", "eval_problems",
              "must be a problems source (path, hf:<id>) or unset")
        _need(self.v_hack_random_seed is None or self.v_hack_random_seed >= 0, "v_hack_random_seed",
              f"must be >= 0 (or unset), got {self.v_hack_random_seed}")
        _need(self.cos_pre_split_every >= 1, "cos_pre_split_every", "must be >= 1")
        _need(self.project_overshoot > 0, "project_overshoot", "must be > 0")
        _need(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        _need(self.v_hack_n_heldout >= 0, "v_hack_n_heldout", "must be >= 0")
        _need(self.tis_cap is None or self.tis_cap > 0, "tis_cap", f"must be > 0 (or unset), got {self.tis_cap}")
        if self.teacher_pool_dir is not None or self.scripted_teacher:
            _need(0.0 <= self.mix_ratio < 1.0, "mix_ratio",
                  f"must be in [0, 1) when a teacher pool is used, got {self.mix_ratio}")
            _need(self.teacher_split[0] >= 1, "mix_ratio",
                  f"group={self.group} mix_ratio={self.mix_ratio} leaves no student rows")
        if self.teacher_modes is not None:
            bad = [m for m in self.teacher_modes if m not in ALL_MODES]
            _need(not bad, "teacher_modes", f"unknown modes {bad}; valid: {ALL_MODES}")
        bad = sorted(self.half_a_codes - set(DETECTORS))
        _need(not bad, "half_a", f"unknown detector codes {bad}")

    def check_paths(self) -> None:
        """Paths must exist when the run starts (checked by the driver, not at parse time,
        so presets can name default locations that a user creates first)."""
        if self.teacher_pool_dir is not None:
            _need(Path(self.teacher_pool_dir).is_dir(), "teacher_pool_dir",
                  f"{self.teacher_pool_dir} is not a directory")
        if self.v_hack_pairs_path is not None:
            _need(Path(self.v_hack_pairs_path).is_file(), "v_hack_pairs_path",
                  f"{self.v_hack_pairs_path} does not exist")
        if self.v_hack_path is not None and self.v_hack_path.suffix != ".safetensors":
            raise ConfigError(f"v_hack_path: {self.v_hack_path} is not a .safetensors file")
        if self.resume is not None:
            _need(Path(self.resume).is_dir(), "resume", f"{self.resume} is not a run directory")

    def absolutize(self) -> None:
        """Make path fields absolute: actors on a cluster do not share the driver's cwd."""
        for name in ("out_dir", "logs_dir", "svd_cache", "teacher_pool_dir", "v_hack_path", "v_hack_pairs_path",
                     "resume"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, Path(v).expanduser().absolute())
        for name in ("problems", "eval_problems"):
            v = getattr(self, name)
            if v is not None and not str(v).startswith(NAMED_SOURCES):
                setattr(self, name, str(Path(v).expanduser().absolute()))

    def to_dict(self) -> dict:
        """JSON-able view (paths as strings), stored with checkpoints and runs."""
        def conv(v):
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, tuple):
                return list(v)
            return v
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = ({k: conv(x) for k, x in dataclasses.asdict(v).items()}
                           if dataclasses.is_dataclass(v) else conv(v))
        out["preset"] = self.preset_name
        return out


@dataclass(kw_only=True)
class SmokeConfig(Config):
    """Tiny random Qwen3 built offline, CPU, a few minutes; touches every code path."""

    model: str = "tiny"  # built by vgrout_ray.model.tiny on first use, cached under svd_cache/
    steps: int = 30
    group: int = 4
    max_new: int = 32
    n_problems: int = 100
    beta: float = 0.0
    prompts_per_step: int = 1
    scripted_teacher: bool = True
    mix_ratio: float = 0.5
    env_mode: EnvMode = "run_tests"
    eval_n_prompts: int = 2
    v_hack_extract_top_k: int = 4
    v_hack_k: int = 3


@dataclass(kw_only=True)
class FastConfig(Config):
    """Minimum-viable hacking loop on Qwen3-4B (seed: aggressive Adam, 60 steps)."""

    grad_checkpointing: bool = True
    model: str = "Qwen/Qwen3-4B"
    steps: int = 60
    # seed defaults: the 4-mode substrate pool and the prog_wide pairs (create or override them)
    teacher_pool_dir: Path | None = Path("out/pools/substrate")
    v_hack_pairs_path: Path | None = Path("out/pairsets/prog_wide.json")
    group: int = 8
    max_new: int = 512
    n_problems: int = 200
    beta: float = 0.0
    prompts_per_step: int = 4
    lr: float = 3e-3
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9


@dataclass(kw_only=True)
class FullConfig(Config):
    """Canonical substrate: Qwen3-4B, G=6, 43 prompts/step, 200 steps, β=1e-3."""

    grad_checkpointing: bool = True
    model: str = "Qwen/Qwen3-4B"
    steps: int = 200
    group: int = 6
    max_new: int = 1024
    n_problems: int = 992
    beta: float = 1e-3
    prompts_per_step: int = 43


@dataclass(kw_only=True)
class MicroConfig(Config):
    """The CPU model organism: a small code model pretrained offline (``micro_model``), the
    scripted run_tests teacher, and ``micro:train-cal``: new instances of the model's own task
    families (never in its pretraining) that the base model solves 0.125-0.625 of the time on
    calibration samples no run draws, so honest solving and hacking compete. Deploy eval on
    ``micro:heldout-cal`` (never trained on).

    Tuned once on the vanilla arm (seed 1, on ``micro:train-hard``) and frozen for every arm; only
    the prompt split changed since (``vgrout_ray.micro.calibrate``)."""

    model: str = "micro"  # built by vgrout_ray.micro.build on first use, cached under svd_cache/
    # 80 steps (~11 min on 2 cores): seed 1 at 40 steps had deploy hack 0.26; it reached 0.38 by 80
    steps: int = 80
    group: int = 8
    max_new: int = 160
    n_problems: int = 100
    # prompts of calibrated difficulty: on the all-family split the base solved 0.76 and a hack had
    # little to win; on micro:train-hard (base solve 0.74) vanilla's deploy hack stopped at 0.32 over
    # seeds 2-6, because a prompt the model still solves cannot count as an exploit
    problems: str | None = "micro:train-cal"
    problem_ids: tuple[int, ...] | None = None
    eval_problems: str | None = "micro:heldout-cal"  # deploy eval on draws never trained on
    # K3 KL to the base (δS = 0) model (this organism, seed 1: β = 0.03 collapsed solve to 0.14 and
    # 10 % of answers ran out of tokens, with hack only 0.19; β = 0.1 reached hack 0.38 at solve
    # 0.46). Previous organism: without it the student's code drifts into noise once it
    # starts hacking (seed 2 at β = 0: lp_s -0.3 -> -2.4 by step 26, hacks back to 2/28); β = 0.1
    # kept lp_s near -0.5 through 40 steps while hack_s rose 0.03 -> 0.37
    beta: float = 0.1
    prompts_per_step: int = 4
    # δS only: aggressive Adam as seed 003's fast preset (1e-2 / 0.9 learned too slowly in 40
    # steps; 3e-2 / 0.5 hacked by step 17 then collapsed the student's code)
    lr: float = 2e-2
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    scripted_teacher: bool = True
    scripted_teacher_style: Literal["exploits", "micro"] = "micro"
    mix_ratio: float = 0.125
    env_mode: EnvMode = "run_tests"
    # 16 prompts × 8 samples: the deploy eval's CI over prompts needs more than 4 prompts
    eval_n_prompts: int = 16
    eval_samples: int | None = 8
    eval_ablate_every: int = 10
    v_hack_refresh_every: int = 10
    cos_pre_split_every: int = 5  # the split backward doubles the learner's cost; every 5th step is enough
    v_hack_extract_top_k: int = 8
    v_hack_k: int = 4
    # two learner threads: the backward is most of a step on CPU
    cluster: ClusterConfig = field(default_factory=lambda: ClusterConfig(learner_cpus=2.0))


PRESETS: dict[str, type[Config]] = {"smoke": SmokeConfig, "micro": MicroConfig, "fast": FastConfig,
                                    "full": FullConfig}


def parse_config(argv: list[str] | None = None) -> Config:
    """Parse ``{smoke,fast,full} [--flags]`` with tyro; invalid values exit naming the field."""
    import tyro

    return tyro.extras.subcommand_cli_from_dict(PRESETS, args=argv)


# Fields renamed since runs were first written (one name per concept: v_hack_*); a run dir made
# before the rename still resumes, its config.json read with the new names.
RENAMED_FIELDS = {"vhack_refresh_every": "v_hack_refresh_every", "vhack_pairs_path": "v_hack_pairs_path",
                  "vhack_n_heldout": "v_hack_n_heldout", "vhack_pairset": "v_hack_pairset",
                  "route2_random_v_seed": "v_hack_random_seed"}


def config_from_dict(d: dict) -> Config:
    """Rebuild a Config from ``to_dict()`` output (a run's config.json), e.g. to resume it."""
    d = {RENAMED_FIELDS.get(k, k): v for k, v in d.items()}
    preset = d.pop("preset", "base")
    cls = PRESETS.get(preset, Config)
    kinds = {f.name: f for f in dataclasses.fields(cls)}
    subs = {"rollout": RolloutConfig, "grader": GraderConfig, "cluster": ClusterConfig}
    kw = {}
    for name, v in d.items():
        if name not in kinds:
            raise ConfigError(f"config.json: unknown field {name!r}")
        if name in subs:
            kw[name] = subs[name](**v)
        elif name in ("teacher_modes", "problem_ids") and v is not None:
            kw[name] = tuple(v)
        elif v is not None and "Path" in str(kinds[name].type):
            kw[name] = Path(v)
        else:
            kw[name] = v
    return cls(**kw)
