"""Configs for ``python -m experiments.adarl`` (SAC / AdaRL / Parseval, ADARL.md §2.7, §6, §7).

Presets (``--config experiments/configs/adarl.py:<preset>``):

* ``smoke``: seconds on CPU (used by tests).
* ``cpu``: CartpoleSwingup (action repeat 8) with pole and cart masses drawn per episode from a
  ±30% box, 20k gradient steps, d_t = 4k, 5 vmapped seeds; evaluated on a pole × cart mass grid
  from 0.5× to 2× nominal.
* ``hopper``, ``walker2d``, ``ant``, ``humanoid``: the paper's hyperparameters (64-64 ReLU, Adam
  3e-3, β = 0.98, d_t = 1M (0.7M Walker2d), Spinning Up's batch 100, γ 0.99, τ 0.005, α 0.2) with
  the OMPO dynamics schedule, for a GPU. ``<preset>_parseval`` selects the Parseval baseline,
  ``<preset>_sac`` the paper's SAC baseline and ``<preset>_sac_factorised`` AdaRL's network
  without truncation. 80 envs step together, each step followed by 80 gradient steps (Spinning
  Up's ratio of one gradient step per env step); the replay is not checkpointed
  (``train.checkpoint_replay``) and a memory estimate is checked before start
  (``train.device_memory_gb``, :mod:`adarl.footprint`).
* ``cpu_robust``: a CartpoleSwingup task where AdaRL's claim can be tested in about half an
  hour per arm on 2 cores (wider perturbations incl. actuator gear, 0.25-4x grid, 9
  truncations), with its arms ``cpu_robust_sac``, ``cpu_robust_sac_factorised``,
  ``cpu_robust_rank3`` and ``cpu_robust_rank8`` (fixed low-rank oracles).
* ``gpu_smoke``: the hopper pipeline in about two minutes on one GPU (128 envs, 2 seeds).

``--config.algo=adarl|sac_factorised|parseval`` switches the upper level with everything else
equal; ``--config.algo=sac`` is the paper's Spinning Up baseline, which also pins a dense
network, a constant learning rate without warm-up and no observation normalisation
(``adarl.train.PAPER_SAC``).
"""

from __future__ import annotations

import ml_collections

import harness
from harness import parallel


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.algo = "adarl"  # "adarl" | "sac" | "sac_factorised" | "parseval" (adarl.train.ALGOS)
    c.seed = 0  # root seed; seeds of the vmapped runs are split from it
    c.num_seeds = 1  # runs vmapped in one process

    c.env = ml_collections.ConfigDict()
    c.env.name = "PendulumSwingup"  # adarl.envs.names()
    c.env.overrides = ml_collections.ConfigDict()  # kwargs of adarl.envs.make
    c.env.episode_length = 1000  # in simulator control steps (as brax/playground wrappers)
    c.env.action_repeat = 1

    c.dynamics = ml_collections.ConfigDict()
    c.dynamics.sampler = "nominal"  # training dynamics: nominal | box | wasserstein | ompo
    c.dynamics.params = ()  # parameter names; () = the env's default_params
    c.dynamics.kwargs = ml_collections.ConfigDict()  # kwargs of adarl.dynamics.make_sampler

    c.train = ml_collections.ConfigDict()
    c.train.num_envs = 8  # parallel envs (transitions per training step)
    c.train.num_updates = 100  # harness updates (log/checkpoint unit)
    c.train.steps_per_update = 250  # training steps per update
    c.train.grad_updates_per_step = 8  # gradient steps per training step (update ratio)
    c.train.prefill_steps = 5000  # uniform-random transitions before learning (Spinning Up 10k)
    c.train.replay_size = 1_000_000
    c.train.batch_size = 256
    c.train.checkpoint_every = 10  # updates
    c.train.eval_every = 5  # updates (0: only at the end)
    # Checkpoints hold no replay unless True; a resumed run then refills train.prefill_steps
    # transitions with its restored policy before learning again (adarl.train.fill).
    c.train.checkpoint_replay = False
    # Memory budget of the pre-start check (adarl.footprint); 0: the device's allocator limit
    # (GPU: memory_stats bytes_limit), or host memory where the backend reports none (CPU).
    c.train.device_memory_gb = 0.0

    c.sac = ml_collections.ConfigDict()
    c.sac.lr = 3e-3  # AdaRL App. A.2.1 (both networks)
    c.sac.lr_schedule = "cosine"  # "cosine" (run-long, ADARL.md §6) | "constant"
    c.sac.warmup_steps = 2000  # linear warm-up at the start and after every reset (§2.6)
    c.sac.min_lr_ratio = 0.0  # cosine floor (min LR 0, ADARL.md §6)
    c.sac.gamma = 0.99
    c.sac.tau = 0.005  # Polyak 0.995
    c.sac.reward_scaling = 1.0
    c.sac.alpha = ml_collections.ConfigDict()
    c.sac.alpha.mode = "fixed"  # "fixed" (Spinning Up) | "auto" (SAC v2 / brax)
    c.sac.alpha.init = 0.2  # α (fixed) or its initial value (auto)
    c.sac.alpha.lr = 3e-4  # temperature Adam lr (brax's hard-coded value, surfaced)
    c.sac.alpha.target_entropy_scale = -1.0  # H̄ = scale·|A| (SAC: −1; brax: −0.5)

    c.network = ml_collections.ConfigDict()
    c.network.hidden = (64, 64)  # AdaRL App. A.2.1
    c.network.low_rank = True  # factorise hidden->hidden layers as A·B (all algos, equal nets)
    c.network.normalize_observations = True
    c.network.diag_layer = False  # Parseval's per-unit scale layer (ADARL.md §7.2)
    c.network.learnable_input_scale = False  # Parseval's learnable input scale

    c.lowrank = ml_collections.ConfigDict()
    c.lowrank.rank_max = 64  # R: bottleneck width (fixed; the mask sets the rank)
    c.lowrank.init_rank = 64  # "high" initial rank (ADARL.md §6)
    c.lowrank.rule = "eq14"  # "eq14" | "eq16" | "energy" (adarl.lowrank registry)
    c.lowrank.beta = 0.98
    c.lowrank.interval = 1_000_000  # d_t in gradient steps
    c.lowrank.max_truncations = 0  # 0: unlimited
    c.lowrank.target_mode = "copy"  # target critics at a truncation: "copy" | "project"

    c.parseval = ml_collections.ConfigDict()
    c.parseval.lam = 1e-4  # λ ∈ {1e-3, 1e-4, 1e-5} (AdaRL A.2.1)
    c.parseval.s = 2.0
    c.parseval.width_scaling = True  # [PAR-code]'s (64/width)² factor

    c.eval = ml_collections.ConfigDict()
    c.eval.num_episodes = 10  # deterministic episodes per evaluation (ADARL.md §6)
    c.eval.grid_params = ()  # two (or one) parameter names; () = first two of the spec
    c.eval.grid_scales = (0.5, 0.75, 1.0, 1.25, 1.5)  # multipliers of the nominal value
    c.eval.grid_values = ml_collections.ConfigDict()  # name -> absolute values (nominal-0 params)
    c.eval.grid_episodes = 4  # episodes per grid point
    # Devices: envs, replay and sampled batches split over 'data'; parameters replicated.
    c.parallel = parallel.default_config()  # mesh, processes (issue 23)
    return c


def smoke() -> ml_collections.ConfigDict:
    """CartpoleBalance, 100 decisions of 0.04 s per episode (max return 100): AdaRL learns to
    balance (uniform-random policy 38-48, trained 97-100 over 3 seeds; the numbers and command
    are in tests/adarl/test_train.py)."""
    c = base()
    c.num_seeds = 2
    c.env.name = "CartpoleBalance"
    c.env.overrides.ctrl_dt = 0.04  # 4 physics steps per decision in one scan (cheap compile)
    c.env.episode_length = 100
    c.env.action_repeat = 1
    c.dynamics.sampler = "box"
    c.dynamics.params = ("mass:pole_1", "mass:cart")
    c.train.num_envs = 8
    c.train.num_updates = 12
    c.train.steps_per_update = 100
    c.train.grad_updates_per_step = 8  # the critic is the bottleneck: 4 per step did not learn
    c.train.prefill_steps = 800
    c.train.replay_size = 16384
    c.train.batch_size = 64
    c.train.checkpoint_every = 5
    c.train.eval_every = 5
    c.network.hidden = (32, 32)
    c.lowrank.rank_max = 32
    c.lowrank.init_rank = 32
    c.lowrank.interval = 2000
    c.sac.lr = 3e-3
    c.sac.lr_schedule = "constant"
    c.sac.warmup_steps = 100
    c.sac.gamma = 0.95  # 0.8 s horizon is enough to balance; values settle faster
    c.sac.alpha.mode = "auto"
    c.sac.alpha.init = 0.1
    c.eval.num_episodes = 4
    c.eval.grid_scales = (0.5, 2.0)
    c.eval.grid_episodes = 2
    return c


def cpu() -> ml_collections.ConfigDict:
    c = base()
    c.num_seeds = 5
    c.env.name = "CartpoleSwingup"
    c.env.episode_length = 1000
    c.env.action_repeat = 8  # PlaNet/CURL setting: 125 decisions per episode
    c.dynamics.sampler = "box"  # pole and cart mass, nominal ± 30% (uniform per episode)
    c.dynamics.params = ("mass:pole_1", "mass:cart")
    c.dynamics.kwargs.width = 0.3
    c.train.num_envs = 4
    c.train.num_updates = 20
    c.train.steps_per_update = 250  # 1000 transitions, 1000 gradient steps per update
    c.train.grad_updates_per_step = 4
    c.train.prefill_steps = 1000
    c.train.replay_size = 100_000
    c.train.batch_size = 256
    c.train.checkpoint_every = 5
    c.train.eval_every = 5
    c.sac.lr = 1e-3
    c.sac.warmup_steps = 500  # scaled down with d_t (paper: 2000 at d_t = 1M)
    c.lowrank.interval = 4000  # d_t: truncations at 4k, 8k, 12k, 16k gradient steps
    c.eval.grid_scales = (0.5, 0.75, 1.0, 1.5, 2.0)  # beyond the ±30% training box
    return c


def cpu_robust() -> ml_collections.ConfigDict:
    """AdaRL's claim made testable on 2 CPU cores (issue 14): CartpoleSwingup (action repeat 8)
    trained under pole mass, cart mass and actuator gear drawn per episode from nominal ± 50%,
    evaluated on a pole mass × gear grid from 0.25× to 4×; 100k gradient steps (and env steps),
    d_t = 10k (9 truncations, the last followed by 10k steps), a constant learning rate with a
    500-step warm-up after every truncation, 5 vmapped seeds. Arms with everything else equal:
    ``cpu_robust`` (AdaRL, Eq. 14), ``cpu_robust_sac`` (dense, the paper's SAC),
    ``cpu_robust_sac_factorised`` (full rank 64), ``cpu_robust_rank3`` (fixed rank 2·d_a + 1,
    Tiwari et al.'s intrinsic rank) and ``cpu_robust_rank8``."""
    c = cpu()
    c.dynamics.params = ("mass:pole_1", "mass:cart", "gear:slide")
    c.dynamics.kwargs.width = 0.5
    c.train.num_updates = 100  # 1000 env steps and 1000 gradient steps each
    c.train.checkpoint_every = 10
    c.train.eval_every = 10
    c.sac.lr_schedule = "constant"
    c.sac.warmup_steps = 500
    c.lowrank.interval = 10_000
    c.eval.grid_params = ("mass:pole_1", "gear:slide")
    c.eval.grid_scales = (0.25, 0.5, 1.0, 2.0, 4.0)
    c.eval.grid_episodes = 4
    return c


def cpu_robust_reacher() -> ml_collections.ConfigDict:
    """The second task of issue 14 (on CartpoleSwingup no fixed low rank beat full rank, so that
    task cannot show the claim): ReacherEasy (action repeat 4, d_a = 2), arm mass, hand mass
    and shoulder gear drawn per episode from nominal ± 50%, evaluated on an arm mass × shoulder
    gear grid 0.25-4×; schedule, truncations and budget as ``cpu_robust``. Arms:
    ``cpu_robust_reacher`` (AdaRL), ``cpu_robust_reacher_sac`` (dense),
    ``cpu_robust_reacher_sac_factorised`` (full rank 64), ``cpu_robust_reacher_rank5`` (fixed
    rank 2·d_a + 1) and ``cpu_robust_reacher_rank10``."""
    c = cpu_robust()
    c.env.name = "ReacherEasy"
    c.env.action_repeat = 4  # PlaNet's setting for reacher: 250 decisions per episode
    c.dynamics.params = ("mass:arm", "mass:hand", "gear:shoulder")
    c.eval.grid_params = ("mass:arm", "gear:shoulder")
    return c


def _fixed_rank(rank: int, task=None) -> ml_collections.ConfigDict:
    """The oracle arm: AdaRL's factorised network held at ``rank`` from the start (the dense
    initialisation's best rank-``rank`` approximation), never truncated."""
    c = _with_algo((task or cpu_robust)(), "sac_factorised")
    c.lowrank.init_rank = rank
    return c


def _paper(env: str, interval: int) -> ml_collections.ConfigDict:
    c = base()
    c.num_seeds = 5
    c.env.name = env.lower()  # adarl.envs registers the Gym-style tasks in lower case
    c.env.episode_length = 1000
    c.dynamics.sampler = "ompo"
    c.dynamics.kwargs.task = env.lower()
    # Spinning Up steps one env and does 50 gradient steps every 50 env steps: one gradient step
    # per env step. Here 80 envs step together and 80 gradient steps follow, the same ratio
    # (so d_t in gradient steps is also d_t env steps), with the GPU busy on 80 envs at a time.
    c.train.num_envs = 80
    c.train.steps_per_update = 50  # 50 x 80 = 4000 env steps: Spinning Up's epoch
    c.train.grad_updates_per_step = 80  # update-to-data ratio 80 / 80 = 1
    c.train.num_updates = 1000  # 4M steps: 4 phases at d_t = 1M (a guess, ADARL.md §6)
    c.train.prefill_steps = 10_000
    c.train.replay_size = 1_000_000
    c.train.batch_size = 100
    c.train.checkpoint_every = 25
    c.train.eval_every = 25
    c.sac.lr = 3e-3
    c.lowrank.interval = interval
    c.eval.grid_scales = (0.5, 0.75, 1.0, 1.25, 1.5)
    if env in ("Ant", "Humanoid"):
        # Gravity and head-wind (default_params' first two); the wind's nominal is 0, so both
        # axes are absolute: OMPO's ranges g ∈ [9.81, 19.62], W ∈ 1 ± 0.5, plus calm air.
        c.eval.grid_params = ("gravity", "wind")
        c.eval.grid_values.gravity = (9.81, 12.2625, 14.715, 17.1675, 19.62)
        c.eval.grid_values.wind = (0.0, 0.5, 1.0, 1.5, 2.0)
    return c


def gpu_smoke() -> ml_collections.ConfigDict:
    """The hopper pipeline (MJX, OMPO schedule, AdaRL with truncations, robustness grid) in
    about two minutes on one GPU: 128 envs, update-to-data ratio 1, 2 seeds, 20 updates of 2048
    env and gradient steps, truncations every 10k gradient steps."""
    c = _paper("Hopper", 10_240)
    c.num_seeds = 2
    c.train.num_envs = 128
    c.train.steps_per_update = 16
    c.train.grad_updates_per_step = 128
    c.train.num_updates = 20
    c.train.prefill_steps = 8192
    c.train.replay_size = 100_000
    c.train.checkpoint_every = 10
    c.train.eval_every = 10
    c.sac.warmup_steps = 500
    c.eval.num_episodes = 4
    c.eval.grid_scales = (0.5, 1.0, 1.5)
    c.eval.grid_episodes = 2
    return c


PRESETS = {
    "smoke": smoke,
    "cpu": cpu,
    "hopper": lambda: _paper("Hopper", 1_000_000),
    "walker2d": lambda: _paper("Walker2d", 700_000),
    "ant": lambda: _paper("Ant", 1_000_000),
    "humanoid": lambda: _paper("Humanoid", 1_000_000),
    "gpu_smoke": gpu_smoke,
    "cpu_robust": cpu_robust,
    "cpu_robust_rank3": lambda: _fixed_rank(3),  # 2·d_a + 1 for CartpoleSwingup (d_a = 1)
    "cpu_robust_rank8": lambda: _fixed_rank(8),
    "cpu_robust_reacher": cpu_robust_reacher,
    "cpu_robust_reacher_rank5": lambda: _fixed_rank(5, cpu_robust_reacher),  # d_a = 2
    "cpu_robust_reacher_rank10": lambda: _fixed_rank(10, cpu_robust_reacher),
}
PAPER_PRESETS = ("hopper", "walker2d", "ant", "humanoid")
for _name in ("cpu", "cpu_robust", "cpu_robust_reacher", "hopper", "walker2d", "ant", "humanoid"):
    for _algo in ("parseval", "sac", "sac_factorised"):
        PRESETS[f"{_name}_{_algo}"] = (lambda f, a: lambda: _with_algo(f(), a))(
            PRESETS[_name], _algo
        )


def _with_algo(c: ml_collections.ConfigDict, algo: str) -> ml_collections.ConfigDict:
    c.algo = algo
    return c


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return harness.select_preset(PRESETS, preset or "cpu")
