"""Configs for ``python -m experiments.windtunnel --workdir RUN_DIR`` (SAFETY_AND_ANALYSIS.md §1.4).

The run directory supplies the task (env, dynamics parameters, robustness grid) and the policies
of all its seeds; this config sets the grid evaluation and the adversarial search.

Presets: ``smoke`` (tiny budgets, tests), ``cpu`` (the README table), ``gpu`` (larger budgets).
"""

from __future__ import annotations

import ml_collections

import harness
from experiments.configs import shield as shield_configs
from harness import parallel


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # search key (candidate sampling)
    c.eval_seed = 0  # evaluation keys of every candidate (common random numbers)
    c.grid = True  # also run the robustness grid (robust_eval.json + heat map)
    c.grid_params = ()  # () = the run's eval.grid_params, else the first two spec parameters
    c.grid_scales = ()  # () = the run's eval.grid_scales
    c.grid_episodes = 0  # 0 = the run's eval.grid_episodes

    c.params = ()  # parameters searched (others nominal); () = the run's whole spec
    c.ball = "l2"  # "box" | "l2" | "wasserstein" (adarl.windtunnel.BALLS)
    c.radius = 0.3  # ε in the spec's scaled units (relative to |nominal|)
    c.radii = ()  # optional increasing sweep (worst case vs ε); () = only `radius`
    c.searchers = ("random", "cmaes")  # adarl.windtunnel.SEARCHERS (+ "grad": slow to compile)
    c.episodes = 2  # evaluation episodes per candidate
    c.cvar_alpha = 0.1
    c.failure_fraction = 0.5  # failure: return < failure_fraction · nominal return
    c.max_failures = 32

    c.random = ml_collections.ConfigDict()
    c.random.num_samples = 64
    c.random.batch = 32
    c.cmaes = ml_collections.ConfigDict()
    c.cmaes.popsize = 16
    c.cmaes.generations = 8
    c.cmaes.sigma = 0.5
    c.grad = ml_collections.ConfigDict()
    c.grad.restarts = 2
    c.grad.steps = 8
    c.grad.lr = 0.2
    # Devices: candidate dynamics (candidates x atoms x episodes) split over 'data'.
    c.parallel = parallel.default_config()  # mesh, processes (issue 23)
    # violation rates with and without the shield on the worst cases found (windtunnel.json's
    # "shield" section; verifier models = nominal + these worst cases): adarl.shield_eval
    c.shield_report = False
    c.shield = shield_configs.get_config("cpu")
    return c


def smoke() -> ml_collections.ConfigDict:
    c = base()
    c.searchers = ("random", "cmaes", "grad")
    c.grid_episodes = 1
    c.episodes = 1
    c.random.num_samples = 4
    c.random.batch = 4
    c.cmaes.popsize = 4
    c.cmaes.generations = 2
    c.grad.restarts = 1
    c.grad.steps = 2
    c.shield = shield_configs.get_config("smoke")
    return c


def cpu() -> ml_collections.ConfigDict:
    return base()


def gpu() -> ml_collections.ConfigDict:
    c = base()
    c.searchers = ("random", "cmaes", "grad")
    c.radii = (0.1, 0.2, 0.3, 0.5)
    c.episodes = 8
    c.random.num_samples = 1024
    c.random.batch = 256
    c.cmaes.popsize = 64
    c.cmaes.generations = 50
    c.grad.restarts = 8
    c.grad.steps = 50
    return c


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return harness.select_preset(PRESETS, preset or "cpu")
