"""The offline tiny Qwen3: deterministic build, loadable with Auto* classes, Qwen-style chat."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vgrout_ray.model.tiny import SPECIAL_TOKENS, build_tiny_model
from vgrout_ray.model.resolve import resolve_model
from vgrout_ray.model.build_cli import main as build_model_main


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_build_is_deterministic(tmp_path, tiny):
    b = build_tiny_model(tmp_path / "b", seed=0)
    for f in ("tokenizer.json", "model.safetensors", "config.json", "chat_template.jinja"):
        assert (tiny / f).read_bytes() == (b / f).read_bytes(), f
    c = build_tiny_model(tmp_path / "c", seed=1)
    assert (tiny / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    assert (tiny / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_cli_writes_a_loadable_model(tmp_path):
    assert build_model_main(["tiny", "--out", str(tmp_path / "m"), "--seed", "3"]) == 0
    meta = json.loads((tmp_path / "m" / "tiny_build.json").read_text())
    assert meta["seed"] == 3
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m").config.model_type == "qwen3"


def test_loads_offline_with_qwen3_shape(tiny):
    model = AutoModelForCausalLM.from_pretrained(tiny)
    tok = AutoTokenizer.from_pretrained(tiny)
    cfg = model.config
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert cfg.head_dim == 64 and cfg.num_attention_heads * cfg.head_dim == 128
    assert 2000 <= len(tok) <= 4100 and cfg.vocab_size == len(tok)
    for t in SPECIAL_TOKENS:
        ids = tok(t, add_special_tokens=False).input_ids
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == t
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert model.generation_config.eos_token_id == [tok.eos_token_id, tok.pad_token_id]
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names


def test_chat_template_thinking_switch(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    off = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    on = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert on == "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert off == on + "<think>\n\n</think>\n\n"
    assert tok.apply_chat_template(msgs, tokenize=False) == on.removesuffix("<|im_start|>assistant\n")
    text = "def f(x):\n    return x  # ünïcode ✓"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text


def test_generate_runs(tiny):
    model = AutoModelForCausalLM.from_pretrained(tiny)
    tok = AutoTokenizer.from_pretrained(tiny)
    enc = tok("<|im_start|>user\nhello<|im_end|>\n", return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=8, do_sample=True, top_k=20, temperature=0.7,
                         num_return_sequences=2, pad_token_id=tok.pad_token_id)
    assert out.shape[0] == 2 and enc.input_ids.shape[1] < out.shape[1] <= enc.input_ids.shape[1] + 8


def test_resolve_model_builds_once(tmp_path):
    p = resolve_model("tiny", tmp_path)
    stamp = (tmp_path / "tiny-qwen3-seed0" / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny", tmp_path) == p
    assert (tmp_path / "tiny-qwen3-seed0" / "model.safetensors").stat().st_mtime_ns == stamp
    assert resolve_model("Qwen/Qwen3-4B", tmp_path) == "Qwen/Qwen3-4B"
