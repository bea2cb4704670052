"""What each GPU actor of a run holds in memory, from the model's shape and the config alone.

An estimate that errs high, so a run that does not fit is caught before it loads a model: the
learner holds the bf16 weights, the SVD factors (U, Vh in bf16 for every target Linear; the
adapter's layout), δS and δS_hack with their grads and AdamW moments, v_hack, and the activations
autograd keeps for one group's forward (no gradient checkpointing) plus the fp32 logits. A vLLM
rollout actor holds weights and factors inside ``gpu_memory_utilization`` of its GPU share and
needs the KV cache of at least one ``max_model_len`` sequence in what is left; an HF rollout actor
holds weights, factors and the KV cache of one group.

Model shapes come from a local ``config.json`` (a model dir or the file) or, for hub ids that
cannot be read offline, from ``KNOWN_SHAPES``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GiB = 1024 ** 3

# Prompt tokens budgeted per sequence (chat template + problem statement + hint); the longest
# group is this plus max_new for every row. The packaged problems' longest prompt is about 1.6k
# characters, under 512 tokens; raise it (plan --prompt-tokens) for --problems with longer ones.
PROMPT_TOKENS = 512
# Memory a CUDA context, the allocator's slack and NCCL take outside any tensor.
CUDA_OVERHEAD = 2 * GiB


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer config that size its memory."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @property
    def linears(self) -> list[tuple[int, int]]:
        """(out, in) of the adapter's target Linears in one layer (q, k, v, o, gate, up, down)."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return [(q, h), (kv, h), (kv, h), (h, q), (i, h), (i, h), (h, i)]

    @property
    def params(self) -> int:
        per_layer = sum(o * i for o, i in self.linears) + 2 * self.hidden + 2 * self.head_dim
        emb = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + emb + self.hidden

    @property
    def rank_sum(self) -> int:
        """Σ min(out, in) over every target Linear: the number of δS knobs."""
        return self.layers * sum(min(o, i) for o, i in self.linears)

    @property
    def factor_elems(self) -> int:
        """Elements of U (out×r) and Vh (r×in) over every target Linear (thin SVD)."""
        return self.layers * sum(min(o, i) * (o + i) for o, i in self.linears)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


# Shapes of hub models the presets name (from their config.json), for planning without the hub.
KNOWN_SHAPES: dict[str, ModelShape] = {s.name: s for s in (
    ModelShape("Qwen/Qwen3-0.6B", 1024, 28, 3072, 151936, 16, 8, 128, True),
    ModelShape("Qwen/Qwen3-1.7B", 2048, 28, 6144, 151936, 16, 8, 128, True),
    ModelShape("Qwen/Qwen3-4B", 2560, 36, 9728, 151936, 32, 8, 128, True),
    ModelShape("Qwen/Qwen3-8B", 4096, 36, 12288, 151936, 32, 8, 128, False),
    ModelShape("Qwen/Qwen3-14B", 5120, 40, 17408, 151936, 40, 8, 128, False),
)}


class ShapeError(ValueError):
    """The model's shape is unknown; the message says how to supply it."""


def shape_from_config(d: dict, name: str) -> ModelShape:
    """A ModelShape from a HF ``config.json`` dict; a missing key raises naming it."""
    try:
        heads = int(d["num_attention_heads"])
        hidden = int(d["hidden_size"])
        return ModelShape(name, hidden, int(d["num_hidden_layers"]), int(d["intermediate_size"]),
                          int(d["vocab_size"]), heads, int(d.get("num_key_value_heads") or heads),
                          int(d.get("head_dim") or hidden // heads), bool(d.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise ShapeError(f"{name}: config.json has no {e.args[0]!r}") from None


def model_shape(model: str, config_json: str | Path | None = None) -> ModelShape:
    """The shape of ``model``: from ``config_json`` when given, a local dir / config.json, or KNOWN_SHAPES."""
    for cand in ([Path(config_json)] if config_json else []) + [Path(model) / "config.json", Path(model)]:
        if cand.is_file() and cand.suffix == ".json":
            try:
                return shape_from_config(json.loads(cand.read_text()), model)
            except json.JSONDecodeError as e:
                raise ShapeError(f"{cand}: not JSON ({e})") from None
    if model in KNOWN_SHAPES:
        return KNOWN_SHAPES[model]
    raise ShapeError(f"model: the shape of {model!r} is not known offline; pass its config.json "
                     f"(plan --model-config PATH) or a local model dir as --model. Known: {sorted(KNOWN_SHAPES)}")


@dataclass
class ActorMemory:
    """One actor's memory plan: named parts in bytes, what it has, and whether they fit."""

    role: str
    device: str  # "GPU" or "CPU"
    parts: dict[str, float]
    budget: float | None  # bytes it may use (None: unknown)
    note: str = ""
    fix: str = ""  # flags that would make it fit, when it does not

    @property
    def need(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.need <= self.budget

    def line(self) -> str:
        parts = ", ".join(f"{k} {v / GiB:.1f}" for k, v in self.parts.items())
        has = "unknown" if self.budget is None else f"{self.budget / GiB:.1f} GiB"
        verdict = {None: "not checked", True: "fits", False: "DOES NOT FIT"}[self.fits]
        s = f"{self.role} ({self.device}): needs {self.need / GiB:.1f} GiB [{parts}] of {has}: {verdict}"
        if self.note:
            s += f" ({self.note})"
        if self.fits is False and self.fix:
            s += f"\n      would fit: {self.fix}"
        return s


def longest_sequence(cfg) -> int:
    return PROMPT_TOKENS + cfg.max_new


def learner_memory(cfg, shape: ModelShape, gpu_bytes: float | None) -> ActorMemory:
    """The learner on its share of one GPU (``cluster.learner_gpus`` × the GPU's memory)."""
    parts = _learner_parts(cfg, shape, cfg.group, cfg.max_new)
    budget = None if gpu_bytes is None else gpu_bytes * min(1.0, cfg.cluster.learner_gpus)
    mem = ActorMemory("learner", "GPU", parts, budget)
    if mem.fits is False:
        mem.fix = _learner_fix(cfg, shape, budget)
    return mem


def _learner_parts(cfg, shape: ModelShape, group: int, max_new: int) -> dict[str, float]:
    tokens = group * (PROMPT_TOKENS + max_new)
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    # tensors autograd keeps per token and layer in bf16: norms and residuals, q/k/v/o inputs and
    # outputs, the MLP's gate/up/act/down input, and the adapter's Vh·x for every target Linear
    per_tok_layer = 2 * (8 * h + 2 * kv + 4 * i + sum(min(o, n) for o, n in shape.linears))
    knobs = 2 * shape.rank_sum  # δS and δS_hack
    return {
        "weights": 2 * shape.params,
        "svd factors": 2 * shape.factor_elems,
        "δS+optimiser": knobs * 4 * 4 + cfg.v_hack_k * shape.rank_sum * 4,
        "activations": tokens * shape.layers * per_tok_layer,
        "logits": tokens * shape.vocab * 4 * 2,  # fp32 logits and their log-softmax
        "cuda": CUDA_OVERHEAD,
    }


def _learner_fix(cfg, shape: ModelShape, budget: float) -> str:
    fixed = sum(v for k, v in _learner_parts(cfg, shape, 1, 1).items() if k not in ("activations", "logits"))
    if fixed > budget:
        return (f"a GPU with more than {fixed / GiB:.0f} GiB for the learner (--cluster.learner-gpus 1 on a larger "
                f"GPU) or a smaller --model: weights and SVD factors alone need {fixed / GiB:.1f} GiB")
    need = sum(_learner_parts(cfg, shape, cfg.group, cfg.max_new).values())
    bigger = f"a learner GPU with at least {need / GiB:.0f} GiB"
    for n in range(cfg.max_new - 1, 0, -max(1, cfg.max_new // 64)):
        if sum(_learner_parts(cfg, shape, cfg.group, n).values()) <= budget:
            return f"{bigger}, or --max-new {n} (activations of a group of {cfg.group} rows), or a smaller --group"
    for g in range(cfg.group - 1, 0, -1):
        if sum(_learner_parts(cfg, shape, g, cfg.max_new).values()) <= budget:
            return f"{bigger}, or --group {g}"
    return f"{bigger}, or a smaller --model, --group or --max-new"


def rollout_memory(cfg, shape: ModelShape, gpu_bytes: float | None) -> ActorMemory:
    """One rollout actor on its share of a GPU (``rollout.gpus_per_actor``)."""
    r = cfg.rollout
    share = None if gpu_bytes is None else gpu_bytes * min(1.0, r.gpus_per_actor)
    wb = 4 if r.dtype == "fp32" else 2  # engine dtype: bf16 on GPU unless --rollout.dtype fp32
    weights, factors = wb * shape.params, wb * shape.factor_elems
    seq = longest_sequence(cfg)
    if r.backend == "vllm":
        if r.vllm_max_model_len < seq:
            mem = ActorMemory("rollout", "GPU", {}, share)
            mem.parts = {"too short": float("inf")}
            mem.note = (f"vllm_max_model_len {r.vllm_max_model_len} < prompt budget {PROMPT_TOKENS} + max_new "
                        f"{cfg.max_new}")
            mem.fix = f"--rollout.vllm-max-model-len {seq}"
            return mem
        kv = shape.kv_bytes_per_token() * r.vllm_max_model_len
        act = seq * (4 * shape.hidden + 2 * shape.intermediate) * 2 + seq * shape.vocab * 4
        parts = {"weights": weights, "svd factors": factors, "kv (1 seq)": kv, "activations": act}
        budget = None if share is None else share * r.vllm_gpu_memory_utilization
        mem = ActorMemory("rollout", "GPU", parts, budget,
                          note=f"vllm gpu_memory_utilization {r.vllm_gpu_memory_utilization:g}")
        if mem.fits is False:
            want = mem.need / share
            mem.fix = (f"--rollout.vllm-gpu-memory-utilization {min(0.95, want + 0.02):.2f}" if want <= 0.93
                       else "a larger GPU per rollout actor (--rollout.gpus-per-actor 1) or a smaller --model")
        else:
            mem.note += f", {int((budget - mem.need) // shape.kv_bytes_per_token()) + r.vllm_max_model_len} KV tokens"
        return mem
    kv = shape.kv_bytes_per_token() * seq * cfg.group
    parts = {"weights": weights, "svd factors": factors, "kv (group)": kv,
             "logits": cfg.group * shape.vocab * 4, "cuda": CUDA_OVERHEAD}
    mem = ActorMemory("rollout", "GPU", parts, share, note="hf backend")
    if mem.fits is False:
        mem.fix = "--rollout.backend vllm, a larger GPU share (--rollout.gpus-per-actor 1) or a smaller --max-new"
    return mem


def memory_plan(cfg, shape: ModelShape, gpu_bytes: dict[str, float | None]) -> list[ActorMemory]:
    """The plan of every GPU actor; ``gpu_bytes``: role → memory of one GPU where it runs (None: unknown)."""
    out = []
    if cfg.cluster.learner_gpus > 0:
        out.append(learner_memory(cfg, shape, gpu_bytes.get("learner")))
    if cfg.rollout.gpus_per_actor > 0:
        out.append(rollout_memory(cfg, shape, gpu_bytes.get("rollout")))
    return out


# GPU memory by Ray's accelerator_type resource / the nvidia.com/gpu.product node label / instance type.
GPU_GIB = {"H200": 141, "H100": 80, "A100-80G": 80, "A100-40G": 40, "A100": 40, "L40S": 48, "L4": 24,
           "A10G": 24, "T4": 16, "V100": 16, "B200": 180}
INSTANCE_GPU = {"p5": "H100", "p5e": "H200", "p5en": "H200", "p4de": "A100-80G", "p4d": "A100-40G",
                "g6e": "L40S", "g6": "L4", "g5": "A10G", "g4dn": "T4", "p3": "V100"}


def gpu_gib_for(kind: str) -> float | None:
    """GiB of one GPU from a name such as ``H100``, ``NVIDIA-H100-80GB-HBM3`` or ``p5.48xlarge``."""
    k = kind.upper().replace("NVIDIA-", "").replace("NVIDIA ", "")
    family = kind.split(".", 1)[0].lower()
    if "." in kind and family in INSTANCE_GPU:
        return GPU_GIB[INSTANCE_GPU[family]]
    import re

    if k in GPU_GIB:
        return float(GPU_GIB[k])
    m = re.search(r"(\d+)\s*GB", k)
    for name in sorted(GPU_GIB, key=len, reverse=True):
        if name.split("-")[0] in k:
            return float(m.group(1)) if m else float(GPU_GIB[name.split("-")[0]])
    return None
