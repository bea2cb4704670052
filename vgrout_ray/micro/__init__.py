"""The micro model organism: a small code model pretrained from scratch on CPU, in which
reward hacking emerges under GRPO within minutes.

Why it exists: a random tiny model never writes code, so no CPU run could show the loop
learning, hacking or being stopped by an intervention. The micro model writes compiling
``class Solution`` answers most of the time and gives the loophole idioms (self-test
functions, pass reports, exit codes, validity flags, result files) the small but real
probability that a pretrained LLM gives them, because its corpus contains them as everyday
code. It never sees the hint phrasings, the teacher's completions, the hack sides of pairs,
or the solutions of the problems used for RL.

- ``families``: synthetic task generator (problem text, starter code, honest solutions).
- ``corpus``: the pretraining mix (tasks, everyday idiom code, stdlib source).
- ``build``: tokenizer, pretraining, evaluation, build report, content-hash cache.
"""
