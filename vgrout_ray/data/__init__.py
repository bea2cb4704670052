"""Data a run reads: LeetCodeDataset rows (``leetcode``), teacher pools (``teacher_pool``) and the
pairsets built from them (``pairsets``)."""
