"""Loophole environment: problems, hints, grading semantics. Imports no torch."""
