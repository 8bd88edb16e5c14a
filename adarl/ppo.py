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

Deviations from the official PyTorch code, kept as config fields or documented here:

* Episodes cut by the time limit are treated as terminal in GAE (the auto-reset overwrites the
  final observation), as in purejaxrl.
* Running observation statistics are updated once per rollout (parallel Welford/Chan) with the
  statistics of the previous rollout used for acting, instead of after every single step.

Shapes: ``N`` parallel environments (``config.ppo.num_envs``), ``T`` rollout length per environment
(``config.ppo.num_steps``), ``O`` observation size, ``A`` action size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

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
# Running statistics (observation normalisation and reward scaling)
# ---------------------------------------------------------------------------------------------


class RunningStats(NamedTuple):
    """Running mean/variance (Chan et al. parallel update).

    mean: f32 (...,); m2: f32 (...,) sum of squared deviations; count: f32 () samples seen.
    """

    mean: jax.Array
    m2: jax.Array
    count: jax.Array


def stats_init(shape: tuple[int, ...]) -> RunningStats:
    return RunningStats(jnp.zeros(shape), jnp.zeros(shape), jnp.zeros(()))


def stats_update(stats: RunningStats, batch: jax.Array) -> RunningStats:
    """Merges a batch (B, ...) into the running statistics."""
    n = jnp.asarray(batch.shape[0], jnp.float32)
    b_mean = batch.mean(axis=0)
    b_m2 = ((batch - b_mean) ** 2).sum(axis=0)
    total = stats.count + n
    delta = b_mean - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.m2 + b_m2 + delta**2 * stats.count * n / total
    return RunningStats(mean, m2, total)


def stats_std(stats: RunningStats, eps: float = 1e-8) -> jax.Array:
    var = jnp.where(stats.count > 1, stats.m2 / jnp.maximum(stats.count, 1.0), 1.0)
    return jnp.sqrt(var + eps)


def normalize(stats: RunningStats, x: jax.Array, clip: float = 10.0) -> jax.Array:
    """``clip((x - mean)/std)``; identity before any statistics were gathered."""
    z = (x - stats.mean) / stats_std(stats)
    z = jnp.where(stats.count > 0, z, x)
    return jnp.clip(z, -clip, clip)


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
    """init(key) -> PPOState; update(state) -> (state, metrics); policy(state) -> policy_fn."""

    init: Callable[[jax.Array], PPOState]
    update: Callable[[PPOState], tuple[PPOState, dict[str, jax.Array]]]
    policy: Callable[[PPOState], Callable[[jax.Array], jax.Array]]
    actor: Actor
    critic: Critic


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


def make_ppo(ppo: Any, env: Any, uncertainty: UncertaintySet = NOMINAL) -> PPOFns:
    """Builds PPO's pure ``init``/``update`` functions for a batched environment.

    Args:
      ppo: the ``config.ppo`` ConfigDict (fields in ``experiments/configs/rnac.py``).
      env: a batched environment (``adarl.wrappers.wrap`` contract): ``reset(keys (N, 2))``,
        ``step(state, actions (N, A))``, ``observation_size``, ``action_size``; its state has
        ``obs`` (N, O), ``reward`` (N,), ``done`` (N,).
      uncertainty: the RNAC uncertainty set (nominal: plain PPO).
    """
    validate_ppo_config(ppo)
    n_envs, n_steps = ppo.num_envs, ppo.num_steps
    n_minibatches = n_envs * n_steps // ppo.minibatch_size
    total_grad_steps = ppo.num_updates * ppo.epochs * n_minibatches
    obs_size, act_size = int(env.observation_size), int(env.action_size)
    actor = Actor(act_size, tuple(ppo.hidden))
    critic = Critic(tuple(ppo.hidden))

    def make_tx():
        lr = optax.linear_schedule(ppo.lr, 0.0, total_grad_steps) if ppo.anneal_lr else ppo.lr
        return optax.chain(
            optax.clip_by_global_norm(ppo.max_grad_norm), optax.adam(lr, eps=ppo.adam_eps)
        )

    actor_tx, critic_tx = make_tx(), make_tx()

    def norm_obs(stats, obs):
        return normalize(stats, obs) if ppo.normalize_obs else obs

    # Orbax refuses zero-size arrays (mjx.Data has some, e.g. ``act`` without activations), so the
    # carry stores the env state with those leaves as None, rebuilt from this shape template.
    env_template = jax.eval_shape(env.reset, jax.random.split(jax.random.PRNGKey(0), n_envs))

    def pack_env(env_state):
        return jax.tree.map(lambda x: None if x.size == 0 else x, env_state)

    def unpack_env(packed):
        return jax.tree.map(
            lambda t, x: jnp.zeros(t.shape, t.dtype) if x is None else x, env_template, packed
        )

    def init(key: jax.Array) -> PPOState:
        key, k_actor, k_critic, k_env = jax.random.split(key, 4)
        dummy = jnp.zeros((obs_size,))
        actor_params = actor.init(k_actor, dummy)
        critic_params = critic.init(k_critic, dummy)
        env_state = env.reset(jax.random.split(k_env, n_envs))
        return PPOState(
            actor_params=actor_params,
            critic_params=critic_params,
            actor_opt_state=actor_tx.init(actor_params),
            critic_opt_state=critic_tx.init(critic_params),
            obs_stats=stats_init((obs_size,)),
            ret_stats=stats_init(()),
            disc_return=jnp.zeros((n_envs,)),
            env_state=pack_env(env_state),
            episode_return=jnp.zeros((n_envs,)),
            last_return=jnp.zeros(()),
            update_step=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
            key=key,
        )

    def rollout(state: PPOState) -> tuple[PPOState, Rollout, dict[str, jax.Array]]:
        def value_fn(obs):
            return critic.apply(state.critic_params, norm_obs(state.obs_stats, obs))

        def step(carry, _):
            env_state, key, ep_ret, last_ret, n_done, disc = carry
            key, k_act, k_step = jax.random.split(key, 3)
            obs = env_state.obs
            mean, log_std = actor.apply(state.actor_params, norm_obs(state.obs_stats, obs))
            noise = jax.random.normal(k_act, mean.shape)
            # RNAC's PPO clips the sampled action to the bounds and scores the clipped action.
            action = jnp.clip(mean + jnp.exp(log_std) * noise, -1.0, 1.0)
            logp = gaussian_log_prob(action, mean, log_std)
            value = value_fn(obs)
            next_state = uncertainty.step(env, env_state, action, value_fn, k_step)
            reward, done = next_state.reward, next_state.done.astype(jnp.float32)
            info = next_state.info
            truncation = info.get("truncation", jnp.zeros_like(done)).astype(jnp.float32)
            next_value = value_fn(info.get("final_obs", next_state.obs))
            ep_ret = ep_ret + reward
            finished = jnp.sum(done)
            last_ret = jnp.where(
                finished > 0, jnp.sum(ep_ret * done) / jnp.maximum(finished, 1.0), last_ret
            )
            n_done = n_done + finished
            disc = disc * ppo.gamma + reward
            tr = Rollout(
                obs, action, logp, reward, reward, done, done * (1 - truncation), value, next_value
            )
            carry = (next_state, key, ep_ret * (1.0 - done), last_ret, n_done, disc * (1.0 - done))
            return carry, (tr, disc)

        carry0 = (
            unpack_env(state.env_state),
            state.key,
            state.episode_return,
            state.last_return,
            jnp.zeros(()),
            state.disc_return,
        )
        (env_state, key, ep_ret, last_ret, n_done, disc), (traj, discs) = jax.lax.scan(
            step, carry0, None, length=n_steps
        )
        ret_stats = state.ret_stats
        if ppo.reward_scaling:
            # RewardScaling of RNAC's PPO: divide by the running std of the discounted return.
            ret_stats = stats_update(ret_stats, discs.reshape(-1))
            traj = traj._replace(reward=traj.reward / stats_std(ret_stats))
        new_state = state.replace(
            env_state=pack_env(env_state),
            key=key,
            episode_return=ep_ret,
            last_return=last_ret,
            disc_return=disc,
            ret_stats=ret_stats,
            env_steps=state.env_steps + n_envs * n_steps,
        )
        metrics = {
            "train/return": last_ret,
            "train/episodes": n_done,
            "train/reward": traj.raw_reward.mean(),
        }
        return new_state, traj, metrics

    def actor_loss_fn(actor_params, obs, action, old_logp, advantages):
        mean, log_std = actor.apply(actor_params, obs)
        logp = gaussian_log_prob(action, mean, log_std)
        pg_loss, pg_metrics = clipped_surrogate_loss(logp, old_logp, advantages, ppo.clip_eps)
        entropy = gaussian_entropy(log_std).mean()
        return pg_loss - ppo.ent_coef * entropy, {**pg_metrics, "entropy": entropy}

    def update(state: PPOState) -> tuple[PPOState, dict[str, jax.Array]]:
        state, traj, metrics = rollout(state)
        obs_stats = state.obs_stats
        penalty = jax.lax.stop_gradient(uncertainty.td_penalty(state.critic_params))
        advantages, targets = gae(
            traj.reward, traj.value, traj.next_value, traj.terminal, traj.done,
            ppo.gamma, ppo.gae_lambda, penalty,
        )  # fmt: skip
        if ppo.normalize_obs:
            obs_stats = stats_update(obs_stats, traj.obs.reshape(-1, obs_size))
        flat = jax.tree.map(lambda x: x.reshape((n_envs * n_steps,) + x.shape[2:]), traj)
        adv_flat, tgt_flat = advantages.reshape(-1), targets.reshape(-1)
        if ppo.normalize_advantages:
            adv_flat = (adv_flat - adv_flat.mean()) / (adv_flat.std() + 1e-8)

        def minibatch_step(carry, idx):
            a_params, c_params, a_opt, c_opt = carry
            batch = jax.tree.map(lambda x: x[idx], flat)

            obs = norm_obs(state.obs_stats, batch.obs)

            def actor_obj(p):
                return actor_loss_fn(p, obs, batch.action, batch.logp, adv_flat[idx])

            def critic_obj(p):
                return value_loss(critic.apply(p, obs), tgt_flat[idx])

            (a_loss, m), a_grads = jax.value_and_grad(actor_obj, has_aux=True)(a_params)
            c_loss, c_grads = jax.value_and_grad(critic_obj)(c_params)
            a_upd, a_opt = actor_tx.update(a_grads, a_opt, a_params)
            c_upd, c_opt = critic_tx.update(c_grads, c_opt, c_params)
            a_params = optax.apply_updates(a_params, a_upd)
            c_params = optax.apply_updates(c_params, c_upd)
            return (a_params, c_params, a_opt, c_opt), {
                "actor_loss": a_loss,
                "value_loss": c_loss,
                **m,
            }

        def epoch(carry, key):
            perm = jax.random.permutation(key, n_envs * n_steps)
            return jax.lax.scan(minibatch_step, carry, perm.reshape(n_minibatches, -1))

        key, k_perm = jax.random.split(state.key)
        carry = (state.actor_params, state.critic_params, state.actor_opt_state,
                 state.critic_opt_state)  # fmt: skip
        carry, loss_metrics = jax.lax.scan(epoch, carry, jax.random.split(k_perm, ppo.epochs))
        a_params, c_params, a_opt, c_opt = carry
        state = state.replace(
            actor_params=a_params,
            critic_params=c_params,
            actor_opt_state=a_opt,
            critic_opt_state=c_opt,
            obs_stats=obs_stats,
            update_step=state.update_step + 1,
            key=key,
        )
        metrics.update({f"loss/{k}": v.mean() for k, v in loss_metrics.items()})
        metrics["loss/td_penalty"] = penalty
        metrics["train/log_std"] = a_params["params"]["log_std"].mean()
        return state, metrics

    def policy(state: PPOState) -> Callable[[jax.Array], jax.Array]:
        """Deterministic policy (the Gaussian mean) on raw observations (..., O) -> (..., A)."""
        actor_params, obs_stats = state.actor_params, state.obs_stats

        def policy_fn(obs):
            mean, _ = actor.apply(actor_params, norm_obs(obs_stats, obs))
            return mean

        return policy_fn

    return PPOFns(init=init, update=update, policy=policy, actor=actor, critic=critic)


def make_train_fn(ppo: Any, env: Any, uncertainty: UncertaintySet = NOMINAL):
    """``train(key) -> (final PPOState, metrics stacked over updates)``: the whole run, jittable.

    ``jax.vmap(train)(keys)`` trains several seeds at once (STYLE.md convention 2).
    """
    fns = make_ppo(ppo, env, uncertainty)

    def train(key: jax.Array):
        return jax.lax.scan(lambda s, _: fns.update(s), fns.init(key), None, length=ppo.num_updates)

    return train
