"""SAC/AdaRL, PPO/RNAC and the wind tunnel on a 1-device and on a 4-device mesh (issue 23).

Run by tests/adarl/test_parallel.py in a subprocess with 4 forced CPU devices (XLA_FLAGS must be
set before JAX starts); every comparison shares one process so that JAX starts once. Tiny
shapes and a pure-JAX point-mass environment keep compiles short. Prints one ``OK <name>`` line
per check that passed.
"""

from __future__ import annotations

import sys
import tempfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from adarl import ppo, rnac, sharding
from adarl import train as train_lib
from adarl import windtunnel as wt
from experiments.configs import adarl as adarl_configs
from experiments.configs import rnac as rnac_configs
from experiments.configs import windtunnel as wt_configs
from harness import checkpoint

RTOL, ATOL = 1e-4, 1e-5  # GSPMD sums gradients in another order: float32 rounding only


class PointState(NamedTuple):
    obs: jax.Array  # f32 (N, 2)
    reward: jax.Array  # f32 (N,)
    done: jax.Array  # f32 (N,)
    info: dict


class PointMass:
    """Batched 2-D point mass: s' = s + 0.1·a; reward −|s'|²; episodes of 5 steps."""

    observation_size = 2
    action_size = 2

    def reset(self, keys):
        obs = jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)
        n = keys.shape[0]
        info = {"truncation": jnp.zeros((n,)), "final_obs": obs, "t": jnp.zeros((n,)), "rng": keys}
        return PointState(obs, jnp.zeros((n,)), jnp.zeros((n,)), info)

    def step(self, state, action):
        nxt = state.obs + 0.1 * action
        t = state.info["t"] + 1
        done = (t >= 5).astype(jnp.float32)
        keys = jax.vmap(lambda k: jax.random.split(k)[0])(state.info["rng"])
        fresh = self.reset(keys)
        obs = jnp.where(done[:, None] > 0, fresh.obs, nxt)
        info = {"truncation": done, "final_obs": nxt, "t": t * (1 - done), "rng": keys}
        return PointState(obs, -jnp.sum(nxt**2, -1), done, info)


def assert_trees_close(a, b, what):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind in "iub":
            np.testing.assert_array_equal(x, y, err_msg=what)
        else:
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=what)


def sac_config(devices: int):
    c = adarl_configs.base()
    c.num_seeds = 2
    c.env.episode_length = 10
    c.train.num_envs = 4
    c.train.num_updates = 2
    c.train.steps_per_update = 2
    c.train.grad_updates_per_step = 2
    c.train.prefill_steps = 8
    c.train.replay_size = 64
    c.train.batch_size = 8
    c.sac.warmup_steps = 2
    c.network.hidden = (8, 8)
    c.lowrank.rank_max = 8
    c.lowrank.init_rank = 8
    c.lowrank.interval = 4  # a truncation (SVD on the replicated parameters) after update 1
    c.parallel.mesh_shape = (devices,)
    return c


def run_sac(devices: int):
    env = PointMass()
    fns = train_lib.make_train_fns(sac_config(devices), train_lib.EnvBundle(env, env, 2, 2))
    seeded = train_lib.make_seeded(fns, 2)
    init, update = seeded.init, seeded.update
    state = init(jax.random.PRNGKey(0))
    metrics = []
    for _ in range(2):
        state, m = update(state)
        metrics.append(m)
    return state, metrics


def check_sac():
    s1, m1 = run_sac(1)
    s4, m4 = run_sac(4)
    check_checkpoint(s4)
    assert int(np.asarray(s4.agent.num_truncations)[0]) == 1  # the SVD step ran
    assert len(s4.buffer.data.obs.sharding.device_set) == 4
    assert not s4.buffer.data.obs.sharding.is_fully_replicated  # replay split over "data"
    assert s4.buffer.data.obs.addressable_shards[0].data.shape == (2, 16, 2)  # (S, 64/4, O)
    assert jax.tree.leaves(s4.agent.actor_params)[0].sharding.is_fully_replicated
    assert not s4.env_state.obs.sharding.is_fully_replicated  # envs split over "data"
    assert_trees_close(s1, s4, "SAC state")
    assert_trees_close(m1, m4, "SAC metrics")
    print("OK sac")


def check_checkpoint(state):
    """A SAC state sharded on 4 devices is saved, restored onto 1 device and back (orbax)."""
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda x: x.sharding, state)
    with tempfile.TemporaryDirectory() as workdir:
        mngr = checkpoint.manager(workdir)
        checkpoint.save(mngr, 1, state)
        mngr.wait_until_finished()
        on_one = checkpoint.restore(mngr, 1, state, jax.tree.map(lambda _: one, state))
        assert on_one.buffer.data.obs.sharding.device_set == {jax.devices()[0]}
        assert_trees_close(state, on_one, "restored on one device")
        checkpoint.save(mngr, 2, on_one)
        mngr.wait_until_finished()
        back, step = checkpoint.load_state(workdir, state, shardings=shardings)
        mngr.close()
    assert step == 2 and back.buffer.data.obs.sharding == state.buffer.data.obs.sharding
    assert not back.buffer.data.obs.sharding.is_fully_replicated
    assert_trees_close(state, back, "restored on four devices")
    print("OK checkpoint")


def ppo_config(devices: int, algo: str):
    c = rnac_configs.base()
    c.algo = algo
    c.ppo.num_envs = 4
    c.ppo.num_steps = 4
    c.ppo.minibatch_size = 8
    c.ppo.epochs = 2
    c.ppo.num_updates = 2
    c.ppo.hidden = (8,)
    c.parallel.mesh_shape = (devices,)
    return c


def run_ppo(devices: int, algo: str):
    c = ppo_config(devices, algo)
    rnac.validate_config(c)
    uset = rnac.get_uncertainty(c.algo, c.rnac)
    fns = ppo.make_ppo(c.ppo, PointMass(), uset, rnac.ppo_mesh(c))
    state = jax.jit(jax.vmap(fns.init))(jax.random.split(jax.random.PRNGKey(1), 2))
    update = jax.jit(jax.vmap(fns.update))
    for _ in range(2):
        state, metrics = update(state)
    return state, metrics


def check_ppo():
    for algo in ("rnac_ds",):  # PPO plus double sampling: PPO's own path is a subset
        s1, m1 = run_ppo(1, algo)
        s4, m4 = run_ppo(4, algo)
        assert not s4.env_state.obs.sharding.is_fully_replicated
        assert jax.tree.leaves(s4.actor_params)[0].sharding.is_fully_replicated
        assert_trees_close(s1, s4, f"{algo} state")
        assert_trees_close(m1, m4, f"{algo} metrics")
    print("OK ppo")


def wt_return(theta, keys, aux):
    """(n, 2) dynamics, (n, 2) keys, aux f32 (2,) -> (n,): a noisy quadratic bowl."""
    noise = jax.vmap(lambda k: jax.random.normal(k, ()))(keys)
    return -jnp.sum((theta - aux) ** 2, -1) + 0.01 * noise


def run_windtunnel(devices: int):
    config = wt_configs.get_config("smoke")
    config.episodes = 4
    config.parallel.mesh_shape = (devices,)
    wt.validate_config(config)
    space = wt.Space(
        ("a", "b"), *(np.array(v, np.float64) for v in ([1, 1], [1, 1], [0, 0], [3, 3]))
    )
    ball = wt.make_ball("l2", space, 0.5)
    aux = jnp.array([[1.2, 0.9], [0.8, 1.1]], jnp.float32)  # two "seeds"
    return wt.search(
        wt_return, ball, jax.random.PRNGKey(2), aux=aux, searchers=("random", "cmaes"),
        episodes=config.episodes, searcher_kwargs={"random": {"num_samples": 8, "batch": 4},
        "cmaes": {"popsize": 4, "generations": 2}}, mesh=wt.windtunnel_mesh(config),
    )  # fmt: skip


def check_windtunnel():
    r1, r4 = run_windtunnel(1), run_windtunnel(4)
    for a, b in zip(r1, r4, strict=True):
        np.testing.assert_allclose(a.trace.x, b.trace.x, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(a.trace.returns, b.trace.returns, rtol=RTOL, atol=ATOL)
        assert a.worst_return == pytest.approx(b.worst_return, rel=RTOL, abs=ATOL)
    print("OK windtunnel")


def check_bad_mesh():
    """Divisibility and device-count mistakes are one-line ConfigErrors before any compile."""
    c = sac_config(4)
    c.train.batch_size = 6
    with pytest.raises(harness.ConfigError, match=r"config.train.batch_size=6 cannot be split"):
        train_lib.validate(c)
    c = ppo_config(4, "ppo")
    c.ppo.num_envs, c.ppo.minibatch_size = 6, 6
    with pytest.raises(harness.ConfigError, match=r"config.ppo.num_envs=6 cannot be split"):
        rnac.validate_config(c)
    c = wt_configs.get_config("smoke")
    c.episodes, c.parallel.mesh_shape = 2, (4,)
    with pytest.raises(harness.ConfigError, match=r"config.episodes=2 cannot be split"):
        wt.validate_config(c)
    c = sac_config(8)
    with pytest.raises(harness.ConfigError, match=r"needs 8 devices; 4 exist"):
        train_lib.validate(c)
    c = sac_config(4)
    c.parallel.mesh_shape = (-1,)
    assert sharding.trainer_mesh(c, {}, "t").shape == {"data": 4}
    print("OK bad_mesh")


CHECKS = {
    "sac": check_sac,
    "ppo": check_ppo,
    "windtunnel": check_windtunnel,
    "bad_mesh": check_bad_mesh,
}

if __name__ == "__main__":
    assert jax.device_count() == 4, jax.devices()
    for name in sys.argv[1:] or CHECKS:
        CHECKS[name]()
