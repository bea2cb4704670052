"""vgrout-ray: gradient interventions against reward hacking in GRPO, as a Ray actor system."""
__version__ = "0.1.0"
