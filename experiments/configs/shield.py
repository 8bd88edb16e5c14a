"""Configs for ``python -m experiments.shield --workdir RUN_DIR`` (SAFETY_AND_ANALYSIS.md §1.5).

The run directory supplies the task and the policies of all its seeds (and, if present, the wind
tunnel's worst cases in ``windtunnel.json``); this config sets the constraint, the shield and the
safety critic.

Presets: ``smoke`` (tiny, tests), ``cpu`` (the README table on CartpoleSwingup).
"""

from __future__ import annotations

import ml_collections

import harness
from harness import parallel


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.constraint = "cartpole"  # adarl.safety.CONSTRAINTS
    c.constraint_kwargs = ml_collections.ConfigDict({"limit": 1.0})
    c.horizon = 15  # K: backup-policy steps of each verifier rollout
    c.num_candidates = 4  # N: a_f, N-2 perturbations, the backup action
    c.noise = 0.5  # std of the perturbed candidates
    c.tau = 0.1  # escalate when Q_c(s, a_f) > tau
    c.every = 10  # ... or every k steps (0 = never)
    c.num_steps = 0  # 0 = the run's episode (ceil(episode_length / action_repeat))
    c.episodes = 8  # episodes per condition (and per critic-data condition)
    c.eval_seed = 0
    c.label_horizon = 15  # H of Q_c: violation within H steps
    c.critic_hidden = (64, 64)
    c.critic_steps = 500
    c.ball_radius = 0.3  # box ball (scaled units) sampled for critic data
    c.num_worst = 2  # wind-tunnel worst cases per seed: conditions and verifier models (M = 1 + W)
    c.grid = True  # also the robustness grid (windtunnel_report: worst cases only)
    c.grid_params = ()  # () = the run's eval.grid_params, else the first two spec parameters
    c.grid_scales = (0.5, 1.5)  # multipliers of the nominal value
    # Devices: checked (mesh, no FSDP); the shielded rollouts run replicated for now.
    c.parallel = parallel.default_config()  # mesh, processes (issue 23)
    return c


def smoke() -> ml_collections.ConfigDict:
    c = base()
    c.horizon = 4
    c.num_candidates = 3
    c.num_steps = 10
    c.episodes = 2
    c.label_horizon = 4
    c.critic_hidden = (8,)
    c.critic_steps = 10
    c.grid_scales = (0.5,)
    return c


def cpu() -> ml_collections.ConfigDict:
    return base()


PRESETS = {"smoke": smoke, "cpu": cpu}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return harness.select_preset(PRESETS, preset or "cpu")
