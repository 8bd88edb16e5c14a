"""Throughput vs number of devices: SAC env+grad steps/s and SSM LM tokens/s (issue 23).

    python -m benchmarks.scaling                       # 1, 2, 4 forced CPU devices
    python -m benchmarks.scaling --real --devices 1,2,4,8   # a GPU/TPU machine's own devices
    python -m benchmarks.scaling --quick               # tiny sizes (CPU check of the script)

One worker process per device count (forced CPU devices need ``XLA_FLAGS`` before JAX starts);
each builds its mesh with ``parallel.mesh_shape=(n,)``, compiles and warms up, then times one
call whenever the driver asks. The driver asks every worker in turn, ``--repeats`` rounds
(interleaved, so drifts in machine load hit every device count alike), and reports the median
and interquartile range per device count, the speed-up over one device and the efficiency
``throughput(n) / (n · throughput(1))``.

* SAC: ``adarl.train`` update (``steps`` training steps of ``num_envs`` env steps plus
  ``grad_updates`` gradient steps of batch ``batch_size``), envs, replay and batches sharded
  over ``"data"``, parameters replicated. The environment is a pure-JAX point mass (the
  trainer's scaling, not a simulator's), unless ``--env`` names an ``adarl.envs`` task.
* LM: AdamW steps of the ``smoke``-sized SSM LM (``--lm_preset``) with the batch placed with
  ``harness.parallel.data_sharding``; tokens/s = batch · length · steps / time.

On CPU, forced devices share the machine's cores: they emulate the partitioning and its
communication, not more compute, so efficiency below 1/n·(cores) is expected there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PointState(NamedTuple):
    obs: object
    reward: object
    done: object
    info: dict


class PointMass:
    """Batched 2-D point mass (s' = s + 0.1·a, reward −|s'|², 50-step episodes)."""

    observation_size = 2
    action_size = 2

    def reset(self, keys):
        import jax  # noqa: PLC0415 (the driver process never imports JAX)
        import jax.numpy as jnp  # noqa: PLC0415 (same)

        obs = jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)
        n = keys.shape[0]
        info = {"truncation": jnp.zeros((n,)), "final_obs": obs, "t": jnp.zeros((n,)), "rng": keys}
        return PointState(obs, jnp.zeros((n,)), jnp.zeros((n,)), info)

    def step(self, state, action):
        import jax  # noqa: PLC0415 (the driver process never imports JAX)
        import jax.numpy as jnp  # noqa: PLC0415 (same)

        nxt = state.obs + 0.1 * action
        t = state.info["t"] + 1
        done = (t >= 50).astype(jnp.float32)
        keys = jax.vmap(lambda k: jax.random.split(k)[0])(state.info["rng"])
        obs = jnp.where(done[:, None] > 0, self.reset(keys).obs, nxt)
        info = {"truncation": done, "final_obs": nxt, "t": t * (1 - done), "rng": keys}
        return PointState(obs, -jnp.sum(nxt**2, -1), done, info)


def sac_workload(args, devices: int):
    """(call, units per call): one jitted SAC update; units = env transitions."""
    import jax  # noqa: PLC0415 (the driver process never imports JAX)

    from adarl import train as train_lib  # noqa: PLC0415 (same)
    from experiments.configs import adarl as configs  # noqa: PLC0415 (same)

    c = configs.base()
    c.algo = "sac_factorised"
    c.env.episode_length = 1000
    c.train.num_envs = args.num_envs
    c.train.steps_per_update = args.steps
    c.train.grad_updates_per_step = args.grad_updates
    c.train.prefill_steps = args.batch_size
    c.train.replay_size = args.replay_size
    c.train.batch_size = args.batch_size
    c.network.hidden = (args.hidden, args.hidden)
    c.lowrank.rank_max = c.lowrank.init_rank = args.hidden
    c.parallel.mesh_shape = (devices,)
    if args.env:
        c.env.name = args.env
        envs = None
    else:
        env = PointMass()
        envs = train_lib.EnvBundle(env, env, 2, 2)
    fns = train_lib.make_train_fns(c, envs)
    state = jax.jit(fns.init)(jax.random.PRNGKey(0))
    update = jax.jit(fns.update)
    box = [state]

    def call():
        box[0], m = update(box[0])
        jax.block_until_ready(m)

    return call, args.num_envs * args.steps


def lm_workload(args, devices: int):
    """(call, tokens per call): ``steps`` AdamW steps of the SSM LM on sharded batches."""
    import jax  # noqa: PLC0415 (the driver process never imports JAX)
    import optax  # noqa: PLC0415 (same)

    from experiments.configs import ssm as ssm_configs  # noqa: PLC0415 (same)
    from harness import parallel  # noqa: PLC0415 (same)
    from ssm import lm, tasks  # noqa: PLC0415 (same)
    from ssm import train as ssm_train  # noqa: PLC0415 (same)

    c = ssm_configs.get_config(args.lm_preset)
    task = ssm_train.make_task(c)
    model = ssm_train.make_model(c, task)
    opt = ssm_train.make_optimizer(c)
    cfg = ssm_configs.get_config(args.lm_preset)
    cfg.parallel = parallel.default_config()
    cfg.parallel.mesh_shape = (devices,)
    mesh = parallel.mesh_from_config(cfg)
    parallel.check_divisible("lm_batch", args.lm_batch, mesh)
    params = jax.jit(lambda k: lm.init_params(model, k))(jax.random.PRNGKey(0))
    state = [(params, jax.jit(opt.init)(params))]
    batches = [
        jax.device_put(
            jax.device_get(task.sample(jax.random.PRNGKey(i), args.lm_batch)),
            parallel.data_sharding(mesh),
        )
        for i in range(args.lm_steps)
    ]

    @jax.jit
    def step(st, batch):
        p, o = st
        grads = jax.grad(lambda q: tasks.loss_fn(model.apply(q, batch.inputs)[0], batch))(p)
        upd, o = opt.update(grads, o, p)
        return optax.apply_updates(p, upd), o

    def call():
        for b in batches:
            state[0] = step(state[0], b)
        jax.block_until_ready(state[0])

    tokens = args.lm_batch * batches[0].inputs.shape[1] * args.lm_steps
    return call, tokens


def worker(args) -> None:
    """Builds both workloads for ``args.worker_devices``, warms up, then times one call per
    ``go`` line on stdin (prints ``<name> <seconds> <units>``)."""
    import jax  # noqa: PLC0415 (the driver process never imports JAX)

    n = args.worker_devices
    assert jax.device_count() >= n, jax.devices()
    loads = {"sac": sac_workload(args, n), "lm": lm_workload(args, n)}
    for call, _ in loads.values():
        call()  # compile
        call()  # warm
    print("ready", flush=True)
    for line in sys.stdin:
        name = line.strip()
        call, units = loads[name]
        t0 = time.perf_counter()
        call()
        print(f"{name} {time.perf_counter() - t0:.6f} {units}", flush=True)


def _worker_args(args, n: int) -> list[str]:
    keep = ("num_envs", "steps", "grad_updates", "batch_size", "replay_size", "hidden",
            "lm_preset", "lm_batch", "lm_steps")  # fmt: skip
    out = [sys.executable, "-m", "benchmarks.scaling", "--worker_devices", str(n)]
    for k in keep:
        out += [f"--{k}", str(getattr(args, k))]
    if args.env:
        out += ["--env", args.env]
    return out


def drive(args) -> dict:
    devices = [int(d) for d in args.devices.split(",")]
    procs = {}
    for n in devices:
        env = dict(os.environ, PYTHONPATH=ROOT)
        if not args.real:
            env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        procs[n] = subprocess.Popen(
            _worker_args(args, n), env=env, cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
    for n, p in procs.items():
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"worker with {n} devices failed to start (see its stderr)")
    times: dict = {name: {n: [] for n in devices} for name in ("sac", "lm")}
    units = {}
    for _ in range(args.repeats):
        for name in ("sac", "lm"):
            for n, p in procs.items():  # interleaved: one call per device count in turn
                p.stdin.write(name + "\n")
                p.stdin.flush()
                got, secs, u = p.stdout.readline().split()
                times[name][n].append(float(secs))
                units[name] = int(u)
    for p in procs.values():
        p.stdin.close()
        p.wait()
    return summarize(times, units, devices)


def summarize(times: dict, units: dict, devices: list[int]) -> dict:
    rows = []
    for name, per_n in times.items():
        base = units[name] / statistics.median(per_n[devices[0]]) * devices[0]
        for n in devices:
            ts = sorted(per_n[n])
            q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0], ts[0], ts[0]]
            tput = units[name] / statistics.median(ts)
            rows.append({
                "workload": name, "devices": n, "repeats": len(ts),
                "median_s": statistics.median(ts), "iqr_s": [q[0], q[2]],
                "throughput": tput, "unit": "env steps/s" if name == "sac" else "tokens/s",
                "speedup": tput / (base / devices[0]), "efficiency": tput / (n * base / devices[0]),
            })  # fmt: skip
    return {"rows": rows}


def table(result: dict) -> str:
    lines = [
        "| workload | devices | throughput | median s/call [IQR] | speed-up | efficiency |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['workload']} | {r['devices']} | {r['throughput']:.0f} {r['unit']} | "
            f"{r['median_s']:.4f} [{r['iqr_s'][0]:.4f}, {r['iqr_s'][1]:.4f}] | "
            f"{r['speedup']:.2f}x | {r['efficiency']:.2f} |"
        )
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--real", action="store_true", help="use the machine's devices (GPU/TPU)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="tiny sizes")
    p.add_argument("--env", default="", help="an adarl.envs task instead of the point mass")
    p.add_argument("--num_envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--grad_updates", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--replay_size", type=int, default=65536)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lm_preset", default="smoke")
    p.add_argument("--lm_batch", type=int, default=64)
    p.add_argument("--lm_steps", type=int, default=4)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "scaling.json"))
    p.add_argument("--worker_devices", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.num_envs, args.steps, args.grad_updates, args.batch_size = 8, 4, 2, 32
        args.replay_size, args.hidden, args.lm_batch, args.lm_steps = 1024, 16, 16, 2
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker_devices:
        worker(args)
        return
    result = drive(args)
    result["args"] = {k: v for k, v in vars(args).items() if k != "worker_devices"}
    result["platform"] = "real devices" if args.real else "forced CPU devices"
    result["cpu_count"] = os.cpu_count()
    print(table(result))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
