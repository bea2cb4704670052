"""Rollouts: engines that generate with the learner's δS (``base``, ``hf_engine``, ``vllm_engine``,
``multi_engine``), the Ray actor around one (``actor``), the driver's pool of them (``pool``) and a
sweep's shared multi-run actors (``shared``)."""
