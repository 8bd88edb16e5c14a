"""Configs for ``python -m experiments.coevolve`` (SAFETY_AND_ANALYSIS.md §1.6).

Presets: ``smoke`` (tiny, tests), ``cpu`` (the ``cpu`` task of experiments/configs/rnac.py, one
seed, PPO), ``cpu_rnac_ds`` (same with RNAC-DS).
"""

from __future__ import annotations

import ml_collections

import harness
from experiments.configs import rnac as rnac_configs
from experiments.configs import windtunnel as wt_configs
from harness import parallel


def _base(train: ml_collections.ConfigDict, attack: ml_collections.ConfigDict):
    c = ml_collections.ConfigDict()
    train.num_seeds = 1
    train.progress = False
    c.train = train  # an experiments/configs/rnac.py config (algo ppo | rnac_ds | rnac_ipm)
    c.windtunnel = attack  # an experiments/configs/windtunnel.py config (fixed protocol)
    c.pretrain_updates = 100  # PPO updates before the first round
    c.round_updates = 25  # PPO updates per round
    c.max_rounds = 4
    c.patience = 2  # stop after this many consecutive rejections
    c.gate = ml_collections.ConfigDict()
    c.gate.min_improvement = 0.0  # worst case must improve by at least this (return units)
    c.gate.nominal_budget = 50.0  # ... while nominal return falls by at most this
    c.gate.use_regression = True  # regression suite: return on the bank's past failures
    c.gate.regression_tol = 50.0  # ... may fall by at most this
    c.bank = ml_collections.ConfigDict()
    c.bank.capacity = 32
    c.bank.min_distance = 0.05  # dedup radius in scaled units
    c.sampler = ml_collections.ConfigDict()
    c.sampler.p_adv = 0.5  # share of training episodes under failure-bank dynamics
    c.sampler.jitter = 0.02  # Gaussian jitter (scaled units) around bank points
    # One mesh for training and attacks (the sub-configs' own sections are dropped so that a
    # --config.train.parallel override cannot be silently ignored).
    del train.parallel, attack.parallel
    c.parallel = parallel.default_config()  # mesh, processes (issue 23)
    c.shield = ml_collections.ConfigDict()  # train shielded (adarl.shield in PPO's acting loop)
    c.shield.enabled = False
    c.shield.constraint = "cartpole"  # adarl.safety.CONSTRAINTS (the cpu task: cart position)
    c.shield.constraint_kwargs = ml_collections.ConfigDict()
    c.shield.horizon = 10  # K: backup-policy steps per verifier rollout
    c.shield.num_candidates = 4  # N: a_f, N-2 perturbations, the backup action
    c.shield.noise = 0.5
    c.shield.num_worst = 2  # verifier models: nominal + the bank's most severe failures
    c.shield.tau = 0.0  # no critic in the loop (Q_c = 0.5): tau < 0.5 verifies every step
    c.shield.every = 0  # ... tau >= 0.5: only every k-th step (0 = never)
    return c


def smoke() -> ml_collections.ConfigDict:
    c = _base(rnac_configs.get_config("smoke_ppo"), wt_configs.get_config("smoke"))
    c.pretrain_updates = 1
    c.round_updates = 1
    c.max_rounds = 2
    c.bank.capacity = 4
    c.shield.constraint = "pendulum"  # the smoke task: joint-velocity limit
    c.shield.horizon = 3
    c.shield.num_candidates = 2
    c.shield.num_worst = 1
    return c


def cpu() -> ml_collections.ConfigDict:
    return _base(rnac_configs.get_config("cpu_ppo"), wt_configs.get_config("cpu"))


def cpu_rnac_ds() -> ml_collections.ConfigDict:
    return _base(rnac_configs.get_config("cpu_rnac_ds"), wt_configs.get_config("cpu"))


PRESETS = {"smoke": smoke, "cpu": cpu, "cpu_rnac_ds": cpu_rnac_ds}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return harness.select_preset(PRESETS, preset or "cpu")
