"""A few SAC/AdaRL and SSM LM updates on one 4-device mesh, in one or in two processes (issue 23).

``python multiprocess_script.py single OUT.npz``: one process with 4 forced CPU devices.
``python multiprocess_script.py multi OUT.npz PORT PID``: process PID of 2, each with 2 forced CPU
devices, joined through ``jax.distributed`` (loopback coordinator, gloo collectives) from the
config's ``parallel`` section; process 0 writes the gathered results.

The caller sets XLA_FLAGS (device count) and JAX_PLATFORMS=cpu; tests/adarl/test_parallel.py
compares the two files.
"""

from __future__ import annotations

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from adarl import train as train_lib  # noqa: E402
from experiments.configs import ssm as ssm_configs  # noqa: E402
from harness import parallel  # noqa: E402
from ssm import lm as ssm_lm  # noqa: E402
from ssm import tasks as ssm_tasks  # noqa: E402
from ssm import train as ssm_train  # noqa: E402
from tests.adarl.parallel_script import PointMass, sac_config  # noqa: E402


def gather(tree):
    """Every leaf as a full host numpy array on every process."""
    return [
        np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in jax.tree.leaves(tree)
    ]


def run_sac(config):
    env = PointMass()
    fns = train_lib.make_train_fns(config, train_lib.EnvBundle(env, env, 2, 2))
    seeded = train_lib.make_seeded(fns, 2)
    init, update = seeded.init, seeded.update
    state = init(jax.random.PRNGKey(0))
    for _ in range(2):
        state, _ = update(state)
    return state


def run_lm(config, mesh):
    """Two AdamW steps of the SSM LM with the batch placed with ``data_sharding`` (params
    replicated; GSPMD all-reduces the gradients)."""
    c = ssm_configs.get_config("smoke")
    task = ssm_train.make_task(c)
    model = ssm_train.make_model(c, task)
    opt = ssm_train.make_optimizer(c)
    params = jax.jit(lambda k: ssm_lm.init_params(model, k))(jax.random.PRNGKey(3))
    state = (params, jax.jit(opt.init)(params))
    batch_size = 8
    parallel.check_divisible("train.batch_size", batch_size, mesh)

    @jax.jit
    def step(state, batch):
        params, opt_state = state

        def loss(p):
            logits, _ = model.apply(p, batch.inputs)
            return ssm_tasks.loss_fn(logits, batch)

        l, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), l

    losses = []
    for i in range(2):
        host = jax.device_get(task.sample(jax.random.PRNGKey(10 + i), batch_size))
        batch = jax.device_put(host, parallel.data_sharding(mesh))
        state, l = step(state, batch)
        losses.append(l)
    return state, jnp.stack(losses)


def main():
    mode, out = sys.argv[1], sys.argv[2]
    config = sac_config(4)
    if mode == "multi":
        port, pid = sys.argv[3], int(sys.argv[4])
        config.parallel.coordinator_address = f"127.0.0.1:{port}"
        config.parallel.num_processes = 2
        config.parallel.process_id = pid
        parallel.initialize(config)
        assert jax.process_count() == 2 and jax.local_device_count() == 2
    assert jax.device_count() == 4, jax.devices()
    mesh = parallel.mesh_from_config(config)
    sac = gather(run_sac(config))
    lm_state, lm_losses = run_lm(config, mesh)
    lm_leaves = gather((lm_state, lm_losses))
    if jax.process_index() == 0:
        np.savez(out, *sac, *lm_leaves, n_sac=len(sac))
    print(f"OK {mode} {jax.process_index()}", flush=True)
    if mode == "multi":
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
