"""Env steps/s per task and batch size: MJX with/without per-episode resampling, vs MuJoCo C.

For every task and batch size N this times, in one run on one machine:

* ``raw``      ``jax.vmap(env.step)`` (no auto-reset, nominal model);
* ``nominal``  ``adarl.wrappers.wrap(env, sampler=None)``: auto-reset, no parameters;
* ``resample`` ``wrap(env, wasserstein sampler over the task's default parameters)``: new
  parameters at every reset, ``apply_params`` on every step (the issue's goal:
  resample / nominal >= 0.95);
* ``mujoco_c`` ``mujoco.rollout`` (``--c-threads`` threads, default 1) stepping the same
  ``mj_model`` for the same number of physics steps (control steps x n_substeps), random
  controls: the physics alone, no observation or reward.

``--gym`` times what faithfulness costs (issue 13): Hopper and Walker2d in both variants, the
brax-MJCF tasks (``hopper``, ``walker2d``: Euler, 4 solver iterations, few contacts) and the
Gymnasium-XML tasks (``hopper_gym``, ``walker2d_gym``: RK4, Newton 100 iterations, all contacts;
:mod:`adarl.gym_tasks`), ``raw`` MJX only, beside MuJoCo C on 2 threads.

Each MJX variant runs K control steps inside one jitted ``lax.scan``; the cache of the jitted
rollout is checked to hold exactly one entry before and after timing. After a warm-up the
variants are timed interleaved for R rounds (``block_until_ready``); rates use the best round
(robust on a shared machine), medians are kept in the JSON. Steps/s counts control (env) steps summed
over the batch. XLA flags, versions and the CPU are recorded with the figures.

Usage::

  python benchmarks/envs.py --quick            # this CPU, a couple of minutes
  python benchmarks/envs.py --tasks hopper,ant --batch 1,64,1024 --out results.json
  python benchmarks/envs.py --gym --batch 1,16,64   # brax vs Gymnasium XML, C on 2 threads
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from adarl import envs
from adarl.dynamics import make_sampler
from adarl.params import param_spec
from adarl.wrappers import wrap

MJX_VARIANTS = ("raw", "nominal", "resample")
GYM_TASKS = "hopper,hopper_gym,walker2d,walker2d_gym"


def _mjx_runner(step, state, n: int, act: int, k: int):
    """A no-arg callable running K control steps of ``step`` over a batch of n (compiled once)."""

    @jax.jit
    def run(state, key):
        def body(s, key_t):
            a = jax.random.uniform(key_t, (n, act), minval=-1.0, maxval=1.0)
            return step(s, a), None

        return jax.lax.scan(body, state, jax.random.split(key, k))[0]

    key = jax.random.PRNGKey(0)
    jax.block_until_ready(run(state, key))  # compile + warm-up
    if run._cache_size() != 1:
        raise RuntimeError(f"rollout compiled {run._cache_size()} times; expected 1")
    return lambda: run(state, key), run


def _mujoco_c_runner(env, n: int, k: int, threads: int = 1):
    """MuJoCo C (``mujoco.rollout`` on ``threads`` threads), same model, K x n_substeps physics
    steps per env."""
    model = env.mj_model
    datas = [mujoco.MjData(model) for _ in range(threads)]
    data = datas[0]
    mujoco.mj_forward(model, data)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = np.zeros(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, state, spec)
    nstep = k * env.n_substeps
    ctrl = np.random.default_rng(0).uniform(-1, 1, size=(n, nstep, model.nu))
    init = np.tile(state, (n, 1))
    data_arg = datas if threads > 1 else data  # a list of MjData asks rollout for threads
    mj_rollout.rollout(model, data_arg, init, ctrl)  # warm-up
    return lambda: mj_rollout.rollout(model, data_arg, init, ctrl)


def bench_task(
    name: str,
    batches: list[int],
    steps: int,
    repeats: int,
    eps: float,
    min_env_steps: int,
    variants: tuple[str, ...] = MJX_VARIANTS,
    c_threads: int = 1,
) -> list[dict]:
    """Rates of the chosen MJX variants and MuJoCo C for one task; variants are timed
    interleaved, round by round, so that load from other processes hits them alike; rates use
    the best (min) time of the rounds and the median is kept alongside."""
    env = envs.make(name)
    spec = param_spec(env)
    sampler = make_sampler("wasserstein", spec, eps=eps, p=2)
    wrapped = {
        "nominal": wrap(env, None, episode_length=1000),
        "resample": wrap(env, sampler, episode_length=1000),
    }
    wrapped = {k: v for k, v in wrapped.items() if k in variants}
    rows = []
    for n in batches:
        # At least min_env_steps env steps per timed call, so short calls at small N are not
        # dominated by scheduler noise.
        k = max(steps, -(-min_env_steps // n))
        keys = jax.random.split(jax.random.PRNGKey(1), n)
        runners, jitted = {}, {}
        if "raw" in variants:
            raw_state = jax.jit(jax.vmap(env.reset))(keys)
            runners["raw"], jitted["raw"] = _mjx_runner(
                jax.vmap(env.step), raw_state, n, env.action_size, k
            )
        for label, benv in wrapped.items():
            state = jax.jit(benv.reset)(keys)
            runners[label], jitted[label] = _mjx_runner(benv.step, state, n, env.action_size, k)
        runners["mujoco_c"] = _mujoco_c_runner(env, n, k, c_threads)
        times = {label: [] for label in runners}
        for _ in range(repeats):
            for label, fn in runners.items():
                t0 = time.perf_counter()
                jax.block_until_ready(fn())
                times[label].append(time.perf_counter() - t0)
        if any(f._cache_size() != 1 for f in jitted.values()):
            raise RuntimeError("a rollout recompiled while timing")
        row = {"task": name, "batch": n, "steps_per_call": k, "n_substeps": env.n_substeps}
        row["params"] = list(spec.names)
        row["mujoco_c_threads"] = c_threads
        for label, ts in times.items():
            row[label] = n * k / min(ts)
            row[label + "_median"] = n * k / statistics.median(ts)
        for a, b in (("resample", "nominal"), ("nominal", "raw"), ("resample", "mujoco_c")):
            row[f"{a}/{b}"] = row[a] / row[b] if a in row and b in row else float("nan")
        row["raw/mujoco_c"] = row["raw"] / row["mujoco_c"] if "raw" in row else float("nan")
        rows.append(row)
        print(_fmt(row), flush=True)
    return rows


_HEADER = (
    f"{'task':<13}{'N':>5}{'raw':>11}{'nominal':>11}{'resample':>11}{'mujoco_c':>11}"
    f"{'res/nom':>9}{'nom/raw':>9}{'res/C':>8}{'raw/C':>8}"
)


def _fmt(r: dict) -> str:
    nan = float("nan")
    return (
        f"{r['task']:<13}{r['batch']:>5}{r.get('raw', nan):>11.0f}{r.get('nominal', nan):>11.0f}"
        f"{r.get('resample', nan):>11.0f}{r['mujoco_c']:>11.0f}{r['resample/nominal']:>9.3f}"
        f"{r['nominal/raw']:>9.3f}{r['resample/mujoco_c']:>8.3f}{r['raw/mujoco_c']:>8.3f}"
    )


def _cpu_model() -> str:
    """``lscpu``'s model name where /proc/cpuinfo has it, else the platform's processor."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CPU run (pendulum, cartpole)")
    parser.add_argument("--tasks", default="pendulum,cartpole,reacher,hopper,walker2d,ant,humanoid")
    parser.add_argument("--batch", default="1,4,16,64,256,1024")
    parser.add_argument("--steps", type=int, default=100, help="control steps per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-env-steps", type=int, default=20000, help="per timed call")
    parser.add_argument("--eps", type=float, default=0.2, help="Wasserstein radius (scaled)")
    parser.add_argument("--out", default="/tmp/adarl_benchmark_envs.json")
    parser.add_argument("--variants", default=",".join(MJX_VARIANTS), help="MJX variants timed")
    parser.add_argument("--c-threads", type=int, default=1, help="mujoco.rollout threads")
    parser.add_argument(
        "--gym", action="store_true", help=f"{GYM_TASKS}, raw MJX only, C on 2 threads"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.batch, args.steps, args.repeats = "pendulum,cartpole", "1,64,512", 50, 5
    if args.gym:
        args.tasks, args.variants, args.c_threads = GYM_TASKS, "raw", 2
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = sorted(set(variants) - set(MJX_VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(MJX_VARIANTS)}")
    tasks = [t for t in args.tasks.split(",") if t]
    batches = [int(b) for b in args.batch.split(",")]
    meta = {
        "jax": jax.__version__,
        "mujoco": mujoco.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "steps_per_call": f"max({args.steps}, {args.min_env_steps} / batch)",
        "repeats": args.repeats,
        "eps": args.eps,
        "mujoco_c_threads": args.c_threads,
        "variants": list(variants),
        "unit": "control steps per second, summed over the batch",
    }
    print(json.dumps(meta))
    print(_HEADER)
    rows = []
    for task in tasks:
        rows += bench_task(
            task,
            batches,
            args.steps,
            args.repeats,
            args.eps,
            args.min_env_steps,
            variants,
            args.c_threads,
        )
    result = {"meta": meta, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
