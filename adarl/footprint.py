"""Device-memory estimate of a SAC/AdaRL run, checked before anything compiles, and the
throughput read back from a finished (or killed) run directory.

The estimate is built from shapes only (``jax.eval_shape``; nothing is allocated or compiled):

* replay: ``num_seeds × train.replay_size × transition bytes``, one transition being
  ``obs, next_obs`` (O floats each), ``action`` (A) and ``reward, discount, truncation``
  (:class:`adarl.types.Transition`), so ``(2·O + A + 3) · 4`` bytes. The jitted update donates
  its state (``adarl.train.make_seeded``), so the buffer is resident once, not twice;
* agent: parameters, target critics, Adam moments and normaliser of every seed, held three
  times (the update's input and output, and the gradients of a SAC step);
* learner: the SAC batch's activations and their gradients, :data:`ACTIVATION_BYTES` per hidden
  unit (``network.hidden`` plus the bottleneck ``lowrank.rank_max``) per sample per seed (about
  nine network passes forward and back: actor, twin critics, target critics);
* environments: the training env state (``num_envs`` per seed) and the evaluation batches
  (``eval.num_episodes`` or the robustness grid's episodes per seed, the larger), each times
  :data:`ENV_WORKSPACE` for the simulator's temporaries (MJX contacts, constraint Jacobians);
* a fixed :data:`RUNTIME_RESERVE_BYTES` for the XLA runtime, compiled code and the SAC batch.

The budget is ``train.device_memory_gb`` when positive; with 0 (the default) it is the first
device's allocator limit (``memory_stats()["bytes_limit"]``: on a GPU that is
``XLA_PYTHON_CLIENT_MEM_FRACTION`` (default 0.75) of its memory), else, where a backend reports
no memory statistics (CPU), the host's physical memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

import harness

GIB = 1024**3
ENV_WORKSPACE = 8  # simulator temporaries per env state byte (a generous MJX bound)
ACTIVATION_BYTES = 64  # per hidden unit and batch sample (16 f32: ~9 passes, fwd + bwd)
RUNTIME_RESERVE_BYTES = 1 * GIB
FIX_FIELDS = (
    "config.train.replay_size",
    "config.num_seeds",
    "config.train.num_envs",
    "config.train.device_memory_gb",
)


def tree_bytes(tree: Any) -> int:
    """Total bytes of the arrays (or ``ShapeDtypeStruct``s) of ``tree``."""
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Bytes of one run (all seeds). ``total`` = replay + 3·agent + learner + env_train +
    env_eval + workspace + reserve; ``checkpoint`` is one checkpoint on disk (replay only if saved)."""

    num_seeds: int
    transition_bytes: int
    replay: int
    agent: int
    learner: int
    env_train: int
    env_eval: int
    workspace: int
    reserve: int
    total: int
    checkpoint: int

    def describe(self, budget: int, source: str, capacity: int) -> str:
        g = lambda b: f"{b / GIB:.3g} GiB"  # noqa: E731
        return (
            f"[memory] estimate {g(self.total)} of a {g(budget)} budget ({source}): replay "
            f"{g(self.replay)} ({self.num_seeds} seeds x {capacity:,} x {self.transition_bytes} B"
            f", donated), agent 3 x {g(self.agent)}, learner {g(self.learner)}, env states {g(self.env_train)} train + "
            f"{g(self.env_eval)} eval, simulator workspace {g(self.workspace)}, runtime "
            f"{g(self.reserve)}; one checkpoint {g(self.checkpoint)} on disk"
        )


def estimate(config: Any, transition: Any, agent: Any, env_state: Any) -> Footprint:
    """The :class:`Footprint` of ``config`` (resolved) from the shapes (arrays or
    ``ShapeDtypeStruct``s) of one seed's transition, agent state and single-env state."""
    seeds = int(config.num_seeds)
    trans, agent, per_env = tree_bytes(transition), tree_bytes(agent), tree_bytes(env_state)
    grid = len(config.eval.grid_scales) ** 2 * int(config.eval.grid_episodes)
    n_eval = max(int(config.eval.num_episodes), grid)
    replay = seeds * int(config.train.replay_size) * trans
    env_train = seeds * int(config.train.num_envs) * per_env
    env_eval = seeds * n_eval * per_env
    workspace = ENV_WORKSPACE * (env_train + env_eval)
    units = sum(int(h) for h in config.network.hidden) + int(config.lowrank.rank_max)
    learner = seeds * int(config.train.batch_size) * units * ACTIVATION_BYTES
    total = (
        replay
        + 3 * seeds * agent
        + learner
        + env_train
        + env_eval
        + workspace
        + RUNTIME_RESERVE_BYTES
    )
    ckpt = seeds * agent + env_train + (replay if config.train.checkpoint_replay else 0)
    return Footprint(
        seeds, trans, replay, seeds * agent, learner, env_train, env_eval, workspace,
        RUNTIME_RESERVE_BYTES, total, ckpt,
    )  # fmt: skip


def device_budget(config: Any) -> tuple[int, str]:
    """(bytes, where the number came from) for ``config.train.device_memory_gb``."""
    gb = float(config.train.device_memory_gb)
    if gb > 0:
        return int(gb * GIB), f"config.train.device_memory_gb={gb:g}"
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{dev.device_kind} bytes_limit"
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(host), f"host memory ({jax.default_backend()} reports no memory_stats)"


def check_fits(config: Any, *shapes: Any, verbose: bool = True) -> Footprint:
    """Prints the estimate (``shapes`` as :func:`estimate`'s) and raises ConfigError naming the
    fields to change when the run cannot fit the budget (see module docstring)."""
    fp = estimate(config, *shapes)
    budget, source = device_budget(config)
    line = fp.describe(budget, source, int(config.train.replay_size))
    if verbose:
        print(line)
    if fp.total > budget:
        raise harness.ConfigError(
            f"the run does not fit: {line.removeprefix('[memory] ')}. Lower "
            f"{', '.join(FIX_FIELDS[:3])} (replay is num_seeds x replay_size x "
            f"{fp.transition_bytes} B), or set {FIX_FIELDS[3]} if the device has more memory"
        )
    return fp


def throughput(workdir: str) -> dict[str, float]:
    """Steady-state speed of a run from its ``metrics.jsonl`` (``perf/update_s`` of every update
    after the first, which includes compilation): median update seconds, env steps/s and
    gradient steps/s summed over the vmapped seeds and per seed, and the first update's time."""
    with open(os.path.join(workdir, "config.json")) as f:
        c = json.load(f)
    times = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "perf/update_s" in row:
                times.append((row["step"], row["perf/update_s"]))
    if len(times) < 2:
        raise ValueError(f"{workdir}: fewer than 2 updates logged perf/update_s ({len(times)})")
    steady = float(np.median([t for step, t in times if step > times[0][0]]))
    t = c["train"]
    env_per_seed = t["num_envs"] * t["steps_per_update"]
    grad_per_seed = t["steps_per_update"] * t["grad_updates_per_step"]
    seeds = c["num_seeds"]
    return {
        "updates_logged": float(len(times)),
        "first_update_s": float(times[0][1]),
        "median_update_s": steady,
        "env_steps_per_s": seeds * env_per_seed / steady,
        "env_steps_per_s_per_seed": env_per_seed / steady,
        "grad_steps_per_s": seeds * grad_per_seed / steady,
        "grad_steps_per_s_per_seed": grad_per_seed / steady,
    }


def print_throughput(workdir: str) -> dict[str, float]:
    """Prints :func:`throughput` as one line (used by benchmarks/gpu_adarl.sh)."""
    tp = throughput(workdir)
    print(f"[throughput] {workdir}: " + ", ".join(f"{k}={v:.4g}" for k, v in tp.items()))
    return tp
