"""One training run, in parts: ``sampling`` (what a step trains on), ``stream`` (one streamed
step over the rollout pool, grader pool and learner), ``state`` (what a run carries and resumes
from), ``aggregate`` (a step's row and records), ``evaluate``, ``summary`` (the end-of-run
report), ``learner`` (the learner actor's client) and ``loop`` (``Run``, the loop over them)."""
