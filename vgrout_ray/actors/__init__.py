"""Ray actors: rollout (hf, vllm), learner, grader pool."""
