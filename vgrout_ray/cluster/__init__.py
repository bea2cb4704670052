"""Which Ray cluster a run uses, whether its actors fit there, and the head-node helper."""
