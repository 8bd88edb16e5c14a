"""Training throughput of our SAC vs brax's SAC, and the overhead of AdaRL's rank machinery.

    python -m benchmarks.sac --quick            # CPU-sized
    python -m benchmarks.sac --env CartpoleSwingup --num_envs 128 --batch_size 512 --grad_updates 8

Same task (``adarl.envs.make(env)``), network sizes, batch, update ratio, observation
normalisation and action repeat (1) for every row; one run, so ratios are measured side by side.
A training step = one vectorised env step of ``num_envs`` envs + ``grad_updates`` gradient steps;
an epoch = ``steps`` training steps.

* ours: ``jax.jit(make_train_fns(config).update)`` (one epoch per call), after a warm-up call;
  median over ``repeats`` calls, each ``block_until_ready``. Rows: ``sac_dense`` (plain Dense
  hidden layers), ``sac`` (factorised A·B layers at full rank, no truncation), ``adarl``
  (factorised + a truncation check *and* SVD projection + optimizer reset after every epoch,
  i.e. the worst case; in real runs d_t is many epochs).
* brax: ``brax.training.agents.sac.train`` on the Playground-wrapped env; brax times each epoch
  itself (``training/sps``, excluding evaluation); the first (compiling) epoch is dropped and the
  median of the rest is used.

Shim: brax 0.14.2 calls ``jax.device_put_replicated``, removed in JAX 0.10. On a single host the
replicated value is just the value stacked once per device (pmap places the shards), so the shim
below defines it that way when JAX lacks it. It is installed only by this benchmark.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp

from adarl import envs
from adarl import train as train_lib
from experiments.configs import adarl as configs


def _install_brax_shim() -> None:
    if not hasattr(jax, "device_put_replicated"):

        def device_put_replicated(x, devices):
            return jax.tree.map(lambda a: jnp.stack([jnp.asarray(a)] * len(devices)), x)

        jax.device_put_replicated = device_put_replicated


def _config(args, algo: str, low_rank: bool):

    c = configs.get_config("cpu")
    c.algo = algo
    c.num_seeds = 1
    c.env.name = args.env
    c.env.action_repeat = 1
    c.env.episode_length = args.episode_length
    c.dynamics.sampler = "nominal"
    c.dynamics.params = ()
    c.dynamics.kwargs = {}
    c.train.num_envs = args.num_envs
    c.train.steps_per_update = args.steps
    c.train.grad_updates_per_step = args.grad_updates
    c.train.batch_size = args.batch_size
    c.train.prefill_steps = args.prefill
    c.train.replay_size = max(args.prefill + args.num_envs * args.steps * (args.repeats + 2), 1024)
    c.train.num_updates = args.repeats + 2
    c.network.hidden = tuple(args.hidden)
    c.network.low_rank = low_rank
    c.lowrank.rank_max = min(args.hidden)
    c.lowrank.init_rank = min(args.hidden)
    c.lowrank.interval = args.steps * args.grad_updates  # truncate after every epoch
    return c


def time_ours(args, algo: str, low_rank: bool) -> float:
    """Median seconds per epoch of our jitted update."""

    fns = train_lib.make_train_fns(_config(args, algo, low_rank))
    state = jax.jit(fns.init)(jax.random.PRNGKey(0))
    update = jax.jit(fns.update)
    state, m = update(state)  # compile + warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        state, m = update(state)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    if algo == "adarl":
        assert int(state.agent.num_truncations) == args.repeats + 1
    return statistics.median(times)


def time_brax(args) -> float:
    """Median seconds per epoch of brax's SAC (its own per-epoch timing)."""
    _install_brax_shim()
    from brax.training.agents.sac import networks as sac_networks
    from brax.training.agents.sac import train as sac
    from mujoco_playground import wrapper

    env = envs.make(args.env)
    epoch_env_steps = args.steps * args.num_envs
    sps = []
    sac.train(
        environment=env,
        num_timesteps=args.prefill + epoch_env_steps * (args.repeats + 1),
        episode_length=args.episode_length,
        wrap_env_fn=wrapper.wrap_for_brax_training,
        action_repeat=1,
        num_envs=args.num_envs,
        num_eval_envs=1,
        learning_rate=1e-3,
        discounting=0.99,
        batch_size=args.batch_size,
        num_evals=args.repeats + 2,
        normalize_observations=True,
        min_replay_size=args.prefill,
        max_replay_size=args.prefill + epoch_env_steps * (args.repeats + 2),
        grad_updates_per_step=args.grad_updates,
        network_factory=functools.partial(
            sac_networks.make_sac_networks, hidden_layer_sizes=tuple(args.hidden)
        ),
        progress_fn=lambda step, metrics: sps.append(metrics.get("training/sps")),
    )
    sps = [s for s in sps if s is not None][1:]  # drop the init eval and the compiling epoch
    return statistics.median(epoch_env_steps / s for s in sps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU-sized run")
    p.add_argument("--env", default="CartpoleSwingup")
    p.add_argument("--num_envs", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--grad_updates", type=int, default=8)
    p.add_argument("--steps", type=int, default=200, help="training steps per epoch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prefill", type=int, default=8192)
    p.add_argument("--episode_length", type=int, default=1000)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--skip_brax", action="store_true")
    p.add_argument("--out", default="benchmarks/results/sac.json")
    args = p.parse_args()
    if args.quick:
        args.num_envs, args.batch_size, args.grad_updates = 4, 256, 4
        args.steps, args.repeats, args.prefill = 100, 3, 1024

    rows = {
        "sac_dense": time_ours(args, "sac", low_rank=False),
        "sac": time_ours(args, "sac", low_rank=True),
        "adarl": time_ours(args, "adarl", low_rank=True),
    }
    if not args.skip_brax:
        rows["brax_sac"] = time_brax(args)
    env_steps, grad_steps = args.steps * args.num_envs, args.steps * args.grad_updates
    table = {
        name: {
            "s_per_epoch": t,
            "env_steps_per_s": env_steps / t,
            "grad_steps_per_s": grad_steps / t,
        }
        for name, t in rows.items()
    }
    ratios = {
        "adarl_overhead_vs_sac": rows["adarl"] / rows["sac"] - 1.0,
        "factorised_sac_vs_dense_sac": rows["sac"] / rows["sac_dense"] - 1.0,
    }
    if "brax_sac" in rows:
        ratios["ours_dense_speedup_vs_brax"] = rows["brax_sac"] / rows["sac_dense"]
        ratios["ours_adarl_speedup_vs_brax"] = rows["brax_sac"] / rows["adarl"]
    print(f"{'row':<12}{'s/epoch':>10}{'env steps/s':>14}{'grad steps/s':>14}")
    for name, r in table.items():
        print(
            f"{name:<12}{r['s_per_epoch']:>10.3f}{r['env_steps_per_s']:>14.0f}"
            f"{r['grad_steps_per_s']:>14.0f}"
        )
    for k, v in ratios.items():
        print(f"{k}: {v:+.3f}" if "overhead" in k or "vs_dense" in k else f"{k}: {v:.2f}x")
    result = {
        "args": vars(args),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "rows": table,
        "ratios": ratios,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
