"""Probe environments that pin SAC's bootstrapping, targets, time-outs, temperature and schedule.

(andyljones.com/posts/rl-debugging.) Each probe has a closed-form answer that a one-line bug in
the trainer moves far outside the tolerance; the mutants each test kills are named in its
docstring (issue 13 lists them; all were re-applied one at a time and seen to fail here).

TimeLimitProbe: observation (c, k), c ~ U(−1, 1), k ~ Bernoulli(½), both fixed for an episode;
reward c whatever the action. k = 1: every step is a true terminal, so Q(c, 1, a) = c.
k = 0: the episode only ends by the time limit T = 2 (a time-out, not a terminal), so the value
bootstraps through ``final_obs`` = the same (c, 0): Q(c, 0, a) = c / (1 − γ) (α ≈ 0).
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adarl import train as train_lib
from tests.adarl.test_sac import probe_config

GAMMA = 0.5
TIME_LIMIT = 2


@flax.struct.dataclass
class TLState:
    obs: jax.Array  # f32 (N, 2): (c, k)
    reward: jax.Array  # f32 (N,)
    done: jax.Array  # f32 (N,)
    info: dict  # truncation (N,), final_obs (N, 2), t i32 (N,), rng (N, 2)
    metrics: dict


class TimeLimitProbe:
    """Batched env with auto-reset, following the ``adarl.wrappers.wrap`` contract."""

    observation_size = 2
    action_size = 1

    def __init__(self, action_cost: float = 0.0):
        self.action_cost = action_cost

    @staticmethod
    def _draw(keys):
        def one(k):
            kc, kk = jax.random.split(k)
            c = jax.random.uniform(kc, (), minval=-1.0, maxval=1.0)
            return jnp.stack([c, jax.random.bernoulli(kk).astype(jnp.float32)])

        return jax.vmap(one)(keys)

    def reset(self, keys):
        n = keys.shape[0]
        obs = self._draw(keys)
        info = {
            "truncation": jnp.zeros((n,)),
            "final_obs": obs,
            "t": jnp.zeros((n,), jnp.int32),
            "rng": keys,
        }
        return TLState(obs, jnp.zeros((n,)), jnp.zeros((n,)), info, {})

    def step(self, state, action):
        split = jax.vmap(jax.random.split)(state.info["rng"])
        rng, k_new = split[:, 0], split[:, 1]
        c, k = state.obs[:, 0], state.obs[:, 1]
        reward = c - self.action_cost * jnp.sum(action**2, axis=-1)
        t = state.info["t"] + 1
        terminal = k
        timeout = (1.0 - k) * (t >= TIME_LIMIT)
        done = jnp.maximum(terminal, timeout)
        fresh = self._draw(k_new)
        obs = jnp.where(done[:, None] > 0, fresh, state.obs)
        info = {
            "truncation": timeout,
            "final_obs": state.obs,
            "t": jnp.where(done > 0, 0, t),
            "rng": rng,
        }
        return TLState(obs, reward, done, info, {})


def tl_config(num_updates: int = 30):
    c = probe_config(num_updates=num_updates, steps_per_update=10, grad_updates_per_step=4)
    c.sac.gamma = GAMMA
    c.sac.lr_schedule = "constant"
    c.sac.alpha.init = 1e-4  # α·log π stays < 3e-3: the soft bonus is negligible
    c.sac.tau = 0.05  # targets track within ~20 steps: 1200 steps are ~60 target lags
    # 40 gradient steps per update, d_t = 100: truncations at the ends of updates 3 and 5.
    c.lowrank.interval = 100
    c.lowrank.max_truncations = 2
    return c


def tl_envs(action_cost: float = 0.0):
    env = TimeLimitProbe(action_cost)
    return train_lib.EnvBundle(env, env, 2, 1)


@pytest.fixture(scope="module")
def tl_run():
    config = tl_config()
    fns = train_lib.make_train_fns(config, tl_envs())
    init, update = jax.jit(fns.init), jax.jit(fns.update)
    state = init(jax.random.PRNGKey(0))
    truncations = []
    for _ in range(config.train.num_updates):
        state, _ = update(state)
        truncations.append(int(state.agent.num_truncations))
    return config, fns, state, truncations


def _q(fns, agent, c, k):
    obs = jnp.stack([c, jnp.full_like(c, k)], axis=-1)
    obs = train_lib.normalize_obs(fns.setup, agent.normalizer, obs)  # critics see normalised obs
    act = jax.random.uniform(jax.random.PRNGKey(3), (c.shape[0], 1), minval=-1, maxval=1)
    return np.asarray(fns.nets.critic.apply(agent.critic_params, obs, act, agent.critic_rank))


def test_timeouts_bootstrap_through_final_obs(tl_run):
    """k = 0: Q = c/(1 − γ) = 2c. Kills: time-outs treated as terminal (discount = 1 − done;
    gives 4c/3), bootstrapping from the reset observation instead of ``final_obs`` (4c/3), and
    target critics never Polyak-updated (Q ≈ c + γ·Q_init)."""
    _, fns, state, _ = tl_run
    c = jnp.linspace(-0.9, 0.9, 19)
    q = _q(fns, state.agent, c, 0.0)  # (2, 19)
    np.testing.assert_allclose(q, np.broadcast_to(np.asarray(c) / (1 - GAMMA), q.shape), atol=0.15)


def test_terminals_do_not_bootstrap(tl_run):
    """k = 1: Q = c. Kills: terminals bootstrapping (discount = 1 or 1 − truncation; gives 2c)."""
    _, fns, state, _ = tl_run
    c = jnp.linspace(-0.9, 0.9, 19)
    q = _q(fns, state.agent, c, 1.0)
    np.testing.assert_allclose(q, np.broadcast_to(np.asarray(c), q.shape), atol=0.15)


def test_truncation_schedule_when_interval_differs_from_update(tl_run):
    """40 gradient steps per update, d_t = 100, at most 2: the first truncation ends update 3
    (120 ≥ 100), the second update 5 (200 ≥ 200). Kills: a truncation at k = 0."""
    config, _, state, truncations = tl_run
    assert truncations[:7] == [0, 0, 1, 1, 2, 2, 2]
    assert truncations[-1] == config.lowrank.max_truncations
    assert np.all(np.asarray(state.agent.actor_rank) < config.lowrank.init_rank)


def test_auto_alpha_moves_entropy_towards_target():
    """Automatic temperature (SAC Eq. 18), target entropy −3 far below the initial entropy,
    reward c − a² (concentrating the policy pays): α must fall from 1 and the entropy with it.
    Kills: the temperature loss with its sign flipped (α grows, entropy stays high)."""
    config = tl_config(num_updates=10)
    config.algo = "sac"
    config.sac.alpha.mode = "auto"
    config.sac.alpha.init = 1.0
    config.sac.alpha.lr = 3e-2
    config.sac.alpha.target_entropy_scale = -3.0
    fns = train_lib.make_train_fns(config, tl_envs(action_cost=1.0))
    init, update = jax.jit(fns.init), jax.jit(fns.update)
    state = init(jax.random.PRNGKey(0))
    alphas, entropies = [], []
    for _ in range(config.train.num_updates):
        state, metrics = update(state)
        alphas.append(float(jnp.exp(state.agent.log_alpha)))
        entropies.append(float(metrics["train/entropy"]))
    assert alphas[-1] < 0.3, alphas
    assert np.all(np.diff(alphas) < 0), alphas
    assert entropies[-1] < entropies[0] - 0.5, entropies
