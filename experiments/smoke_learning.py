"""Does a ``smoke`` preset learn? Uniform-random-policy returns beside the trained ones, per seed.

    python -m experiments.smoke_learning --algo adarl --seeds 3 [--set train.num_updates=12 ...]
    python -m experiments.smoke_learning --algo rnac --seeds 3

Trains ``experiments/configs/<algo>.py:smoke`` with ``num_seeds`` vmapped seeds into a temporary
workdir and prints one JSON line: the random policy's mean return over the same number of
nominal-dynamics evaluation episodes, the trained per-seed deterministic returns, and the wall
time. The smoke tests' learning thresholds (tests/adarl/) were set from this script's output.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from adarl import rnac, robust_eval, tasks
from adarl import train as adarl_train
from experiments.configs import adarl as adarl_configs
from experiments.configs import rnac as rnac_configs


def random_returns(env, key: jax.Array, episodes: int, steps: int, action_size: int) -> np.ndarray:
    """f64 (episodes,) undiscounted returns of uniform actions in [-1, 1] (first episode)."""
    k_reset, k_act = jax.random.split(key)

    def step(carry, k):
        state, ret, alive = carry
        act = jax.random.uniform(k, (episodes, action_size), minval=-1.0, maxval=1.0)
        state = env.step(state, act)
        ret = ret + alive * state.reward
        return (state, ret, alive * (1.0 - state.done.astype(jnp.float32))), None

    state = env.reset(jax.random.split(k_reset, episodes))
    init = (state, jnp.zeros((episodes,)), jnp.ones((episodes,)))
    (_, ret, _), _ = jax.lax.scan(step, init, jax.random.split(k_act, steps))
    return np.asarray(ret, np.float64)


def _apply(config, assignments: list[str]) -> None:
    for item in assignments:
        name, value = item.split("=", 1)
        *path, leaf = name.split(".")
        node = config
        for p in path:
            node = node[p]
        node[leaf] = type(node[leaf])(json.loads(value)) if value[0] in "[(" else json.loads(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=("adarl", "rnac"), default="adarl")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], help="dotted.field=json_value")
    args = parser.parse_args()
    cfgs = adarl_configs if args.algo == "adarl" else rnac_configs
    config = cfgs.get_config(args.preset)
    config.num_seeds = args.seeds
    _apply(config, args.set)
    task = tasks.make_task(config, train_sampler=False)
    episodes = config.eval.num_episodes if args.algo == "adarl" else config.eval.episodes
    steps = robust_eval.num_steps(config)
    # One rollout (one compile) for every seed's episodes.
    rand = random_returns(
        task.eval_env, jax.random.PRNGKey(0), episodes * args.seeds, steps, task.action_size
    ).reshape(args.seeds, episodes)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        if args.algo == "adarl":
            summary = adarl_train.train_and_evaluate(config, workdir, progress=False)
            trained = summary["robustness"]["nominal"]
            extra = {"grid_min": summary["robustness"]["grid_min"]}
        else:
            rnac.train_and_evaluate(config, workdir)
            trained = _last_eval_per_seed(workdir)
            extra = {}
    out = {
        "algo": args.algo,
        "preset": args.preset,
        "set": args.set,
        "random_per_seed": [float(r.mean()) for r in rand],
        "trained_per_seed": [float(x) for x in trained],
        "wall_s": round(time.perf_counter() - start, 1),
        **extra,
    }
    print(json.dumps(out))


def _last_eval_per_seed(workdir: str) -> list[float]:
    """Per-seed nominal returns of the final checkpoint (the harness logs only mean and std)."""
    policies = rnac.load_policies(workdir)
    config = policies.config
    _, eval_env, spec = rnac.make_task(config)
    key = jax.random.PRNGKey(config.seed + 10_000)

    def one(params):
        policy = functools.partial(policies.apply, params)
        steps = robust_eval.num_steps(config)
        return rnac._nominal_returns(eval_env, spec, policy, key, config.eval.episodes, steps)

    return np.asarray(jax.jit(jax.vmap(one))(policies.params)).mean(-1).tolist()


if __name__ == "__main__":
    main()
