"""Base weights and SVD factors in Ray's object store: read once, mapped by every process on a node.

Why: the runs of a sweep differ only in δS, yet each learner and each rollout engine used to read
the checkpoint and the SVD cache into its own private memory, so K runs on a node held K copies
of the same frozen tensors. ``publish_base`` reads them once and ``ray.put``s them as numpy arrays;
Ray keeps one copy per node (a node that needs it pulls it once), and ``ray.get`` on that node
returns read-only arrays that point into the shared-memory store. ``build_model`` turns such a
bundle into a transformers model whose parameters *are* those arrays when the device and dtype
match (CPU, float32), so an extra run on the node costs its δS and activations, not the base.

The bundle also carries the checkpoint's small files (config, generation config, tokenizer), so
a node that lacks the checkpoint and the SVD cache builds the same model from the store alone
(``local_model_dir`` writes those files once per node).

The shared tensors are read-only: a consumer that writes into its weights (merged-weight sync)
must ask for ``writable=True`` and gets a private copy. A write into a shared tensor is a bug, and
the page protection turns it into a crash rather than a silent change to every run's base.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from loguru import logger
from torch import nn

from vgrout_ray.model.svd_cache import Factors, load_or_compute_factors


@dataclass(frozen=True)
class BaseBundle:
    """Everything frozen about the base model, as plain numpy arrays (what the object store shares).

    ``tensors``: every parameter and buffer (non-persistent ones too, e.g. rotary ``inv_freq``),
    each storage once; ``bf16``: the names stored as raw bf16 bits (numpy has no bf16);
    ``aliases``: further names of a stored tensor (tied embeddings);
    ``factors``: module name -> (U, S, Vh); ``model_path``: the checkpoint it was read from;
    ``files``: that folder's small files (everything but weights) by name; ``digest``: a hash of
    names, shapes, dtypes and files, logged so runs can be matched."""

    model_path: str
    tensors: dict[str, np.ndarray]
    bf16: frozenset[str]
    aliases: dict[str, str]
    factors: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    dtype: str
    files: dict[str, bytes] = field(default_factory=dict)
    digest: str = field(default="")

    @property
    def nbytes(self) -> int:
        return (sum(a.nbytes for a in self.tensors.values())
                + sum(a.nbytes for f in self.factors.values() for a in f))


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


def _torch(a: np.ndarray, bf16: bool = False) -> torch.Tensor:
    """A tensor on ``a``'s memory (no copy). Arrays from the object store are read-only; torch
    warns about that on every call, and the read-only contract is this module's to keep."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(a)
    return t.view(torch.bfloat16) if bf16 else t


def bundle_base(model_path: str | Path, svd_cache: str | Path, dtype: torch.dtype = torch.float32) -> BaseBundle:
    """Read the checkpoint (``dtype``) and its SVD factors (from the cache, or computed into it)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype, attn_implementation="sdpa")
    factors = load_or_compute_factors(model, str(model_path), svd_cache)
    tensors: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    first_of: dict[int, str] = {}
    bf16: set[str] = set()
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    h = hashlib.blake2b(digest_size=8)
    for name, t in named:
        key = t.data_ptr()
        if key in first_of:
            aliases[name] = first_of[key]
            continue
        first_of[key] = name
        tensors[name] = _np(t)
        if t.dtype == torch.bfloat16:
            bf16.add(name)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype};".encode())
    fac = {n: (_np(f.U), _np(f.S), _np(f.Vh)) for n, f in factors.items()}
    files = small_files(Path(model_path))
    for name, data in sorted(files.items()):
        h.update(name.encode() + hashlib.blake2b(data, digest_size=8).digest())
    b = BaseBundle(str(model_path), tensors, frozenset(bf16), aliases, fac, str(dtype), files, h.hexdigest())
    logger.info(f"base bundle {b.digest}: {len(tensors)} tensors (+{len(aliases)} tied), {len(fac)} SVD factor "
                f"sets, {b.nbytes / 2**20:.1f} MiB ({dtype})")
    return b


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
MAX_SMALL_FILES = 64 * 2 ** 20


def small_files(model_dir: Path) -> dict[str, bytes]:
    """Every file of the checkpoint folder except weights (config, tokenizer, templates), by
    relative name; fails loud when they are not small (a checkpoint laid out in an unknown way)."""
    out, total = {}, 0
    for f in sorted(model_dir.rglob("*")):
        if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES) and not f.name.endswith(".index.json"):
            out[str(f.relative_to(model_dir))] = data = f.read_bytes()
            total += len(data)
    if total > MAX_SMALL_FILES:
        raise ValueError(f"{model_dir}: {total / 2**20:.0f} MiB of non-weight files; expected config and tokenizer "
                         f"files only (at most {MAX_SMALL_FILES // 2**20} MiB)")
    if "config.json" not in out:
        raise ValueError(f"{model_dir}: no config.json (not a transformers checkpoint folder)")
    return out


def local_model_dir(bundle: BaseBundle) -> str:
    """A folder with the bundle's config and tokenizer on this node: the checkpoint itself when its
    files are here unchanged, else the bundle's files written once under the temp dir (a node
    without the checkpoint; the bundle, not a changed folder, is what the run trains on)."""
    import os
    import tempfile

    src = Path(bundle.model_path)
    if all((src / n).is_file() and (src / n).read_bytes() == data for n, data in bundle.files.items()):
        return str(src)  # the same files: the checkpoint folder itself
    dst = Path(tempfile.gettempdir()) / "vgrout_base" / f"{src.name}-{bundle.digest}"
    if not (dst / ".complete").is_file():
        tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
        for name, data in bundle.files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        (tmp / ".complete").write_text(bundle.digest)
        try:
            tmp.rename(dst)
        except OSError:  # another process of this node got there first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        logger.info(f"base bundle {bundle.digest}: {src} is not on this node; its config and tokenizer files "
                    f"are written to {dst}")
    return str(dst)


def publish_base(model_path: str | Path, svd_cache: str | Path, dtype: torch.dtype = torch.float32):
    """``ray.put`` of ``bundle_base``: the ref every learner and multi-run engine of a sweep takes."""
    import ray

    return ray.put(bundle_base(model_path, svd_cache, dtype))


def _set(model: nn.Module, name: str, value: torch.Tensor, is_param: bool) -> None:
    owner, _, leaf = name.rpartition(".")
    mod = model.get_submodule(owner) if owner else model
    if is_param:
        mod._parameters[leaf] = value if isinstance(value, nn.Parameter) else nn.Parameter(value, requires_grad=False)
    else:
        mod._buffers[leaf] = value


def build_model(bundle: BaseBundle, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                attn: str = "sdpa", writable: bool = False) -> tuple[nn.Module, dict[str, Factors]]:
    """(model, factors) from a bundle. On CPU in the bundle's dtype and with ``writable=False`` the
    weights and factors are the bundle's memory (shared with every process on the node); otherwise
    each tensor is copied to ``device`` / ``dtype``. Parameters come back frozen (requires_grad
    False): the adapter's δS are the only trainable tensors."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    device = torch.device(device)
    dtype = dtype or getattr(torch, bundle.dtype.removeprefix("torch."))
    where = local_model_dir(bundle)
    config = AutoConfig.from_pretrained(where)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    buffers = {n for n, _ in model.named_buffers(remove_duplicate=False)}
    missing = sorted((params | buffers) - set(bundle.tensors) - set(bundle.aliases))
    extra = sorted(set(bundle.tensors) - params - buffers)
    if missing or extra:
        raise ValueError(f"base bundle {bundle.digest} does not fit {bundle.model_path}: missing {missing[:3]}, "
                         f"unknown {extra[:3]}")
    zero_copy = device.type == "cpu" and str(dtype) == bundle.dtype and not writable

    def place(name: str, a: np.ndarray) -> torch.Tensor:
        t = _torch(a, name in bundle.bf16)
        if zero_copy:
            return t
        # parameters take the requested dtype; buffers (rotary inv_freq) keep their own
        cast = dtype if name in params and t.is_floating_point() else t.dtype
        return t.to(device=device, dtype=cast, copy=True)

    made: dict[str, torch.Tensor] = {}
    for name, a in bundle.tensors.items():
        t = place(name, a)
        if name in params:
            t = nn.Parameter(t, requires_grad=False)
        made[name] = t
        _set(model, name, t, name in params)
    for name, target in bundle.aliases.items():
        _set(model, name, made[target], name in params)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"base bundle {bundle.digest}: tensors left unmaterialized: {left[:3]}")
    try:  # generation defaults (eos ids, sampling) live beside the config, as from_pretrained reads them
        model.generation_config = GenerationConfig.from_pretrained(where)
    except OSError:
        pass  # the checkpoint has none: from_config's defaults from the model config stand
    model.eval()

    def fac(a: np.ndarray) -> torch.Tensor:
        t = _torch(a)
        return t if device.type == "cpu" and not writable else t.to(device=device, copy=True)

    factors = {n: Factors(fac(U), fac(S), fac(Vh)) for n, (U, S, Vh) in bundle.factors.items()}
    return model, factors


def shares_memory(t: torch.Tensor, bundle: BaseBundle) -> bool:
    """True when ``t`` lies inside one of the bundle's arrays (diagnostics and tests)."""
    p = t.data_ptr()
    for a in bundle.tensors.values():
        lo = a.ctypes.data
        if lo <= p < lo + max(1, a.nbytes):
            return True
    return False
