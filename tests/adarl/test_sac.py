"""SAC pieces: tanh-Gaussian density, replay, normaliser, schedule, and a probe environment.

The probe environment (andyljones.com/posts/rl-debugging, as rejax's SAC test): reward 1 and every
step terminal, so Q(s, a) = 1 for all s, a; SAC must learn it.
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adarl import buffers, networks
from adarl import train as train_lib
from adarl.types import Transition
from experiments.configs import adarl as configs


@flax.struct.dataclass
class ProbeState:
    obs: jax.Array  # f32 (N, 2)
    reward: jax.Array  # f32 (N,)
    done: jax.Array  # f32 (N,)
    info: dict
    metrics: dict


class ProbeEnv:
    """Batched probe: random observations, constant reward 1, one-step episodes."""

    observation_size = 2
    action_size = 1

    def __init__(self, reward: float = 1.0):
        self.reward = reward

    def _state(self, keys, reward, done):
        n = keys.shape[0]
        obs = jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)
        info = {"truncation": jnp.zeros((n,)), "rng": keys, "final_obs": obs}
        return ProbeState(obs, jnp.full((n,), reward), jnp.full((n,), done), info, {})

    def reset(self, keys):
        return self._state(keys, 0.0, 0.0)

    def step(self, state, action):
        del action
        keys = jax.vmap(lambda k: jax.random.split(k)[0])(state.info["rng"])
        return self._state(keys, self.reward, 1.0)


def probe_config(**train):
    """Tiny SAC/AdaRL config for the probe envs (independent of the smoke preset)."""
    c = configs.base()
    c.env.episode_length = 40
    c.env.action_repeat = 2
    c.train.replay_size = 2048
    c.train.checkpoint_every = 2
    c.train.eval_every = 2
    c.eval.grid_scales = (0.8, 1.2)
    c.eval.grid_episodes = 1
    c.num_seeds = 1
    c.train.num_envs = 4
    c.train.num_updates = 12
    c.train.steps_per_update = 20
    c.train.grad_updates_per_step = 4
    c.train.prefill_steps = 64
    c.train.batch_size = 64
    c.sac.lr = 3e-3
    c.sac.warmup_steps = 20
    c.network.hidden = (16, 16)
    c.lowrank.rank_max = 16
    c.lowrank.init_rank = 16
    c.lowrank.interval = 80  # one update = 80 gradient steps: truncate at every update ...
    c.lowrank.max_truncations = 4  # ... of the first four, then let SAC converge
    c.eval.num_episodes = 2
    for k, v in train.items():
        c.train[k] = v
    return c


def probe_envs():
    env = ProbeEnv()
    return train_lib.EnvBundle(env, env, 2, 1)


# ---------------------------------------------------------------------------------------------
# Tanh-Gaussian
# ---------------------------------------------------------------------------------------------


def test_tanh_gaussian_log_prob_formula():
    """log π(a) = log N(atanh a; μ, σ) − Σ log(1 − a²) (change of variables), per dimension sum."""
    key = jax.random.PRNGKey(0)
    mean = jnp.array([[0.3, -1.2], [2.0, 0.0]])
    log_std = jnp.array([[-0.5, 0.2], [0.1, -2.0]])
    a, logp = networks.tanh_gaussian_sample(key, mean, log_std)
    u = np.arctanh(np.asarray(a, np.float64))
    std = np.exp(np.asarray(log_std, np.float64))
    ref = (
        -0.5 * ((u - np.asarray(mean)) / std) ** 2
        - np.log(std)
        - 0.5 * np.log(2 * np.pi)
        - np.log(1 - np.asarray(a, np.float64) ** 2)
    ).sum(-1)
    np.testing.assert_allclose(np.asarray(logp), ref, rtol=2e-3, atol=2e-3)


def test_tanh_gaussian_log_prob_matches_monte_carlo():
    """exp(log π) matches a histogram of 400k samples (1-D, bins inside (−0.95, 0.95))."""
    mean, log_std = jnp.array([[0.4]]), jnp.array([[-0.3]])
    keys = jax.random.split(jax.random.PRNGKey(1), 400_000)
    a, _ = jax.vmap(lambda k: networks.tanh_gaussian_sample(k, mean, log_std))(keys)
    a = np.asarray(a).ravel()
    edges = np.linspace(-0.95, 0.95, 20)
    counts, _ = np.histogram(a, edges)
    width = edges[1] - edges[0]
    empirical = counts / (a.size * width)
    # Exact bin averages of the density from a fine grid.
    fine = jnp.linspace(-0.95, 0.95, 19 * 200 + 1)
    u = jnp.arctanh(fine)[:, None]
    dens = np.exp(np.asarray(networks.tanh_gaussian_log_prob_pre(u, mean[0], log_std[0])))
    exact = np.array([dens[i * 200 : (i + 1) * 200 + 1].mean() for i in range(19)])
    np.testing.assert_allclose(empirical, exact, rtol=0.05, atol=0.01)


# ---------------------------------------------------------------------------------------------
# Replay, normaliser, learning rate
# ---------------------------------------------------------------------------------------------


def test_replay_ring_buffer_and_uniform_sampling():
    ex = Transition(
        jnp.zeros(2), jnp.zeros(1), jnp.zeros(()), jnp.zeros(()), jnp.zeros(2), jnp.zeros(())
    )
    buf = buffers.init(5, ex)
    batch = lambda start, n: jax.tree.map(
        lambda x: jnp.broadcast_to(
            jnp.arange(start, start + n, dtype=jnp.float32).reshape((n,) + (1,) * x.ndim),
            (n, *x.shape),
        ),
        ex,
    )
    buf = buffers.insert(buf, batch(0, 3))
    assert int(buf.size) == 3 and int(buf.insert_pos) == 3
    buf = buffers.insert(buf, batch(3, 4))  # wraps: slots hold 5, 6, 2, 3, 4
    assert int(buf.size) == 5 and int(buf.insert_pos) == 2
    np.testing.assert_array_equal(np.asarray(buf.data.reward), [5, 6, 2, 3, 4])
    empty = buffers.insert(buffers.init(8, ex), batch(0, 2))
    s = buffers.sample(empty, jax.random.PRNGKey(0), 1000)
    assert set(np.asarray(s.reward).tolist()) == {0.0, 1.0}  # only valid entries, both drawn
    with pytest.raises(ValueError, match="capacity"):
        buffers.insert(buffers.init(2, ex), batch(0, 3))


def test_learning_rate_schedule_restarts_warmup():
    kw = dict(base=1.0, total_steps=1000, warmup_steps=100, schedule="cosine", min_ratio=0.0)
    lr = lambda s, r: float(train_lib.learning_rate(s, r, **kw))
    cos = lambda s: 0.5 * (1 + np.cos(np.pi * s / 1000))
    assert lr(0, 0) == pytest.approx(0.01)  # (0 + 1)/100
    assert lr(49, 0) == pytest.approx(0.5 * cos(49), rel=1e-5)
    assert lr(300, 0) == pytest.approx(cos(300), rel=1e-5)
    # Reset at step 400: the warm-up restarts on the run-long cosine (jagged schedule).
    assert lr(400, 400) == pytest.approx(0.01 * cos(400), rel=1e-5)
    assert lr(449, 400) == pytest.approx(0.5 * cos(449), rel=1e-5)
    assert lr(600, 400) == pytest.approx(cos(600), rel=1e-5)
    assert lr(1000, 400) == pytest.approx(0.0, abs=1e-7)
    const = dict(kw, schedule="constant")
    assert float(train_lib.learning_rate(700, 400, **const)) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Config validation (before anything compiles)
# ---------------------------------------------------------------------------------------------


def test_config_errors_name_the_field():
    c = probe_config()
    c.algo = "ppo"
    with pytest.raises(ValueError, match="config.algo='ppo'.*'adarl'"):
        train_lib.make_train_fns(c, probe_envs())
    c = probe_config()
    c.lowrank.rule = "bogus"
    with pytest.raises(ValueError, match="lowrank.rule"):
        train_lib.make_train_fns(c, probe_envs())
    c = probe_config()
    c.lowrank.rank_max = 32  # > hidden width 16
    with pytest.raises(ValueError, match="lowrank.rank_max"):
        train_lib.make_train_fns(c, probe_envs())


def test_alpha_loss_moves_temperature_towards_target_entropy():
    """SAC Eq. 18: ∂L/∂log α = −mean(log π + H̄); α grows when the entropy is below target."""
    from adarl import losses

    logp = jnp.array([0.5, 1.5])  # entropy estimate −1.0
    grad = jax.grad(lambda la: losses.alpha_loss(la, logp, -2.0)[0])(jnp.float32(0.3))
    assert float(grad) == pytest.approx(-(1.0 - 2.0))  # = 1 > 0: entropy −1 > target −2, α falls
    grad = jax.grad(lambda la: losses.alpha_loss(la, logp, 0.0)[0])(jnp.float32(0.3))
    assert float(grad) == pytest.approx(-1.0)  # entropy −1 < target 0: α grows


def test_sac_arms_dense_paper_baseline_and_factorised():
    """``sac`` pins the paper's Spinning Up settings (dense, constant lr, no normaliser);
    ``sac_factorised`` keeps AdaRL's factorised layers, cosine and normaliser."""
    c = probe_config()
    c.algo = "sac"
    dense = train_lib.make_train_fns(c, probe_envs())
    assert c.network.low_rank and c.sac.lr_schedule == "cosine"  # the caller's config unchanged
    s = dense.setup
    assert s.n_layers == 0 and not s.norm_on and s.lr_kw["schedule"] == "constant"
    assert s.lr_kw["warmup_steps"] == 0 and not s.algo.truncate
    params = dense.nets.actor.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.ones((1,), int))
    assert "kernel" in params["params"]["mlp"]["hidden_1"]
    c.algo = "sac_factorised"
    fact = train_lib.make_train_fns(c, probe_envs()).setup
    assert fact.n_layers == 1 and fact.norm_on and fact.lr_kw["schedule"] == "cosine"
    assert not fact.algo.truncate and fact.lr_kw["warmup_steps"] == c.sac.warmup_steps
    resolved = train_lib.resolve_config(c.copy_and_resolve_references())
    assert resolved.network.low_rank
