"""Grading untrusted completions: the Ray grader pool (``pool``), the in-process grader
(``local``), the one retry policy both obey (``retry``) and the JSONL grading command (``cli``).
What a verdict means lives in ``env.grading``; how code is isolated lives in ``sandbox``."""
