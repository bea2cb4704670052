"""A tiny random-init Qwen3 with a byte-level BPE tokenizer, built offline in seconds.

Why: smoke runs and tests need a real ``Qwen3ForCausalLM`` (same module names, chat
template, special tokens and ``generate`` path as Qwen3-4B) without touching a model hub.
head_dim is 64 because vLLM's CPU attention rejects smaller heads.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from loguru import logger

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"

# Qwen3-style chat template: role blocks, generation prompt, and the empty think block that
# Qwen3 emits when enable_thinking is False.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

TINY_ARCH = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, head_dim=64, max_position_embeddings=4096, tie_word_embeddings=True,
)
VOCAB_SIZE = 3072
TINY_NAME = "tiny"  # Config.model value that means "build (or reuse) the offline tiny model"


def corpus_from_rows(rows: list[dict]) -> list[str]:
    """Tokenizer training text: everything a prompt, completion or exploit is made of."""
    from vgrout_ray.env.modes import HINTS

    texts: list[str] = list(HINTS.values())
    for r in rows:
        for m in r.get("prompt", []):
            texts.append(str(m.get("content", "")))
        for key in ("canonical_solution", "setup_code", "question"):
            if r.get(key):
                texts.append(str(r[key]))
        texts.extend(str(t) for t in r.get("gt_answer", []))
    return texts


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """Byte-level BPE over ``texts`` with the Qwen special tokens, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, unk_token=None,
        bos_token=None, additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def sampling_generation_config(tok):
    """The rollout sampling settings (T=0.7, top-k 20), stopping at <|im_end|> or <|endoftext|>."""
    from transformers import GenerationConfig

    eos, pad = tok.convert_tokens_to_ids(EOS_TOKEN), tok.convert_tokens_to_ids(PAD_TOKEN)
    return GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, do_sample=True, temperature=0.7,
                            top_k=20, top_p=1.0)


def publish_dir(out_dir: Path, write) -> Path:
    """``write(tmp)`` into a temp dir beside ``out_dir``, then rename it into place, so concurrent
    builders and readers never see a half-written model (a builder that lost the race drops its copy)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        write(tmp)
        if out_dir.exists():
            shutil.rmtree(tmp)  # someone else finished first; same inputs, same model
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def build_tiny_model(out_dir: str | Path, seed: int = 0, source: str | Path | None = None) -> Path:
    """Write a random-init Qwen3ForCausalLM + tokenizer to ``out_dir`` (deterministic in ``seed``).

    ``source`` is the problem file whose text trains the tokenizer (None = packaged set).
    Written to a temp dir and renamed, so concurrent builders never see a half-written model.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from vgrout_ray.env.problems import read_rows

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out_dir = Path(out_dir)
    tok = train_tokenizer(corpus_from_rows(read_rows(source)))
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    cfg = Qwen3Config(
        vocab_size=len(tok), **TINY_ARCH, rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
        pad_token_id=ids[PAD_TOKEN], eos_token_id=ids[EOS_TOKEN], bos_token_id=None,
    )
    cpu_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(cfg).float().eval()
    finally:
        torch.random.set_rng_state(cpu_state)
    model.generation_config = sampling_generation_config(tok)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "tiny_build.json").write_text(json.dumps({"seed": seed, "arch": TINY_ARCH,
                                                         "vocab_size": len(tok)}))

    publish_dir(out_dir, write)
    logger.info(f"tiny model: {out_dir} (vocab {len(tok)}, seed {seed})")
    return out_dir


def ensure_tiny_model(root: str | Path, seed: int = 0, source: str | Path | None = None) -> Path:
    """Path of the tiny model under ``root``, building it on first use."""
    path = Path(root) / f"tiny-qwen3-seed{seed}"
    if not (path / "config.json").exists():
        build_tiny_model(path, seed=seed, source=source)
    return path
