"""Loophole rewards for other trainers: the sandboxed grader as a TRL reward function
(``rewards.trl``) and a verl custom reward function (``rewards.verl``), with the dataset rows
they read (``rewards.dataset``). See docs/rewards.md."""
from vgrout_ray.rewards.core import RewardInputError, Scorer
from vgrout_ray.rewards.dataset import loophole_rows, trl_dataset, verl_rows
from vgrout_ray.rewards.trl import LoopholeReward, loophole_reward

__all__ = ["LoopholeReward", "RewardInputError", "Scorer", "loophole_reward", "loophole_rows", "trl_dataset",
           "verl_rows"]
