"""PPO for continuous control, pure-functional and jitted, as RNAC's official trainer configures it.

The trainer follows RNAC's PPO (ADARL.md §7.3, [RNAC-code] ``train_rnac.py`` / ``ppo_continuous.py``):
two separate ``tanh`` MLPs (64, 64) for actor and critic, a Gaussian policy with a state-independent
``log_std`` and mean ``tanh(.)`` (actions in [-1, 1]), orthogonal initialisation (gain 1, actor
output gain 0.01), Adam (eps 1e-5) with the learning rate decayed linearly to 0, gradient-norm clip
0.5, GAE(γ=0.99, λ=0.95), clip ε = 0.2, entropy coefficient 0.01, ``K`` epochs over shuffled
minibatches of a rollout, running observation normalisation and reward scaling (division by the
running std of the discounted return).

Robust variants hook in through an :class:`UncertaintySet` (RNAC, :mod:`adarl.rnac`): it may
replace the environment step (double sampling) and subtract a penalty from every TD residual (IPM).
The nominal set gives plain PPO.

A safety shield hooks in through an :data:`adarl.acting.ActionFilter` (``action_filter``, identity
by default): the environment executes the filtered action, while the rollout keeps the policy's
own proposal and its log-probability, so the update stays on-policy and the shield acts as part of
the environment (post-posed shielding; Alshiekh et al. 2018, "Safe RL via shielding", §4).

Deviations from the official PyTorch code, kept as config fields or documented here:

* Running observation statistics are updated once per rollout (parallel Welford/Chan) with the
  statistics of the previous rollout used for acting, instead of after every single step; they
  and the reward scaling use adarl's one normaliser (:mod:`adarl.running_stats`: variance floored
  at 1e-6, identity until two samples were seen) instead of the official ``std + 1e-8``.

As the official code (``dw`` vs ``done``), episodes cut by the time limit are *not* terminal:
GAE bootstraps through ``V(final_obs)``, the observation the step reached before the auto-reset
(:func:`adarl.acting.outcome`), and only the advantage trace is cut at every episode end.

Shapes: ``N`` parallel environments (``config.ppo.num_envs``), ``T`` rollout length per environment
(``config.ppo.num_steps``), ``O`` observation size, ``A`` action size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from adarl import acting, running_stats, sharding
from adarl.running_stats import RunningStats

LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


class Actor(nn.Module):
    """Gaussian policy: mean ``tanh(MLP(obs))`` (..., A) and a state-independent ``log_std`` (A,)."""

    action_size: int
    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = obs
        for i, width in enumerate(self.hidden):
            x = nn.tanh(
                nn.Dense(width, kernel_init=nn.initializers.orthogonal(1.0), name=f"hidden_{i}")(x)
            )
        mean = nn.tanh(
            nn.Dense(self.action_size, kernel_init=nn.initializers.orthogonal(0.01), name="out")(x)
        )
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,))
        return mean, jnp.broadcast_to(log_std, mean.shape)


class Critic(nn.Module):
    """State value ``V(obs)`` (...,) from a ``tanh`` MLP."""

    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        for i, width in enumerate(self.hidden):
            x = nn.tanh(
                nn.Dense(width, kernel_init=nn.initializers.orthogonal(1.0), name=f"hidden_{i}")(x)
            )
        return nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="out")(x)[..., 0]


def gaussian_log_prob(action: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log N(action; mean, exp(log_std)²) summed over the last (action) axis; (...,) f32."""
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * LOG_2PI, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """Entropy of a diagonal Gaussian, summed over the last axis; (...,) f32."""
    return jnp.sum(0.5 + 0.5 * LOG_2PI + log_std, axis=-1)


# ---------------------------------------------------------------------------------------------
# Losses and advantages (module level so that tests can check them against hand arithmetic)
# ---------------------------------------------------------------------------------------------


def clipped_surrogate_loss(
    logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, clip_eps: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped objective (Schulman et al. 2017, Eq. 7), negated as a loss.

    ``L = -mean( min( r·Â, clip(r, 1-ε, 1+ε)·Â ) )`` with ``r = exp(logp - old_logp)``.

    Args:
      logp, old_logp, advantages: f32 (B,) new and behaviour log-probabilities, advantages.
      clip_eps: ε.

    Returns:
      (loss f32 (), metrics: ``clip_frac`` (fraction of clipped ratios), ``approx_kl``).
    """
    ratio = jnp.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -jnp.mean(jnp.minimum(unclipped, clipped))
    metrics = {
        "clip_frac": jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)),
        "approx_kl": jnp.mean((ratio - 1.0) - (logp - old_logp)),
    }
    return loss, metrics


def value_loss(values: jax.Array, targets: jax.Array) -> jax.Array:
    """Unclipped mean-squared value error, as RNAC's PPO (``F.mse_loss``); f32 ()."""
    return jnp.mean((values - targets) ** 2)


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminals: jax.Array,
    dones: jax.Array,
    gamma: float,
    lam: float,
    td_penalty: jax.Array | float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation as a reverse ``lax.scan`` (Schulman et al. 2016, Eq. 16).

    ``δ_t = r_t + γ(1-term_t)V(s'_t) - V(s_t) - penalty`` and ``Â_t = δ_t + γλ(1-done_t)Â_{t+1}``.
    ``s'_t`` is the state the step reached *before* any auto-reset, so an episode cut by the time
    limit still bootstraps (``term`` = 0, ``done`` = 1), as RNAC's PPO (``dw`` vs ``done``). The
    penalty is RNAC-IPM's ``weight_reg·‖critic‖`` (0 for PPO and RNAC-DS).

    Args:
      rewards, values, next_values, terminals, dones: f32 (T, N); ``terminals[t]`` is 1 when the
        step from t reached a true terminal state; ``dones[t]`` when it ended the episode for any
        reason (the trace is cut there).
      gamma, lam: discount γ and GAE λ.
      td_penalty: scalar subtracted from every TD residual.

    Returns:
      (advantages f32 (T, N), value targets ``advantages + values`` f32 (T, N)).
    """
    deltas = rewards + gamma * (1.0 - terminals) * next_values - values - td_penalty

    def backward(carry, xs):
        delta, done = xs
        adv = delta + gamma * lam * (1.0 - done) * carry
        return adv, adv

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(deltas[0]), (deltas, dones), reverse=True, unroll=16
    )
    return advantages, advantages + values


def gae_reference(rewards, values, next_values, terminals, dones, gamma, lam, td_penalty=0.0):
    """Plain Python-loop GAE (numpy), the reference for :func:`gae` in tests."""
    import numpy as np

    rewards, values, next_values, terminals, dones = (
        np.asarray(a, np.float64) for a in (rewards, values, next_values, terminals, dones)
    )
    adv = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * (1 - terminals[t]) * next_values[t] - values[t] - td_penalty
        running = delta + gamma * lam * (1 - dones[t]) * running
        adv[t] = running
    return adv, adv + values


# ---------------------------------------------------------------------------------------------
# Uncertainty sets (RNAC hooks; the nominal set is plain PPO)
# ---------------------------------------------------------------------------------------------

ValueFn = Callable[[jax.Array], jax.Array]  # raw obs (..., O) -> V (...,)


class UncertaintySet(NamedTuple):
    """How a robust actor-critic changes PPO's data collection and TD target.

    step: ``(env, env_state, actions (N, A), value_fn, key) -> env_state`` takes one environment
      step; double sampling draws several candidate next states and keeps an adversarial one.
    td_penalty: ``critic_params -> f32 ()`` subtracted from every TD residual (IPM).
    """

    step: Callable[[Any, Any, jax.Array, ValueFn, jax.Array], Any]
    td_penalty: Callable[[Any], jax.Array]


def nominal_step(env, env_state, actions, value_fn, key):
    del value_fn, key
    return env.step(env_state, actions)


NOMINAL = UncertaintySet(step=nominal_step, td_penalty=lambda critic_params: jnp.zeros(()))


# ---------------------------------------------------------------------------------------------
# State and trainer
# ---------------------------------------------------------------------------------------------


class PPOState(flax.struct.PyTreeNode):
    """The whole PPO training carry (one seed).

    actor_params / critic_params: Flax variable dicts of :class:`Actor` / :class:`Critic`.
    actor_opt_state / critic_opt_state: optax states (grad clip + Adam + linear schedule).
    obs_stats: RunningStats over observations, mean/m2 f32 (O,).
    ret_stats: RunningStats over the discounted return used for reward scaling, f32 ().
    disc_return: f32 (N,) running discounted return of each env slot (reward scaling).
    env_state: batched environment state (N envs).
    episode_return: f32 (N,) undiscounted return of the running episode of each slot.
    last_return: f32 () mean return of the most recently finished episodes.
    update_step: i32 () PPO iterations done.
    env_steps: i32 () environment transitions collected.
    key: PRNG key.
    """

    actor_params: Any
    critic_params: Any
    actor_opt_state: Any
    critic_opt_state: Any
    obs_stats: RunningStats
    ret_stats: RunningStats
    disc_return: jax.Array
    env_state: Any
    episode_return: jax.Array
    last_return: jax.Array
    update_step: jax.Array
    env_steps: jax.Array
    key: jax.Array


class Rollout(NamedTuple):
    """A rollout, leaves (T, N, ...): raw obs f32 (O,), action f32 (A,), logp, reward (scaled),
    raw_reward, done (episode ended), terminal (true terminal state), value V(s), next_value
    V(s') of the state reached before any auto-reset, all f32 ()."""

    obs: jax.Array
    action: jax.Array
    logp: jax.Array
    reward: jax.Array
    raw_reward: jax.Array
    done: jax.Array
    terminal: jax.Array
    value: jax.Array
    next_value: jax.Array


class PPOFns(NamedTuple):
    """init(key) -> PPOState; update(state) -> (state, metrics); policy(state) -> policy_fn;
    apply((actor_params, obs_stats), obs) -> deterministic action; setup: the :class:`Setup`."""

    init: Callable[[jax.Array], PPOState]
    update: Callable[[PPOState], tuple[PPOState, dict[str, jax.Array]]]
    policy: Callable[[PPOState], Callable[[jax.Array], jax.Array]]
    actor: Actor
    critic: Critic
    apply: Callable[[Any, jax.Array], jax.Array]
    setup: Any


def validate_ppo_config(ppo: Any) -> None:
    """Raises ValueError naming the field for an out-of-range PPO hyperparameter."""
    ints = ("num_envs", "num_steps", "epochs", "minibatch_size", "num_updates")
    for name in ints:
        v = ppo[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"config.ppo.{name}={v!r} must be an integer >= 1")
    batch = ppo.num_envs * ppo.num_steps
    if batch % ppo.minibatch_size:
        raise ValueError(
            f"config.ppo.minibatch_size={ppo.minibatch_size} must divide num_envs*num_steps={batch}"
        )
    for name, lo, hi in (
        ("lr", 0.0, None),
        ("gamma", 0.0, 1.0),
        ("gae_lambda", 0.0, 1.0),
        ("clip_eps", 0.0, None),
        ("ent_coef", 0.0, None),
        ("max_grad_norm", 0.0, None),
    ):
        v = ppo[name]
        if not isinstance(v, (int, float)) or v < lo or (hi is not None and v > hi):
            raise ValueError(f"config.ppo.{name}={v!r} must lie in [{lo}, {hi or 'inf'}]")


class Setup(NamedTuple):
    """What PPO's step functions read besides their state (built once by :func:`make_setup`).

    ppo: the ``config.ppo`` ConfigDict; env: the batched training env; uncertainty: the RNAC
    uncertainty set; actor, critic: the networks; actor_tx, critic_tx: their optimisers;
    packer: env state <-> checkpointable carry; n_envs (N), n_steps (T), n_minibatches, obs_size;
    action_filter: proposal -> executed action (:func:`adarl.acting.identity_filter`: none).
    """

    ppo: Any
    env: Any
    uncertainty: UncertaintySet
    actor: Actor
    critic: Critic
    actor_tx: optax.GradientTransformation
    critic_tx: optax.GradientTransformation
    packer: acting.EnvPacker
    n_envs: int
    n_steps: int
    n_minibatches: int
    obs_size: int
    mesh: Any = None  # jax.sharding.Mesh: envs and minibatches split over "data" (adarl.sharding)
    action_filter: acting.ActionFilter = acting.identity_filter


def make_tx(ppo: Any, total_grad_steps: int) -> optax.GradientTransformation:
    """Grad-norm clip + Adam(eps) with the learning rate decayed linearly to 0 (``anneal_lr``)."""
    lr = optax.linear_schedule(ppo.lr, 0.0, total_grad_steps) if ppo.anneal_lr else ppo.lr
    return optax.chain(
        optax.clip_by_global_norm(ppo.max_grad_norm), optax.adam(lr, eps=ppo.adam_eps)
    )


def make_setup(
    ppo: Any,
    env: Any,
    uncertainty: UncertaintySet = NOMINAL,
    mesh: Any = None,
    action_filter: acting.ActionFilter = acting.identity_filter,
) -> Setup:
    validate_ppo_config(ppo)
    n_envs, n_steps = ppo.num_envs, ppo.num_steps
    n_minibatches = n_envs * n_steps // ppo.minibatch_size
    total_grad_steps = ppo.num_updates * ppo.epochs * n_minibatches
    return Setup(
        ppo=ppo,
        env=env,
        uncertainty=uncertainty,
        actor=Actor(int(env.action_size), tuple(ppo.hidden)),
        critic=Critic(tuple(ppo.hidden)),
        actor_tx=make_tx(ppo, total_grad_steps),
        critic_tx=make_tx(ppo, total_grad_steps),
        packer=acting.EnvPacker.for_env(env, n_envs),
        n_envs=n_envs,
        n_steps=n_steps,
        n_minibatches=n_minibatches,
        obs_size=int(env.observation_size),
        mesh=mesh,
        action_filter=action_filter,
    )


def norm_obs(s: Setup, stats: RunningStats, obs: jax.Array) -> jax.Array:
    return running_stats.normalize(stats, obs) if s.ppo.normalize_obs else obs


def init(s: Setup, key: jax.Array) -> PPOState:
    key, k_actor, k_critic, k_env = jax.random.split(key, 4)
    dummy = jnp.zeros((s.obs_size,))
    actor_params = s.actor.init(k_actor, dummy)
    critic_params = s.critic.init(k_critic, dummy)
    env_state = s.env.reset(jax.random.split(k_env, s.n_envs))
    returns = acting.returns_init(s.n_envs)
    env_state = sharding.data(s.mesh, env_state, s.n_envs)
    return PPOState(
        actor_params=actor_params,
        critic_params=critic_params,
        actor_opt_state=s.actor_tx.init(actor_params),
        critic_opt_state=s.critic_tx.init(critic_params),
        obs_stats=running_stats.init((s.obs_size,)),
        ret_stats=running_stats.init(()),
        disc_return=jnp.zeros((s.n_envs,)),
        env_state=s.packer.pack(env_state),
        episode_return=returns.running,
        last_return=returns.last,
        update_step=jnp.zeros((), jnp.int32),
        env_steps=jnp.zeros((), jnp.int32),
        key=key,
    )


class RolloutCarry(NamedTuple):
    """The carry of the rollout scan: env_state (unpacked), key, returns (acting.Returns),
    episodes f32 () finished in this rollout, disc_return f32 (N,) running discounted return."""

    env_state: Any
    key: jax.Array
    returns: acting.Returns
    episodes: jax.Array
    disc_return: jax.Array


def rollout_step(s: Setup, state: PPOState, carry: RolloutCarry, _=None):
    """One env step with the current policy; returns (carry, (Rollout row, discounted return,
    :class:`adarl.acting.FilterInfo`)). The env executes ``s.action_filter``'s action; the row
    keeps the proposal."""
    key, k_act, k_step = jax.random.split(carry.key, 3)
    carry = carry._replace(env_state=sharding.data(s.mesh, carry.env_state, s.n_envs))
    obs = carry.env_state.obs
    value_fn = functools.partial(critic_value, s, state)
    mean, log_std = s.actor.apply(state.actor_params, norm_obs(s, state.obs_stats, obs))
    noise = jax.random.normal(k_act, mean.shape)
    # RNAC's PPO clips the sampled action to the bounds and scores the clipped action.
    action = jnp.clip(mean + jnp.exp(log_std) * noise, -1.0, 1.0)
    logp = gaussian_log_prob(action, mean, log_std)
    # fold_in leaves k_step as it was: an identity filter keeps every random stream unchanged
    executed, filtered = s.action_filter(carry.env_state, action, jax.random.fold_in(k_step, 1))
    next_state = s.uncertainty.step(s.env, carry.env_state, executed, value_fn, k_step)
    out = acting.outcome(next_state)
    returns, finished = acting.track_returns(carry.returns, out.reward, out.done)
    disc = carry.disc_return * s.ppo.gamma + out.reward
    row = Rollout(
        obs, action, logp, out.reward, out.reward, out.done, out.terminal, value_fn(obs),
        value_fn(out.next_obs),
    )  # fmt: skip
    new = RolloutCarry(next_state, key, returns, carry.episodes + finished, disc * (1.0 - out.done))
    return new, (row, disc, filtered)


def critic_value(s: Setup, state: PPOState, obs: jax.Array) -> jax.Array:
    """V of raw observations (..., O) -> (...,) under the current observation statistics."""
    return s.critic.apply(state.critic_params, norm_obs(s, state.obs_stats, obs))


def rollout(s: Setup, state: PPOState) -> tuple[PPOState, Rollout, dict[str, jax.Array]]:
    """``T`` steps of ``N`` envs, rewards scaled by the running std of the discounted return."""
    carry0 = RolloutCarry(
        s.packer.unpack(state.env_state),
        state.key,
        acting.Returns(state.episode_return, state.last_return),
        jnp.zeros(()),
        state.disc_return,
    )
    carry, (traj, discs, filtered) = jax.lax.scan(
        functools.partial(rollout_step, s, state), carry0, None, length=s.n_steps
    )
    ret_stats = state.ret_stats
    if s.ppo.reward_scaling:
        # RewardScaling of RNAC's PPO: divide by the running std of the discounted return.
        ret_stats = running_stats.update(ret_stats, discs.reshape(-1))
        traj = traj._replace(reward=traj.reward / running_stats.std(ret_stats))
    new_state = state.replace(
        env_state=s.packer.pack(carry.env_state),
        key=carry.key,
        episode_return=carry.returns.running,
        last_return=carry.returns.last,
        disc_return=carry.disc_return,
        ret_stats=ret_stats,
        env_steps=state.env_steps + s.n_envs * s.n_steps,
    )
    metrics = {
        "train/return": carry.returns.last,
        "train/episodes": carry.episodes,
        "train/reward": traj.raw_reward.mean(),
    }
    if s.action_filter is not acting.identity_filter:
        metrics["shield/call_rate"] = filtered.called.mean()
        metrics["shield/intervention_rate"] = filtered.intervened.mean()
    return new_state, traj, metrics


def actor_loss(s: Setup, actor_params, obs, action, old_logp, advantages):
    """Clipped surrogate minus ``ent_coef`` · entropy; (loss f32 (), metrics)."""
    mean, log_std = s.actor.apply(actor_params, obs)
    logp = gaussian_log_prob(action, mean, log_std)
    pg_loss, pg_metrics = clipped_surrogate_loss(logp, old_logp, advantages, s.ppo.clip_eps)
    entropy = gaussian_entropy(log_std).mean()
    return pg_loss - s.ppo.ent_coef * entropy, {**pg_metrics, "entropy": entropy}


class Learner(NamedTuple):
    """The carry of the epoch/minibatch scans: parameters and optimiser states."""

    actor_params: Any
    critic_params: Any
    actor_opt_state: Any
    critic_opt_state: Any


class Batch(NamedTuple):
    """A flattened rollout (B = N·T leading): data Rollout, advantages, targets f32 (B,), and the
    observation statistics the rollout acted with (obs are normalised with them)."""

    data: Rollout
    advantages: jax.Array
    targets: jax.Array
    obs_stats: RunningStats


def minibatch_step(s: Setup, batch: Batch, learner: Learner, idx: jax.Array):
    """One Adam step of actor and critic on the rows ``idx`` of ``batch``."""
    mb = sharding.data(s.mesh, jax.tree.map(lambda x: x[idx], batch.data))
    obs = norm_obs(s, batch.obs_stats, mb.obs)

    def actor_obj(p):
        return actor_loss(s, p, obs, mb.action, mb.logp, batch.advantages[idx])

    def critic_obj(p):
        return value_loss(s.critic.apply(p, obs), batch.targets[idx])

    (a_loss, m), a_grads = jax.value_and_grad(actor_obj, has_aux=True)(learner.actor_params)
    c_loss, c_grads = jax.value_and_grad(critic_obj)(learner.critic_params)
    a_upd, a_opt = s.actor_tx.update(a_grads, learner.actor_opt_state, learner.actor_params)
    c_upd, c_opt = s.critic_tx.update(c_grads, learner.critic_opt_state, learner.critic_params)
    learner = Learner(
        optax.apply_updates(learner.actor_params, a_upd),
        optax.apply_updates(learner.critic_params, c_upd),
        a_opt,
        c_opt,
    )
    return learner, {"actor_loss": a_loss, "value_loss": c_loss, **m}


def epoch(s: Setup, batch: Batch, learner: Learner, key: jax.Array):
    """One pass over shuffled minibatches."""
    perm = jax.random.permutation(key, s.n_envs * s.n_steps)
    step = functools.partial(minibatch_step, s, batch)
    return jax.lax.scan(step, learner, perm.reshape(s.n_minibatches, -1))


def make_batch(s: Setup, state: PPOState, traj: Rollout, penalty: jax.Array) -> Batch:
    """GAE over the rollout, flattened (advantages normalised when configured)."""
    advantages, targets = gae(
        traj.reward, traj.value, traj.next_value, traj.terminal, traj.done,
        s.ppo.gamma, s.ppo.gae_lambda, penalty,
    )  # fmt: skip
    flat = jax.tree.map(lambda x: x.reshape((s.n_envs * s.n_steps,) + x.shape[2:]), traj)
    adv = advantages.reshape(-1)
    if s.ppo.normalize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    flat, adv, targets = sharding.data(s.mesh, (flat, adv, targets.reshape(-1)))
    return Batch(flat, adv, targets, state.obs_stats)


def update(s: Setup, state: PPOState) -> tuple[PPOState, dict[str, jax.Array]]:
    """One PPO iteration: rollout, GAE, ``epochs`` passes of minibatch Adam steps."""
    state, traj, metrics = rollout(s, state)
    penalty = jax.lax.stop_gradient(s.uncertainty.td_penalty(state.critic_params))
    batch = make_batch(s, state, traj, penalty)
    obs_stats = state.obs_stats
    if s.ppo.normalize_obs:
        obs_stats = running_stats.update(obs_stats, traj.obs.reshape(-1, s.obs_size))
    key, k_perm = jax.random.split(state.key)
    learner = Learner(
        state.actor_params, state.critic_params, state.actor_opt_state, state.critic_opt_state
    )
    learner, loss_metrics = jax.lax.scan(
        functools.partial(epoch, s, batch), learner, jax.random.split(k_perm, s.ppo.epochs)
    )
    learner = sharding.replicated(s.mesh, learner)
    state = state.replace(
        actor_params=learner.actor_params,
        critic_params=learner.critic_params,
        actor_opt_state=learner.actor_opt_state,
        critic_opt_state=learner.critic_opt_state,
        obs_stats=obs_stats,
        update_step=state.update_step + 1,
        key=key,
    )
    metrics.update({f"loss/{k}": v.mean() for k, v in loss_metrics.items()})
    metrics["loss/td_penalty"] = penalty
    metrics["train/log_std"] = learner.actor_params["params"]["log_std"].mean()
    return state, metrics


def policy_apply(s: Setup, params: tuple[Any, RunningStats], obs: jax.Array) -> jax.Array:
    """Deterministic action (the Gaussian mean) of raw obs (..., O) -> (..., A), with
    ``params = (actor_params, obs_stats)`` as a traced argument (one compile for every seed)."""
    actor_params, obs_stats = params
    return s.actor.apply(actor_params, norm_obs(s, obs_stats, obs))[0]


def policy(s: Setup, state: PPOState) -> Callable[[jax.Array], jax.Array]:
    """Deterministic policy (the Gaussian mean) on raw observations (..., O) -> (..., A)."""
    return functools.partial(policy_apply, s, (state.actor_params, state.obs_stats))


def make_ppo(
    ppo: Any,
    env: Any,
    uncertainty: UncertaintySet = NOMINAL,
    mesh: Any = None,
    action_filter: acting.ActionFilter = acting.identity_filter,
) -> PPOFns:
    """Builds PPO's pure ``init``/``update`` functions for a batched environment.

    Args:
      ppo: the ``config.ppo`` ConfigDict (fields in ``experiments/configs/rnac.py``).
      env: a batched environment (``adarl.wrappers.wrap`` contract): ``reset(keys (N, 2))``,
        ``step(state, actions (N, A))``, ``observation_size``, ``action_size``; its state has
        ``obs`` (N, O), ``reward`` (N,), ``done`` (N,).
      uncertainty: the RNAC uncertainty set (nominal: plain PPO).
      mesh: optional :class:`jax.sharding.Mesh` (:func:`adarl.sharding.trainer_mesh`): envs,
        rollouts and minibatches split over its ``"data"`` axis, parameters replicated.
      action_filter: the shield between proposal and env step (identity: none).
    """
    s = make_setup(ppo, env, uncertainty, mesh, action_filter)
    bind = functools.partial
    return PPOFns(
        init=bind(init, s),
        update=bind(update, s),
        policy=bind(policy, s),
        actor=s.actor,
        critic=s.critic,
        apply=bind(policy_apply, s),
        setup=s,
    )


def make_train_fn(
    ppo: Any,
    env: Any,
    uncertainty: UncertaintySet = NOMINAL,
    mesh: Any = None,
    action_filter: acting.ActionFilter = acting.identity_filter,
):
    """``train(key) -> (final PPOState, metrics stacked over updates)``: the whole run, jittable.

    ``jax.vmap(train)(keys)`` trains several seeds at once (STYLE.md convention 2).
    """
    fns = make_ppo(ppo, env, uncertainty, mesh, action_filter)

    def train(key: jax.Array):
        return jax.lax.scan(lambda s, _: fns.update(s), fns.init(key), None, length=ppo.num_updates)

    return train
