"""Configs for ``python -m experiments.rnac`` (PPO, RNAC-DS, RNAC-IPM; ADARL.md §7.3).

Presets (``--config experiments/configs/rnac.py:<preset>``):

* ``smoke``: seconds of running on CPU (plus MJX compilation), used by the tests.
* ``cpu``: the *same task* as ``experiments/configs/adarl.py:cpu`` (env, training dynamics and
  robustness grid are copied from it, so SAC/AdaRL/Parseval/RNAC are compared on one task), with
  RNAC's official PPO hyperparameters and a CPU-sized number of updates, 5 vmapped seeds.
* ``hopper``, ``walker2d``, ``halfcheetah``-style paper presets: the official RNAC trainer
  (``train_rnac.py``: 3M steps, batch 2048, minibatch 64, 10 epochs, lr 3e-4 linearly decayed,
  (64, 64) tanh, clip 0.2, entropy 0.01, grad-norm 0.5, γ 0.99, λ 0.95) with AdaRL's OMPO
  dynamics, for a GPU.

``--config.algo=ppo|rnac_ds|rnac_ipm`` picks the uncertainty set with everything else equal.
"""

from __future__ import annotations

import ml_collections

import harness
from experiments.configs import adarl as adarl_configs
from harness import parallel


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.algo = "rnac_ds"  # "ppo" | "rnac_ds" | "rnac_ipm" (adarl.rnac.ALGOS)
    c.seed = 0  # root seed; the vmapped seeds are split from it
    c.num_seeds = 1  # seeds vmapped in one process
    c.checkpoint_every = 10  # harness updates
    c.progress = True  # tqdm progress bar

    # Task: same fields as experiments/configs/adarl.py (adarl.rnac.make_task reads them).
    c.env = ml_collections.ConfigDict()
    c.env.name = "PendulumSwingup"  # adarl.envs.names()
    c.env.overrides = ml_collections.ConfigDict()  # kwargs of adarl.envs.make
    c.env.episode_length = 1000  # simulator control steps
    c.env.action_repeat = 1
    c.dynamics = ml_collections.ConfigDict()
    c.dynamics.sampler = "nominal"  # training dynamics: nominal | box | wasserstein | ompo
    c.dynamics.params = ()  # parameter names; () = the env's default_params
    c.dynamics.kwargs = ml_collections.ConfigDict()  # kwargs of adarl.dynamics.make_sampler

    # PPO ([RNAC-code] train_rnac.py defaults, ADARL.md §7.3).
    c.ppo = ml_collections.ConfigDict()
    c.ppo.num_envs = 1  # parallel envs (official: one env)
    c.ppo.num_steps = 2048  # rollout length per env; batch = num_envs * num_steps (official 2048)
    c.ppo.minibatch_size = 64  # official mini_batch_size
    c.ppo.epochs = 10  # official K_epochs
    c.ppo.num_updates = 1465  # ~3M steps / 2048 (official max_train_steps 3e6)
    c.ppo.lr = 3e-4  # lr_a = lr_c
    c.ppo.anneal_lr = True  # linear decay to 0 over the run
    c.ppo.adam_eps = 1e-5
    c.ppo.gamma = 0.99
    c.ppo.gae_lambda = 0.95
    c.ppo.clip_eps = 0.2
    c.ppo.ent_coef = 0.01
    c.ppo.max_grad_norm = 0.5
    c.ppo.hidden = (64, 64)  # tanh MLPs, actor and critic
    c.ppo.normalize_obs = True  # running state normalisation
    c.ppo.reward_scaling = True  # divide by the running std of the discounted return
    c.ppo.normalize_advantages = True  # per-rollout advantage normalisation

    # Uncertainty sets.
    c.rnac = ml_collections.ConfigDict()
    c.rnac.ds_m = 2  # next_steps: candidate next states per step (DS)
    c.rnac.ds_action_noise = 5e-3  # U[-c, c] action noise that makes DS candidates differ
    c.rnac.ds_source = "action_noise"  # DS candidates: "action_noise" (official) | "params"
    c.rnac.ipm_weight_reg = 1e-5  # README value for Hopper-IPM (train_rnac.py default is 0)

    c.eval = ml_collections.ConfigDict()
    c.eval.episodes = 10  # deterministic nominal episodes per evaluation
    c.eval.every = 10  # harness updates
    c.eval.grid_params = ()  # robustness grid (read by experiments/windtunnel.py)
    c.eval.grid_scales = (0.5, 0.75, 1.0, 1.25, 1.5)
    c.eval.grid_episodes = 4
    # Devices: parallel envs and minibatches split over 'data'; parameters replicated.
    c.parallel = parallel.default_config()  # mesh, processes (issue 23)
    return c


def smoke() -> ml_collections.ConfigDict:
    """The adarl ``smoke`` task (CartpoleBalance, 100 decisions of 0.04 s) with a small PPO."""
    c = base()
    task = adarl_configs.get_config("smoke")
    c.env = task.env
    c.dynamics = task.dynamics
    c.num_seeds = 2
    c.ppo.num_envs = 16
    c.ppo.num_steps = 64
    c.ppo.minibatch_size = 256
    c.ppo.epochs = 4
    c.ppo.num_updates = 30
    c.ppo.lr = 1e-3
    c.ppo.hidden = (32, 32)
    c.checkpoint_every = 10
    c.eval.episodes = 4
    c.eval.every = 10
    c.eval.grid_scales = (0.5, 2.0)
    c.eval.grid_episodes = 1
    c.progress = False
    return c


def cpu() -> ml_collections.ConfigDict:
    """The issue-6 ``cpu`` task (copied, not redefined) with RNAC's PPO at CPU size."""
    c = base()
    task = adarl_configs.get_config("cpu")
    c.env = task.env
    c.dynamics = task.dynamics
    c.eval.grid_params = task.eval.grid_params
    c.eval.grid_scales = task.eval.grid_scales
    c.eval.grid_episodes = task.eval.grid_episodes
    c.num_seeds = 5
    c.ppo.num_envs = 16
    c.ppo.num_steps = 128  # batch 2048 as the official trainer
    c.ppo.num_updates = 150  # ~307k decisions per seed (x action_repeat simulator steps)
    c.checkpoint_every = 25
    c.eval.every = 25
    return c


def _paper(env: str) -> ml_collections.ConfigDict:
    c = base()
    task = adarl_configs.get_config(env.lower())
    c.env = task.env
    c.env.name = env.lower()  # adarl.envs registers the Gym-style tasks in lower case
    c.dynamics = task.dynamics
    c.num_seeds = 5
    c.checkpoint_every = 50
    c.eval.every = 10  # official: every 5e3 steps (~2.4 updates); coarser here
    return c


PRESETS = {
    "smoke": smoke,
    "cpu": cpu,
    "hopper": lambda: _paper("Hopper"),
    "walker2d": lambda: _paper("Walker2d"),
}
for _name in tuple(PRESETS):
    for _algo in ("ppo", "rnac_ds", "rnac_ipm"):
        PRESETS[f"{_name}_{_algo}"] = (lambda f, a: lambda: _with_algo(f(), a))(
            PRESETS[_name], _algo
        )


def _with_algo(c: ml_collections.ConfigDict, algo: str) -> ml_collections.ConfigDict:
    c.algo = algo
    return c


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return harness.select_preset(PRESETS, preset or "cpu")
