"""Base weights and SVD factors through the object store (``model.base_store``): the model built
from a bundle is the checkpoint's model bit for bit, its frozen tensors are the store's pages
(the same bytes of the same shared file in two actors), and a learner built from it trains
exactly as one that read the checkpoint."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from vgrout_ray.model.base_store import build_model, bundle_base, publish_base, shares_memory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBE = "model.layers.1.mlp.up_proj"


@pytest.fixture(scope="module")
def bundle(tiny, tmp_path_factory):
    return bundle_base(tiny, tmp_path_factory.mktemp("bs_svd"))


def test_bundle_model_is_the_checkpoint(tiny, bundle):
    model, factors = build_model(bundle)
    ref = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32, attn_implementation="sdpa").eval()
    ids = torch.randint(0, ref.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    if ref.config.tie_word_embeddings:  # the tie survives: one tensor under both names
        assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.generation_config.eos_token_id == GenerationConfig.from_pretrained(tiny).eos_token_id
    assert not any(p.requires_grad for p in model.parameters())
    # zero-copy in-process: the weights and factors are the bundle's arrays
    assert shares_memory(model.get_submodule(PROBE).weight, bundle)
    assert factors[PROBE].U.data_ptr() == bundle.factors[PROBE][0].ctypes.data
    private, _ = build_model(bundle, writable=True)
    assert not shares_memory(private.get_submodule(PROBE).weight, bundle)
    assert torch.equal(private.get_submodule(PROBE).weight, model.get_submodule(PROBE).weight)


def test_bundle_of_another_model_fails_loud(tiny, bundle, tmp_path):
    import dataclasses

    broken = dataclasses.replace(bundle, tensors={k: v for k, v in bundle.tensors.items() if "layers.0." not in k})
    with pytest.raises(ValueError, match="missing .*layers.0"):
        build_model(broken)


def _mapping(addr: int) -> dict:
    """The /proc/self/maps entry holding ``addr``: file, inode and the address's offset in it."""
    for line in open("/proc/self/maps"):
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= addr < hi:
            return {"file": parts[5] if len(parts) > 5 else "", "inode": parts[4],
                    "offset": int(parts[2], 16) + addr - lo}
    raise AssertionError(f"{addr:#x} is in no mapping")


@ray.remote(num_cpus=0)
class _Holder:
    def __init__(self, base):
        self.model, self.factors = build_model(base)

    def where(self) -> tuple[int, dict, dict, bool]:
        w = self.model.get_submodule(PROBE).weight
        with torch.no_grad():
            out = self.model(torch.arange(1, 9).unsqueeze(0)).logits
        return os.getpid(), _mapping(w.data_ptr()), _mapping(self.factors[PROBE].Vh.data_ptr()), bool(out.isfinite().all())


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc maps")
def test_two_actors_map_the_same_store_pages(ray_cluster, tiny, tmp_path):
    ref = publish_base(tiny, tmp_path / "svd")
    a, b = _Holder.remote(ref), _Holder.remote(ref)
    (pa, wa, va, oka), (pb, wb, vb, okb) = ray.get([a.where.remote(), b.where.remote()])
    for h in (a, b):
        ray.kill(h)
    assert pa != pb and oka and okb
    # one file of the shared-memory object store, the same offset in both processes: one copy
    assert wa == wb and va == vb, (wa, wb, va, vb)
    assert wa["file"] and wa["inode"] != "0", f"weights are in private memory: {wa}"


def test_learner_from_bundle_trains_like_the_checkpoint(tiny, tok, tmp_path, bundle):
    from tests.test_learner_core import _cfg, _teacher_group
    from vgrout_ray.algo.pairs import pairs_from_problems, save_pairs_json
    from vgrout_ray.env.problems import load_problems
    from vgrout_ray.learner.core import LearnerCore

    probs = load_problems()[:6]
    save_pairs_json(pairs_from_problems(probs, tok), tmp_path / "pairs6.json")
    cfg = _cfg(tmp_path, tmp_path, "route")
    cores = [LearnerCore(cfg, model_path=tiny, device="cpu"), LearnerCore(cfg, model_path=tiny, device="cpu",
                                                                          base=bundle)]
    assert cores[0].base_source == "checkpoint" and cores[1].base_source.startswith("object store")
    for step in range(2):
        for c in cores:
            c.begin_step(step)
            for p in probs[:2]:
                c.add_group(_teacher_group(tok, p, step))
        stats = [c.end_step() for c in cores]
        assert stats[0]["loss"] == stats[1]["loss"] and stats[0]["gn"] == stats[1]["gn"]
    d0, d1 = cores[0].deltas_state(), cores[1].deltas_state()
    assert any(v.abs().sum() > 0 for v in d0.values())
    assert all(torch.equal(d0[k], d1[k]) for k in d0)
    other = shutil.copytree(tiny, tmp_path / "other_model")
    with pytest.raises(ValueError, match="base bundle is of"):
        LearnerCore(cfg, model_path=other, device="cpu", base=bundle)


def test_a_node_without_the_checkpoint_builds_from_the_bundle(tiny, tmp_path):
    """Publish from a checkpoint folder, then take the folder (and the SVD cache) away, as on a
    node that never had them: the model comes from the bundle alone, with the same logits."""
    from vgrout_ray.model.base_store import local_model_dir

    ckpt = shutil.copytree(tiny, tmp_path / "ckpt")
    b = bundle_base(ckpt, tmp_path / "svd")
    assert "config.json" in b.files and not any(n.endswith(".safetensors") for n in b.files)
    want, _ = build_model(b)
    shutil.rmtree(ckpt)
    shutil.rmtree(tmp_path / "svd")
    where = local_model_dir(b)
    assert where != str(ckpt) and (Path(where) / "config.json").is_file()
    got, factors = build_model(b)
    ids = torch.arange(1, 12).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(got(ids).logits, want(ids).logits)
    assert local_model_dir(b) == where  # written once per node
