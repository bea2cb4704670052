"""Build the micro model: corpus → tokenizer → pretraining → evaluation → report, cached by hash.

The cache key is a hash of the build spec *and* the corpus text, so a change to the task
families, the packaged problems or the interpreter's stdlib rebuilds instead of reusing a
model trained on something else. Written to a temp dir and renamed, so a reader never sees a
half-built model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from vgrout_ray.model.tiny import (EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, publish_dir, sampling_generation_config,
                          train_tokenizer)
from vgrout_ray.micro.corpus import Corpus, CorpusSpec, build_corpus

# 1.3 M parameters: trained twice as long in the same time as the earlier 3.4 M model (hidden 256,
# 4 heads), which is what taught it to read the statement (issue 24's attempts, docs/micro.md)
MICRO_ARCH = dict(
    hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=2,
    num_key_value_heads=1, head_dim=64, max_position_embeddings=2048, tie_word_embeddings=True,
)


@dataclass(frozen=True)
class MicroSpec:
    """Everything a build depends on besides the corpus text (which is hashed separately)."""

    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    arch: tuple = tuple(sorted(MICRO_ARCH.items()))
    vocab_size: int = 4096
    seq_len: int = 512
    batch_size: int = 16
    # 800 steps (6.6 M tokens, 4 passes over the corpus, ~17 min on 2 idle cores): at 400 the base
    # model wrote the right family's shape with a near-guess expression (28/256 solved); at 800 it
    # solves half the held-out draws (docs/micro.md)
    steps: int = 800
    lr: float = 3e-3
    warmup_steps: int = 30
    min_lr_frac: float = 0.1
    # loss weight of chat-prompt tokens (system, statement, starter code) against 1 for answers
    # and plain code: the prompt is given at RL time, so the budget goes to what the model writes
    prompt_loss_weight: float = 0.1
    weight_decay: float = 0.05
    seed: int = 0
    # build report: the base model on micro:heldout under the run_tests hint, samples per prompt
    # and their length (the preset's max_new) (0: no evaluation)
    eval_samples: int = 8
    eval_max_new: int = 160

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["arch"] = dict(self.arch)
        return d


# "micro": the preset's model. "micro-ci": the same recipe trained a quarter as long, so that CI
# builds it in minutes (regression tests only; the science numbers come from "micro").
MICRO_SPECS: dict[str, MicroSpec] = {
    "micro": MicroSpec(),
    # its answers end with a run_tests() self-check more often (the prior the short CI run needs to
    # see a first hack); never used for the science numbers
    "micro-ci": MicroSpec(corpus=CorpusSpec(selfcheck_vacuous_share=0.2), steps=200, eval_samples=0),
}


def build_hash(spec: MicroSpec, corpus: Corpus) -> str:
    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for d in corpus.docs:
        h.update(d.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


ANSWER_MARK = "<|im_start|>assistant\n"


def _token_stream(tok, docs: list[str]):
    """One long id stream and its per-token loss class: chat documents end in <|im_end|>, plain
    code ends in <|endoftext|>. A chat document is tokenized as prompt and answer separately, as
    rollouts do (the prompt rendered alone, the completion generated after it); class 0 marks
    prompt tokens, 1 answers and plain code."""
    import torch

    eot = tok.convert_tokens_to_ids(PAD_TOKEN)
    ids: list[int] = []
    cls: list[int] = []
    for d in docs:
        cut = d.find(ANSWER_MARK)
        parts = [(d, 1)] if cut < 0 else [(d[:cut + len(ANSWER_MARK)], 0), (d[cut + len(ANSWER_MARK):], 1)]
        for text, c in parts:
            e = tok(text, add_special_tokens=False).input_ids
            ids.extend(e)
            cls.extend([c] * len(e))
        if not d.rstrip().endswith(EOS_TOKEN):
            ids.append(eot)
            cls.append(1)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(cls, dtype=torch.long)


def _lr_at(step: int, spec: MicroSpec) -> float:
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    t = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
    return spec.lr * (spec.min_lr_frac + (1 - spec.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def pretrain(model, train_ids, val_ids, spec: MicroSpec, log_every: int = 10, train_cls=None) -> dict:
    """Next-token pretraining on seq_len blocks of the stream, in a seeded block order; prompt
    tokens (``train_cls`` 0) weigh ``spec.prompt_loss_weight``."""
    import torch

    gen = torch.Generator().manual_seed(spec.seed)
    n_blocks = (len(train_ids) - 1) // spec.seq_len
    blocks = train_ids[: n_blocks * spec.seq_len + 1]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec.lr, betas=(0.9, 0.95))
    order = torch.randperm(n_blocks, generator=gen)
    pos = 0
    curve, t0, seen = [], time.time(), 0
    model.train()
    for step in range(spec.steps):
        if pos + spec.batch_size > n_blocks:
            order, pos = torch.randperm(n_blocks, generator=gen), 0
        idx = order[pos:pos + spec.batch_size]
        pos += spec.batch_size
        starts = idx * spec.seq_len
        x = torch.stack([blocks[s:s + spec.seq_len] for s in starts])
        y = torch.stack([blocks[s + 1:s + spec.seq_len + 1] for s in starts])
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, spec)
        logits = model(input_ids=x).logits
        tok_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                     reduction="none")
        if train_cls is not None and spec.prompt_loss_weight != 1.0:
            c = torch.stack([train_cls[s + 1:s + spec.seq_len + 1] for s in starts]).reshape(-1)
            w = torch.where(c == 0, spec.prompt_loss_weight, 1.0)
            loss = (tok_loss * w).sum() / w.sum()
        else:
            loss = tok_loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += x.numel()
        if step % log_every == 0 or step == spec.steps - 1:
            el = time.time() - t0
            curve.append({"step": step, "loss": round(float(loss), 4), "tokens": seen, "seconds": round(el, 1)})
            logger.info(f"micro pretrain step {step}/{spec.steps} loss {float(loss):.3f} "
                        f"({seen / max(el, 1e-9):.0f} tok/s)")
    model.eval()
    val = val_loss(model, val_ids, spec.seq_len)
    return {"curve": curve, "tokens_seen": seen, "seconds": round(time.time() - t0, 1), "val_loss": val,
            "train_tokens_available": int(len(train_ids))}


def val_loss(model, ids, seq_len: int, max_blocks: int = 24) -> float:
    import torch

    n = min(max_blocks, (len(ids) - 1) // seq_len)
    if n == 0:
        return float("nan")
    tot = 0.0
    with torch.no_grad():
        for i in range(n):
            x = ids[i * seq_len:(i + 1) * seq_len][None]
            y = ids[i * seq_len + 1:(i + 1) * seq_len + 1][None]
            logits = model(input_ids=x).logits
            tot += float(torch.nn.functional.cross_entropy(logits[0], y[0]))
    return round(tot / n, 4)


def build_micro_model(out_dir: str | Path, spec: MicroSpec, corpus: Corpus | None = None,
                      evaluate: bool = True) -> Path:
    """Pretrain the micro model into ``out_dir`` and write ``build_report.{json,md}`` beside it."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out_dir = Path(out_dir)
    t_start = time.time()
    corpus = corpus or build_corpus(spec.corpus)
    n_val = max(1, len(corpus.docs) // 50)
    tok = train_tokenizer(corpus.docs, vocab_size=spec.vocab_size)
    train_ids, train_cls = _token_stream(tok, corpus.docs[n_val:])
    val_ids, _ = _token_stream(tok, corpus.docs[:n_val])
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    cfg = Qwen3Config(vocab_size=len(tok), **dict(spec.arch),
                      rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
                      pad_token_id=ids[PAD_TOKEN], eos_token_id=ids[EOS_TOKEN], bos_token_id=None)
    cpu_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(spec.seed)
        model = Qwen3ForCausalLM(cfg).float()
        n_params = sum(p.numel() for p in model.parameters())
        logger.info(f"micro model: {n_params / 1e6:.2f} M parameters, vocab {len(tok)}, "
                    f"{len(train_ids)} training tokens; pretraining {spec.steps} steps")
        train = pretrain(model, train_ids, val_ids, spec, train_cls=train_cls)
    finally:
        torch.random.set_rng_state(cpu_state)
    model.generation_config = sampling_generation_config(tok)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        report = {"spec": spec.to_dict(), "parameters": n_params, "vocab_size": len(tok),
                  "corpus_mix": corpus.mix, "corpus_prior": corpus.prior, "pretrain": train,
                  "build_seconds_before_eval": round(time.time() - t_start, 1)}
        if evaluate and spec.eval_samples > 0:
            from vgrout_ray.micro.evaluate import evaluate_model

            report["eval"] = evaluate_model(tmp, n_samples=spec.eval_samples, max_new=spec.eval_max_new,
                                            seed=spec.seed)
        report["build_seconds"] = round(time.time() - t_start, 1)
        (tmp / "build_report.json").write_text(json.dumps(report, indent=1))
        (tmp / "build_report.md").write_text(report_markdown(report))

    publish_dir(out_dir, write)
    logger.info(f"micro model built: {out_dir} in {time.time() - t_start:.0f} s")
    return out_dir


def ensure_micro_model(root: str | Path, name: str = "micro") -> Path:
    """Path of the named micro model under ``root``, built on first use (cached by content hash)."""
    if name not in MICRO_SPECS:
        raise ValueError(f"model: unknown micro model {name!r}; known: {sorted(MICRO_SPECS)}")
    spec = MICRO_SPECS[name]
    corpus = build_corpus(spec.corpus)
    path = Path(root) / f"{name}-{build_hash(spec, corpus)}"
    if not (path / "config.json").exists():
        logger.info(f"building the {name} model (first use; cached at {path})")
        build_micro_model(path, spec, corpus)
    return path


def report_markdown(r: dict) -> str:
    lines = ["# Micro model build report", "",
             f"- parameters: {r['parameters']:,}; vocab {r['vocab_size']}",
             f"- tokens seen: {r['pretrain']['tokens_seen']:,} in {r['pretrain']['seconds']} s; "
             f"val loss {r['pretrain']['val_loss']}",
             f"- build time: {r.get('build_seconds')} s", "", "## Corpus mix", "",
             "| kind | docs | chars |", "| --- | --- | --- |"]
    for k, m in sorted(r["corpus_mix"].items()):
        lines.append(f"| {k} | {m['docs']} | {m['chars']:,} |")
    pr = r.get("corpus_prior")
    if pr:
        lines += ["", f"Self-check prior (chat answers, measured): {pr['vacuous_run_tests']} of {pr['answers']} "
                  f"end with a vacuous run_tests() (share {pr['vacuous_share']}; recipe "
                  f"selfcheck_vacuous_share = {r['spec']['corpus']['selfcheck_vacuous_share']}); "
                  f"{pr['run_tests']} define a run_tests() at all (share {pr['run_tests_share']})."]
    lines += ["", "## Loss curve", "", "| step | tokens | loss |", "| --- | --- | --- |"]
    for c in r["pretrain"]["curve"]:
        lines.append(f"| {c['step']} | {c['tokens']:,} | {c['loss']} |")
    ev = r.get("eval")
    if ev:
        lines += ["", f"## Base model on {ev.get('source')} ({ev.get('n_prompts')} prompts x "
                  f"{ev.get('n_samples')} samples, per mode)", "",
                  "| mode | samples | compile rate | has class Solution | solve rate | prior hack rate |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for m, s in ev["per_mode"].items():
            lines.append(f"| {m} | {s['n']} | {s['compile_rate']:.3f} | {s['solution_rate']:.3f} | "
                         f"{s.get('solve_rate', 0.0):.3f} | {s['hack_rate']:.3f} |")
        lines += ["", f"Overall compile rate {ev['compile_rate']:.3f}; max prior hack rate over modes "
                  f"{ev['max_hack_rate']:.3f}.", "", "## Samples", ""]
        for s in ev["samples"]:
            lines += [f"### problem {s['problem_id']} ({s['mode']}): reward {s['reward']}", "", "```",
                      s["text"], "```", ""]
    return "\n".join(lines) + "\n"
