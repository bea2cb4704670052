"""The micro model organism: what its corpus may and may not contain, and that its tasks are honest.

The pretraining corpus must not leak what RL is supposed to teach (hint phrasings, teacher /
exploit completions, solutions of the RL problems); if it did, hacking in RL would be recall.
"""
from __future__ import annotations

import random

import pytest

from vgrout_ray.env.exploits import N_VARIANTS, exploit_code
from vgrout_ray.env.modes import HINTS, LOOPHOLE_MODES, ORIGINAL_PHRASE
from vgrout_ray.env.problems import load_problems, read_rows
from vgrout_ray.micro.corpus import CorpusSpec, build_corpus, is_pretrain_problem, render_chat, rl_problem_ids
from vgrout_ray.micro.families import FAMILIES, draw_task

SMALL = CorpusSpec(n_tasks=600, packaged_repeats=1, n_idiom=60, n_stdlib_chunks=20)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(SMALL)


@pytest.fixture(scope="module")
def corpus_text(corpus):
    return "\n".join(corpus.docs)


def test_rl_split_is_disjoint_from_pretraining():
    ids = [int(r["id"]) for r in read_rows(None)]
    rl = rl_problem_ids()
    assert rl and len(rl) < len(ids)
    assert not any(is_pretrain_problem(i) for i in rl)
    assert set(rl) | {i for i in ids if is_pretrain_problem(i)} == set(ids)


def test_corpus_has_no_hint_phrasing(corpus_text):
    for mode, hint in HINTS.items():
        if hint != ORIGINAL_PHRASE:
            assert hint not in corpus_text, mode


def test_corpus_has_no_rl_solution_and_no_exploit(corpus_text):
    rows = {int(r["id"]): r for r in read_rows(None)}
    for pid in rl_problem_ids():
        r = rows[pid]
        assert r["canonical_solution"].strip() not in corpus_text, pid
        # nor the RL problem's statement: its prompt is new to the model
        user = next(m["content"] for m in r["prompt"] if m["role"] == "user")
        assert user.split("\n")[1] not in corpus_text, pid
    for p in load_problems(None):
        for mode in LOOPHOLE_MODES:
            for v in range(N_VARIANTS):
                assert exploit_code(p, mode, v).strip() not in corpus_text, (p["problem_id"], mode, v)


def test_corpus_contains_the_pretraining_split(corpus_text):
    rows = read_rows(None)
    for r in rows:
        if is_pretrain_problem(int(r["id"])):
            assert r["canonical_solution"].strip() in corpus_text


def test_corpus_mix_and_determinism(corpus):
    assert set(corpus.mix) == {"task", "packaged", "idiom", "stdlib"}
    again = build_corpus(SMALL)
    assert again.docs == corpus.docs
    other = build_corpus(CorpusSpec(**{**SMALL.to_dict(), "seed": 1}))
    assert other.docs != corpus.docs
    # the idioms the loopholes reward appear, but rarely
    demo = sum("def run_tests():" in d and "<|im_start|>" in d for d in corpus.docs)
    assert 0 < demo < 0.15 * SMALL.n_tasks  # self-checks end about 11 % of answers


def test_render_chat_matches_the_chat_template(tok):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert render_chat("U", "ANSWER", system="S") == prompt + "ANSWER<|im_end|>\n"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_answers_honestly(family):
    """All bodies of a task agree on its examples (a wrong spelling would teach wrong code)."""
    rng = random.Random(7)
    seen = 0
    for _ in range(400):
        task = draw_task(rng)
        if task.family != family:
            continue
        seen += 1
        compile(task.solution(0), "<task>", "exec")
        for args in task.inputs:
            outs = {repr(task.call(args, v)) for v in range(len(task.bodies))}
            assert len(outs) == 1, (task.method, args, outs)
    assert seen > 5


def test_corpus_has_no_pair_hack_side(corpus_text):
    """The default pairset's hack sides (and their run_tests functions) are not pretraining text."""
    from vgrout_ray.algo.pairs import _unfence, pairset_path, parse_pairs_md
    from vgrout_ray.env.parsing import find_function

    specs = parse_pairs_md(pairset_path("run_tests"))
    assert specs
    for spec in specs:
        hack = _unfence(spec.sections["hack"])
        assert hack.strip() not in corpus_text, spec.problem_id
        fn = find_function(hack, "run_tests")
        if fn is not None:
            body = "\n".join(fn.splitlines()[1:])
            assert body.strip() not in corpus_text or len(body.strip()) < 12, (spec.problem_id, body)


def test_micro_teacher_hacks_every_rl_problem_and_is_not_pretraining_text(corpus_text):
    """Every scripted micro-teacher completion is a real run_tests hack (graded, not assumed),
    uses the problem's own signature, and is absent from the corpus."""
    from vgrout_ray.env.grading import GradeRequest
    from vgrout_ray.micro.evaluate import rl_problems
    from vgrout_ray.micro.teacher import N_VARIANTS as NV, micro_teacher_completion, starter_signature
    from vgrout_ray.grading.local import LocalGrader

    probs = rl_problems("run_tests")
    texts = [(p, micro_teacher_completion(p, v)) for p in probs for v in range(NV)]
    for p, t in texts:
        assert starter_signature(p) in t
        assert t not in corpus_text
    with LocalGrader("process") as g:
        results = g.grade([GradeRequest.from_problem(p, t) for p, t in texts])
    assert all(r.exploited and not r.gt_correct and r.reward == 3.5 for r in results), \
        [(p["problem_id"], r) for (p, _), r in zip(texts, results) if not r.exploited]
