"""Shared fixtures: one tiny trainer per session, so MJX compiles the rollout once."""

import pytest

from experiments.configs import vla as vla_configs


def tiny_config():
    """Smaller than ``smoke``: 1 seed, 2 scenes per task, a few SFT steps, 2 RL updates."""
    c = vla_configs.smoke()
    c.num_seeds = 1
    c.env.per_task = 2
    c.sft.num_updates = 1
    c.sft.steps_per_update = 40
    c.rl.num_updates = 2
    c.rl.gen_groups = 2
    c.rl.train_groups = 2
    c.rl.max_gen_batches = 2
    c.rl.num_minibatches = 1
    c.train.eval_every = 0
    c.train.checkpoint_every = 5
    return c


@pytest.fixture(scope="session")
def trainer():
    from vla import train

    return train.make_train(tiny_config())
