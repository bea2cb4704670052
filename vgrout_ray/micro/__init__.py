"""The micro model organism: a small code model pretrained from scratch on CPU, in which
reward hacking emerges under GRPO within minutes.

Why it exists: a random tiny model never writes code, so no CPU run could show the loop
learning, hacking or being stopped by an intervention. The micro model writes compiling
``class Solution`` answers most of the time and gives the loophole idioms (self-test
functions, pass reports, exit codes, validity flags, result files) the small but real
probability that a pretrained LLM gives them, because its corpus contains them as everyday
code (the vacuous run_tests share is one stated recipe parameter,
``CorpusSpec.selfcheck_vacuous_share``). It never sees the hint phrasings, the teacher's
completions, the hack sides of pairs, or the problems used for RL; those are new instances of
its own task families, so it honestly solves a share of them and hacking competes with solving.

- ``families``: synthetic task generator (problem text, starter code, honest solutions).
- ``rl_problems``: the RL problem sources ``micro:train`` / ``micro:heldout``.
- ``corpus``: the pretraining mix (tasks, everyday idiom code, stdlib source).
- ``build``: tokenizer, pretraining, evaluation, build report, content-hash cache.
- ``evaluate``: the base model's solve / hack / compile rates on a problem source.
- ``teacher``: the scripted teacher's run_tests hacks in the model's idiom.
"""
