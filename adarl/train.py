"""SAC and AdaRL, pure-functional and jitted (ADARL.md §2, §5, §6; STYLE.md conventions 2-4).

``make_train(config) -> train(key)`` runs a whole training run as one pure function of the key
(jit it, vmap it over seeds). ``train_and_evaluate(config, workdir)`` runs the same pieces through
``harness.run_experiment`` (metrics, checkpoints, resume, plots) with all seeds of
``config.num_seeds`` vmapped in one process, then evaluates under nominal and perturbed dynamics.

The algorithm (``config.algo``, registry :data:`ALGOS`) only switches the upper level with
everything else equal:

* ``"sac"``: SAC (Haarnoja et al. 2018) with tanh-Gaussian actor, twin critics, clipped double-Q,
  Polyak targets, fixed or learned temperature; the factorised layers keep their initial rank.
* ``"adarl"``: Algorithm 1 of AdaRL (arXiv 2510.11899): every ``lowrank.interval`` gradient steps
  (skipping k = 0, ADARL.md §2.3) each factorised layer is SVD-projected to the rank chosen by
  ``lowrank.rule`` (Eq. 14 by default), the target critics are re-copied from the projected
  critics (ADARL.md §6, ``lowrank.target_mode``), the Adam states of actor and critics are reset
  and the learning rate restarts its 2000-step linear warm-up on the run-long cosine (ReLoRA's
  jagged schedule, ADARL.md §2.6). The replay buffer is kept.
* ``"parseval"``: SAC plus λ Σ‖KᵀK − sI‖²_F on hidden layers (Chung et al. 2024, ADARL.md §7.2).

One *update* (the harness's unit) is ``train.steps_per_update`` training steps; a training step is
one vectorised environment step (``train.num_envs`` transitions) followed by
``train.grad_updates_per_step`` gradient steps. Rank adaptation is checked at the end of every
update but the last, so it happens at the first update boundary at or after each multiple of the
interval.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from adarl import buffers, losses, lowrank, networks
from adarl.types import AgentState, ReplayState, RunningStats, TrainState, Transition

# ---------------------------------------------------------------------------------------------
# Algorithms (registry) and config validation
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AlgoSpec:
    """What an algorithm switches on: rank adaptation and/or the Parseval penalty."""

    truncate: bool
    parseval: bool


ALGOS: dict[str, AlgoSpec] = {
    "sac": AlgoSpec(truncate=False, parseval=False),
    "adarl": AlgoSpec(truncate=True, parseval=False),
    "parseval": AlgoSpec(truncate=False, parseval=True),
}
ALPHA_MODES = ("fixed", "auto")
LR_SCHEDULES = ("cosine", "constant")
TARGET_MODES = ("copy", "project")


def get_algo(name: str) -> AlgoSpec:
    if name not in ALGOS:
        raise ValueError(f"unknown algo '{name}'; registered: {', '.join(sorted(ALGOS))}")
    return ALGOS[name]


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every field ``make_train`` reads; raises harness.ConfigError (a ValueError)."""
    import harness
    from adarl import dynamics as dynamics_lib
    from adarl import envs as envs_lib

    harness.check_choice(config, "algo", tuple(ALGOS))
    harness.check_choice(config, "env.name", envs_lib.names())
    harness.check_choice(config, "dynamics.sampler", tuple(dynamics_lib.SAMPLERS))
    harness.check_int(config, "num_seeds", lo=1)
    harness.check_int(config, "seed", lo=0)
    harness.check_int(config, "env.episode_length", lo=1)
    harness.check_int(config, "env.action_repeat", lo=1)
    for f in ("num_envs", "num_updates", "steps_per_update", "grad_updates_per_step"):
        harness.check_int(config, f"train.{f}", lo=1)
    harness.check_int(config, "train.prefill_steps", lo=0)
    harness.check_int(config, "train.replay_size", lo=1)
    harness.check_int(config, "train.batch_size", lo=1)
    harness.check_int(config, "train.checkpoint_every", lo=1)
    harness.check_int(config, "train.eval_every", lo=0)
    harness.check_int(config, "eval.num_episodes", lo=1)
    harness.check_range(config, "sac.lr", lo=0.0, lo_inclusive=False)
    harness.check_choice(config, "sac.lr_schedule", LR_SCHEDULES)
    harness.check_int(config, "sac.warmup_steps", lo=0)
    harness.check_range(config, "sac.min_lr_ratio", lo=0.0, hi=1.0)
    harness.check_range(config, "sac.gamma", lo=0.0, hi=1.0)
    harness.check_range(config, "sac.tau", lo=0.0, hi=1.0, lo_inclusive=False)
    harness.check_range(config, "sac.reward_scaling")
    harness.check_choice(config, "sac.alpha.mode", ALPHA_MODES)
    harness.check_range(config, "sac.alpha.init", lo=0.0, lo_inclusive=False)
    harness.check_range(config, "sac.alpha.lr", lo=0.0)
    harness.check_range(config, "sac.alpha.target_entropy_scale")
    hidden = tuple(config.network.hidden)
    if len(hidden) < 1 or any(not isinstance(h, int) or h < 1 for h in hidden):
        raise harness.ConfigError(f"config.network.hidden={hidden} must be positive ints")
    if config.network.low_rank and len(hidden) < 2:
        raise harness.ConfigError(
            "config.network.low_rank=True needs >= 2 hidden layers (config.network.hidden)"
        )
    rank_cap = (
        min(min(a, b) for a, b in zip(hidden[:-1], hidden[1:], strict=True))
        if len(hidden) > 1
        else 1
    )
    harness.check_int(config, "lowrank.rank_max", lo=1, hi=rank_cap)
    harness.check_int(config, "lowrank.init_rank", lo=1, hi=config.lowrank.rank_max)
    harness.check_choice(config, "lowrank.rule", lowrank.rank_rule_names())
    harness.check_range(config, "lowrank.beta", lo=0.0, hi=1.0, lo_inclusive=False)
    harness.check_int(config, "lowrank.interval", lo=1)
    harness.check_int(config, "lowrank.max_truncations", lo=0)
    harness.check_choice(config, "lowrank.target_mode", TARGET_MODES)
    harness.check_range(config, "parseval.lam", lo=0.0)
    harness.check_range(config, "parseval.s", lo=0.0, lo_inclusive=False)
    if get_algo(config.algo).truncate and not config.network.low_rank:
        raise harness.ConfigError("config.algo='adarl' needs config.network.low_rank=True")
    if config.train.batch_size > config.train.replay_size:
        raise harness.ConfigError(
            f"config.train.batch_size={config.train.batch_size} exceeds "
            f"config.train.replay_size={config.train.replay_size}"
        )
    if config.train.num_envs > config.train.replay_size:
        raise harness.ConfigError("config.train.num_envs must be <= config.train.replay_size")


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------


class EnvBundle(NamedTuple):
    """Batched training env (dynamics from the configured sampler), nominal evaluation env.

    Both follow the ``adarl.wrappers.wrap`` contract: ``reset(keys (N, 2))``, ``step(state,
    actions (N, A))``, ``state.obs/reward/done``, ``state.info["truncation"]``;
    ``eval_env.reset_with_params(keys, params)`` is needed for the robustness grid only.
    spec: the task's ``adarl.params.ParamSpec`` (None for test envs).
    """

    train_env: Any
    eval_env: Any
    observation_size: int
    action_size: int
    spec: Any = None


def make_envs(config: ml_collections.ConfigDict) -> EnvBundle:
    """Builds the task, its parameter spec, the training sampler and both batched envs."""
    from adarl import dynamics, envs, params, wrappers

    env = envs.make(config.env.name, **dict(config.env.overrides))
    names = tuple(config.dynamics.params) or None
    spec = params.param_spec(env, names)
    sampler = dynamics.make_sampler(config.dynamics.sampler, spec, **dict(config.dynamics.kwargs))
    nominal = dynamics.make_sampler("nominal", spec)
    kw = dict(episode_length=config.env.episode_length, action_repeat=config.env.action_repeat)
    return EnvBundle(
        wrappers.wrap(env, sampler, **kw),
        wrappers.wrap(env, nominal, **kw),
        int(env.observation_size),
        int(env.action_size),
        spec,
    )


# ---------------------------------------------------------------------------------------------
# Pieces: networks, normaliser, learning rate, optimisers
# ---------------------------------------------------------------------------------------------


def make_networks(config: ml_collections.ConfigDict, action_size: int) -> losses.Networks:
    n = config.network
    kw = dict(
        hidden=tuple(n.hidden),
        low_rank=bool(n.low_rank),
        rank_max=int(config.lowrank.rank_max),
        diag_layer=bool(n.diag_layer),
        learnable_input_scale=bool(n.learnable_input_scale),
    )
    return losses.Networks(
        actor=networks.Actor(action_size=action_size, **kw),
        critic=networks.Critics(num_critics=2, **kw),
    )


def num_factorised(config: ml_collections.ConfigDict) -> int:
    """L: factorised hidden->hidden layers per network (0 without low rank)."""
    return len(config.network.hidden) - 1 if config.network.low_rank else 0


def normalizer_init(obs_size: int) -> RunningStats:
    return RunningStats(
        jnp.zeros((obs_size,), jnp.float32),
        jnp.zeros((obs_size,), jnp.float32),
        jnp.zeros((), jnp.float32),
    )


def normalizer_update(stats: RunningStats, obs: jax.Array) -> RunningStats:
    """Chan et al.'s parallel mean/variance update with a batch obs f32 (N, O)."""
    n = jnp.asarray(obs.shape[0], jnp.float32)
    mean_b = jnp.mean(obs, axis=0)
    m2_b = jnp.sum((obs - mean_b) ** 2, axis=0)
    total = stats.count + n
    delta = mean_b - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.m2 + m2_b + delta**2 * stats.count * n / total
    return RunningStats(mean, m2, total)


def normalize(stats: RunningStats, obs: jax.Array, enabled: bool) -> jax.Array:
    """(obs − mean)/std clipped to ±10 when ``enabled`` (identity otherwise)."""
    if not enabled:
        return obs
    var = stats.m2 / jnp.maximum(stats.count, 1.0)
    std = jnp.sqrt(jnp.maximum(var, 1e-6))
    out = jnp.where(stats.count > 1, (obs - stats.mean) / std, obs)
    return jnp.clip(out, -10.0, 10.0)


def learning_rate(
    step: jax.Array,
    last_reset: jax.Array,
    *,
    base: float,
    total_steps: int,
    warmup_steps: int,
    schedule: str,
    min_ratio: float,
) -> jax.Array:
    """ReLoRA-style jagged schedule (ADARL.md §2.6, §6).

    lr = base · c(step) · min(1, (step − last_reset + 1)/warmup), with c the run-long cosine
    ``min_ratio + (1 − min_ratio)·½(1 + cos(π·step/total))`` (or 1 for "constant"). Every
    optimizer reset sets ``last_reset`` to the current step, so the warm-up restarts from ~0.
    """
    step = jnp.asarray(step, jnp.float32)
    if schedule == "cosine":
        frac = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
        c = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    else:
        c = 1.0
    if warmup_steps > 0:
        w = jnp.clip((step - last_reset + 1.0) / warmup_steps, 0.0, 1.0)
    else:
        w = 1.0
    return base * c * w


ADAM = optax.scale_by_adam()  # the learning rate is applied by hand (jagged schedule)


def apply_adam(params, grads, opt_state, lr):
    updates, opt_state = ADAM.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
    return params, opt_state


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class TrainFns(NamedTuple):
    """Pure functions of one seed (vmap them for several).

    init: key -> TrainState (prefilled replay).
    update: TrainState -> (TrainState, metrics dict of f32 ()) (jit it).
    evaluate: (AgentState, key, params|None) -> f32 (E,) deterministic episode returns under
      nominal dynamics (params None) or under ``params`` (dict name -> (E,)).
    policy: (AgentState, obs f32 (..., O)) -> deterministic action f32 (..., A).
    rank_info: AgentState -> dict of ranks and singular values (for logging).
    truncate: AgentState -> AgentState, one rank adaptation + optimizer reset (unconditional).
    lr: (grad_step, last_reset) -> learning rate.
    nets, envs, total_grad_steps.
    """

    init: Callable
    update: Callable
    evaluate: Callable
    policy: Callable
    rank_info: Callable
    truncate: Callable
    lr: Callable
    nets: losses.Networks
    envs: EnvBundle
    total_grad_steps: int


def make_train_fns(config: ml_collections.ConfigDict, envs: EnvBundle | None = None) -> TrainFns:
    """Builds init/update/evaluate for one seed (validates ``config`` first)."""
    validate(config)
    envs = make_envs(config) if envs is None else envs
    algo = get_algo(config.algo)
    nets = make_networks(config, envs.action_size)
    obs_size, act_size = envs.observation_size, envs.action_size
    tc, sc, lc = config.train, config.sac, config.lowrank
    num_envs, batch_size = int(tc.num_envs), int(tc.batch_size)
    n_grad, n_steps = int(tc.grad_updates_per_step), int(tc.steps_per_update)
    total_grad_steps = int(tc.num_updates) * n_steps * n_grad
    norm_on = bool(config.network.normalize_observations)
    n_layers = num_factorised(config)
    auto_alpha = sc.alpha.mode == "auto"
    loss_cfg = losses.LossConfig(
        gamma=float(sc.gamma),
        reward_scaling=float(sc.reward_scaling),
        target_entropy=float(sc.alpha.target_entropy_scale) * act_size,
        parseval_lam=float(config.parseval.lam) if algo.parseval else 0.0,
        parseval_s=float(config.parseval.s),
        parseval_width_scaling=bool(config.parseval.width_scaling),
    )
    lr_fn = lambda step, last: learning_rate(
        step,
        last,
        base=float(sc.lr),
        total_steps=total_grad_steps,
        warmup_steps=int(sc.warmup_steps),
        schedule=str(sc.lr_schedule),
        min_ratio=float(sc.min_lr_ratio),
    )
    alpha_opt = optax.adam(float(sc.alpha.lr))
    rule, beta = str(lc.rule), float(lc.beta)
    eval_steps = math.ceil(config.env.episode_length / config.env.action_repeat)
    num_eval = int(config.eval.num_episodes)

    def policy(agent: AgentState, obs: jax.Array) -> jax.Array:
        mean, _ = nets.actor.apply(
            agent.actor_params, normalize(agent.normalizer, obs, norm_on), agent.actor_rank
        )
        return jnp.tanh(mean)

    def init_agent(key: jax.Array) -> AgentState:
        k_actor, k_critic = jax.random.split(key)
        actor_rank = jnp.full((max(n_layers, 1),), lc.init_rank, jnp.int32)
        critic_rank = jnp.full((2, max(n_layers, 1)), lc.init_rank, jnp.int32)
        obs0, act0 = jnp.zeros((1, obs_size)), jnp.zeros((1, act_size))
        actor_params = nets.actor.init(k_actor, obs0, actor_rank)
        critic_params = nets.critic.init(k_critic, obs0, act0, critic_rank)
        if n_layers and lc.init_rank < lc.rank_max:
            # Start from the best rank-init_rank approximation of the dense initialisation.
            actor_params, critic_params = _project_to(
                actor_params, critic_params, actor_rank, critic_rank
            )
        log_alpha = jnp.asarray(math.log(sc.alpha.init), jnp.float32)
        return AgentState(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=critic_params,
            actor_opt_state=ADAM.init(actor_params),
            critic_opt_state=ADAM.init(critic_params),
            log_alpha=log_alpha,
            alpha_opt_state=alpha_opt.init(log_alpha),
            actor_rank=actor_rank,
            critic_rank=critic_rank,
            normalizer=normalizer_init(obs_size),
            grad_steps=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
            last_reset=jnp.zeros((), jnp.int32),
            num_truncations=jnp.zeros((), jnp.int32),
        )

    def _project_to(actor_params, critic_params, actor_rank, critic_rank):
        """Projects factors onto their current ranks (used at init with init_rank < R)."""

        def proj_mlp(mlp, ranks):
            new = dict(mlp)
            for j, name in enumerate(networks.factorised_layer_names(mlp)):
                a = mlp[name]["A"] * networks.rank_mask(ranks[j], lc.rank_max)
                a_new, b_new, _ = lowrank.project_factors(a, mlp[name]["B"], ranks[j])
                new[name] = {**mlp[name], "A": a_new, "B": b_new}
            return new

        actor_params = {"params": {"mlp": proj_mlp(actor_params["params"]["mlp"], actor_rank)}}
        critic_mlp = jax.vmap(proj_mlp)(critic_params["params"]["mlp"], critic_rank)
        return actor_params, {"params": {"mlp": critic_mlp}}

    # -- acting ------------------------------------------------------------------------------

    # Orbax refuses zero-size arrays (mjx.Data has some, e.g. ``act`` for tasks without
    # activations), so the carry stores the env state with those leaves replaced by None and
    # rebuilds them from this shape template (single-seed shapes; everything here runs per seed).
    env_template = jax.eval_shape(
        envs.train_env.reset, jax.random.split(jax.random.PRNGKey(0), num_envs)
    )

    def pack_env(state):
        return jax.tree.map(lambda x: None if x.size == 0 else x, state)

    def unpack_env(packed):
        return jax.tree.map(
            lambda t, x: jnp.zeros(t.shape, t.dtype) if x is None else x, env_template, packed
        )

    def env_step(carry: TrainState, random_actions: bool) -> TrainState:
        key, k_act = jax.random.split(carry.key)
        agent, env_state = carry.agent, unpack_env(carry.env_state)
        obs = env_state.obs
        if random_actions:
            action = jax.random.uniform(k_act, (num_envs, act_size), minval=-1.0, maxval=1.0)
        else:
            mean, log_std = nets.actor.apply(
                agent.actor_params, normalize(agent.normalizer, obs, norm_on), agent.actor_rank
            )
            action, _ = networks.tanh_gaussian_sample(k_act, mean, log_std)
        next_state = envs.train_env.step(env_state, action)
        done = next_state.done.astype(jnp.float32)
        trunc = next_state.info["truncation"].astype(jnp.float32)
        if "final_obs" in next_state.info:
            # adarl.wrappers keeps the pre-reset observation: bootstrap through time-outs.
            next_obs, loss_mask = next_state.info["final_obs"], jnp.zeros_like(trunc)
        else:  # brax-style wrappers overwrite it: drop time-out transitions from the loss.
            next_obs, loss_mask = next_state.obs, trunc
        transition = Transition(
            obs=obs,
            action=action,
            reward=next_state.reward.astype(jnp.float32),
            discount=1.0 - done * (1.0 - trunc),
            next_obs=next_obs,
            truncation=loss_mask,
        )
        buffer = buffers.insert(carry.buffer, transition)
        normalizer = normalizer_update(agent.normalizer, obs) if norm_on else agent.normalizer
        ep_ret = carry.episode_return + transition.reward
        n_done = jnp.sum(done)
        finished = jnp.sum(ep_ret * done) / jnp.maximum(n_done, 1.0)
        last_return = jnp.where(n_done > 0, finished, carry.last_return)
        agent = agent.replace(normalizer=normalizer, env_steps=agent.env_steps + num_envs)
        return carry.replace(
            agent=agent,
            buffer=buffer,
            env_state=pack_env(next_state),
            key=key,
            episode_return=ep_ret * (1.0 - done),
            last_return=last_return,
        )

    # -- learning ----------------------------------------------------------------------------

    def sgd_step(agent: AgentState, buffer: ReplayState, key: jax.Array):
        k_batch, k_critic, k_actor = jax.random.split(key, 3)
        batch = buffers.sample(buffer, k_batch, batch_size)
        batch = batch._replace(
            obs=normalize(agent.normalizer, batch.obs, norm_on),
            next_obs=normalize(agent.normalizer, batch.next_obs, norm_on),
        )
        alpha = jnp.exp(agent.log_alpha)
        lr = lr_fn(agent.grad_steps, agent.last_reset)

        (_, c_metrics), c_grads = jax.value_and_grad(losses.critic_loss, has_aux=True)(
            agent.critic_params,
            nets,
            loss_cfg,
            agent.actor_params,
            agent.actor_rank,
            agent.critic_rank,
            agent.target_critic_params,
            alpha,
            batch,
            k_critic,
        )
        critic_params, critic_opt = apply_adam(
            agent.critic_params, c_grads, agent.critic_opt_state, lr
        )

        def actor_obj(p):
            loss, m = losses.actor_loss(
                p,
                nets,
                loss_cfg,
                agent.actor_rank,
                critic_params,
                agent.critic_rank,
                alpha,
                batch,
                k_actor,
            )
            return loss, m

        (_, a_metrics), a_grads = jax.value_and_grad(actor_obj, has_aux=True)(agent.actor_params)
        actor_params, actor_opt = apply_adam(agent.actor_params, a_grads, agent.actor_opt_state, lr)

        log_alpha, alpha_opt_state = agent.log_alpha, agent.alpha_opt_state
        if auto_alpha:
            logp = -a_metrics["entropy"] * jnp.ones((1,))
            grad = jax.grad(lambda la: losses.alpha_loss(la, logp, loss_cfg.target_entropy)[0])(
                log_alpha
            )
            upd, alpha_opt_state = alpha_opt.update(grad, alpha_opt_state, log_alpha)
            log_alpha = optax.apply_updates(log_alpha, upd)

        tau = float(sc.tau)
        target = jax.tree.map(
            lambda t, p: (1.0 - tau) * t + tau * p, agent.target_critic_params, critic_params
        )
        agent = agent.replace(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=target,
            actor_opt_state=actor_opt,
            critic_opt_state=critic_opt,
            log_alpha=log_alpha,
            alpha_opt_state=alpha_opt_state,
            grad_steps=agent.grad_steps + 1,
        )
        return agent, {**c_metrics, **a_metrics, "alpha": alpha, "lr": lr}

    def training_step(carry: TrainState, _):
        carry = env_step(carry, random_actions=False)
        key, k_sgd = jax.random.split(carry.key)

        def body(agent, k):
            return sgd_step(agent, carry.buffer, k)

        agent, metrics = jax.lax.scan(body, carry.agent, jax.random.split(k_sgd, n_grad))
        return carry.replace(agent=agent, key=key), jax.tree.map(jnp.mean, metrics)

    # -- rank adaptation ---------------------------------------------------------------------

    def truncate(agent: AgentState) -> AgentState:
        """Algorithm 1 step 4 + optimizer reset + LR restart (ADARL.md §2.5, §2.6, §5.2)."""
        a_mlp, a_rank, _ = lowrank.project_mlp(
            agent.actor_params["params"]["mlp"], agent.actor_rank, rule, beta
        )
        c_mlp, c_rank, _ = lowrank.project_critics(
            agent.critic_params["params"]["mlp"], agent.critic_rank, rule, beta
        )
        actor_params = {"params": {**agent.actor_params["params"], "mlp": a_mlp}}
        critic_params = {"params": {**agent.critic_params["params"], "mlp": c_mlp}}
        if lc.target_mode == "copy":
            target = critic_params
        else:  # "project": the target critics' own best approximation at the new ranks

            def proj_target(mlp, ranks, old_ranks):
                new = dict(mlp)
                for j, name in enumerate(networks.factorised_layer_names(mlp)):
                    a = mlp[name]["A"] * networks.rank_mask(old_ranks[j], lc.rank_max)
                    a_new, b_new, _ = lowrank.project_factors(a, mlp[name]["B"], ranks[j])
                    new[name] = {**mlp[name], "A": a_new, "B": b_new}
                return new

            t_mlp = jax.vmap(proj_target)(
                agent.target_critic_params["params"]["mlp"], c_rank, agent.critic_rank
            )
            target = {"params": {**agent.target_critic_params["params"], "mlp": t_mlp}}
        return agent.replace(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=target,
            actor_opt_state=ADAM.init(actor_params),
            critic_opt_state=ADAM.init(critic_params),
            actor_rank=a_rank,
            critic_rank=c_rank,
            last_reset=agent.grad_steps,
            num_truncations=agent.num_truncations + 1,
        )

    def truncation_due(agent: AgentState) -> jax.Array:
        if not (algo.truncate and n_layers):
            return jnp.asarray(False)
        due = agent.grad_steps >= (agent.num_truncations + 1) * int(lc.interval)
        # No truncation after the last update: the final policy gets no recovery phase.
        due = due & (agent.grad_steps < total_grad_steps)
        if lc.max_truncations > 0:
            due = due & (agent.num_truncations < int(lc.max_truncations))
        return due

    def rank_info(agent: AgentState) -> dict[str, jax.Array]:
        out: dict[str, jax.Array] = {}
        if not n_layers:
            return out
        for j, s in enumerate(
            lowrank.spectra(agent.actor_params["params"]["mlp"], agent.actor_rank)
        ):
            out[f"rank/actor_{j}"] = agent.actor_rank[j]
            out[f"sv/actor_{j}"] = s
        c_spec = jax.vmap(lowrank.spectra)(agent.critic_params["params"]["mlp"], agent.critic_rank)
        for j, s in enumerate(c_spec):
            for c in range(2):
                out[f"rank/critic{c}_{j}"] = agent.critic_rank[c, j]
                out[f"sv/critic{c}_{j}"] = s[c]
        return out

    # -- init / update / evaluate ------------------------------------------------------------

    def init(key: jax.Array) -> TrainState:
        k_agent, k_env, k_prefill, key = jax.random.split(key, 4)
        agent = init_agent(k_agent)
        env_state = envs.train_env.reset(jax.random.split(k_env, num_envs))
        example = Transition(
            obs=jnp.zeros((obs_size,)),
            action=jnp.zeros((act_size,)),
            reward=jnp.zeros(()),
            discount=jnp.zeros(()),
            next_obs=jnp.zeros((obs_size,)),
            truncation=jnp.zeros(()),
        )
        carry = TrainState(
            agent=agent,
            buffer=buffers.init(int(tc.replay_size), example),
            env_state=pack_env(env_state),
            key=k_prefill,
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            last_return=jnp.zeros((), jnp.float32),
        )
        n_prefill = math.ceil(int(tc.prefill_steps) / num_envs)
        if n_prefill:
            carry = jax.lax.fori_loop(
                0, n_prefill, lambda _, c: env_step(c, random_actions=True), carry
            )
        return carry.replace(key=key)

    def update(carry: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        carry, metrics = jax.lax.scan(training_step, carry, None, length=n_steps)
        metrics = jax.tree.map(jnp.mean, metrics)
        agent = carry.agent
        due = truncation_due(agent)
        agent = jax.lax.cond(due, truncate, lambda a: a, agent)
        info = {k: v for k, v in rank_info(agent).items() if k.startswith("rank/")}
        metrics = {f"train/{k}": v for k, v in metrics.items()}
        metrics.update(info)
        metrics.update(
            {
                "train/return": carry.last_return,
                "train/env_steps": agent.env_steps.astype(jnp.float32),
                "train/grad_steps": agent.grad_steps.astype(jnp.float32),
                "train/truncations": agent.num_truncations.astype(jnp.float32),
            }
        )
        return carry.replace(agent=agent), metrics

    def evaluate(agent: AgentState, key: jax.Array, params=None) -> jax.Array:
        n = num_eval if params is None else jax.tree.leaves(params)[0].shape[0]
        keys = jax.random.split(key, n)
        env = envs.eval_env
        state = env.reset(keys) if params is None else env.reset_with_params(keys, params)

        def body(c, _):
            state, ret, alive = c
            state = env.step(state, policy(agent, state.obs))
            ret = ret + state.reward * alive
            alive = alive * (1.0 - state.done.astype(jnp.float32))
            return (state, ret, alive), None

        init_c = (state, jnp.zeros((n,), jnp.float32), jnp.ones((n,), jnp.float32))
        (_, ret, _), _ = jax.lax.scan(body, init_c, None, length=eval_steps)
        return ret

    return TrainFns(
        init, update, evaluate, policy, rank_info, truncate, lr_fn, nets, envs, total_grad_steps
    )


def make_train(config: ml_collections.ConfigDict, envs: EnvBundle | None = None):
    """``train(key) -> (TrainState, metrics)``: the whole run as one pure function.

    ``metrics`` holds every update's metrics stacked over updates, plus ``eval/return`` f32 ()
    (mean deterministic return under nominal dynamics at the end). jit it; vmap it over keys
    for several seeds.
    """
    fns = make_train_fns(config, envs)

    def train(key: jax.Array):
        k_init, k_eval = jax.random.split(key)
        state = fns.init(k_init)
        state, metrics = jax.lax.scan(
            lambda s, _: fns.update(s), state, None, length=int(config.train.num_updates)
        )
        metrics = dict(metrics)
        metrics["eval/return"] = jnp.mean(fns.evaluate(state.agent, k_eval))
        return state, metrics

    return train


# ---------------------------------------------------------------------------------------------
# Runs through the harness (several seeds vmapped), loading policies
# ---------------------------------------------------------------------------------------------

SPECTRA_FILE = "spectra.jsonl"


def _seed_keys(key: jax.Array, num_seeds: int) -> jax.Array:
    return jax.random.split(key, num_seeds)


_SEEDED_CACHE: dict[tuple[int, int], tuple[TrainFns, tuple[Callable, ...]]] = {}


def make_seeded(fns: TrainFns, num_seeds: int):
    """(init, update) over ``num_seeds`` vmapped seeds: init(key) splits the key per seed.

    Memoised per ``fns`` object so repeated runs in one process (tests, resume) reuse the
    compiled functions.
    """
    cache_key = (id(fns), num_seeds)
    if cache_key not in _SEEDED_CACHE:
        init = jax.jit(lambda key: jax.vmap(fns.init)(_seed_keys(key, num_seeds)))
        update = jax.jit(jax.vmap(fns.update))
        eval_fn = jax.jit(jax.vmap(fns.evaluate, in_axes=(0, None)))
        info_fn = jax.jit(jax.vmap(fns.rank_info))
        _SEEDED_CACHE[cache_key] = (fns, (init, update, eval_fn, info_fn))
    return _SEEDED_CACHE[cache_key][1]


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    fns: TrainFns | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains ``config.num_seeds`` seeds in one process through the harness; returns the summary.

    ``fns`` (default ``make_train_fns(config)``) lets tests inject probe environments;
    ``stop_after`` is the harness's interruption hook (tests of resume).

    Writes (besides the harness's outputs): ``spectra.jsonl`` (singular values of every
    factorised layer at every evaluation, per seed), ``spectrum.png``, ``robustness.json`` and
    ``robustness.png`` (nominal and perturbed-dynamics returns per seed), and adds the
    robustness numbers to ``summary.json`` under ``"robustness"``.
    """
    import harness
    from adarl import evaluate as evaluate_lib

    validate(config)
    fns = make_train_fns(config) if fns is None else fns
    num_seeds = int(config.num_seeds)
    init, update, eval_fn, info_fn = make_seeded(fns, num_seeds)
    eval_key = jax.random.PRNGKey(int(config.seed) + 10_007)
    spectra_path = os.path.join(workdir, SPECTRA_FILE)

    def evaluate(state: TrainState) -> dict[str, Any]:
        returns = eval_fn(state.agent, eval_key)  # (S, E)
        info = jax.device_get(info_fn(state.agent))
        sv = {k: np.asarray(v).tolist() for k, v in info.items() if k.startswith("sv/")}
        if sv:
            row = {"grad_steps": int(np.asarray(state.agent.grad_steps)[0]), **sv}
            with open(spectra_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        return {"eval/return": jnp.mean(returns, axis=-1)}

    rank_keys = ["rank/actor_0", "rank/critic0_0", "rank/critic1_0"]
    summary = harness.run_experiment(
        config,
        workdir,
        init=init,
        update=update,
        num_updates=int(config.train.num_updates),
        seed=int(config.seed),
        checkpoint_every=int(config.train.checkpoint_every),
        evaluate=evaluate,
        eval_every=int(config.train.eval_every) or None,
        plots={
            "return.png": ["eval/return", "train/return"],
            "rank.png": rank_keys if num_factorised(config) else [],
            "losses.png": ["train/critic_loss", "train/actor_loss"],
        },
        desc=str(config.algo),
        stop_after=stop_after,
        progress=progress,
    )
    if summary.get("interrupted") or "robustness" in summary or fns.envs.spec is None:
        return summary
    state, _ = harness.load_state(workdir, like=init(jax.random.PRNGKey(int(config.seed))))
    result = evaluate_lib.robustness(
        fns, state.agent, config, jax.random.PRNGKey(int(config.seed) + 1)
    )
    result["final_ranks"] = {
        k: np.asarray(v).tolist()
        for k, v in jax.device_get(info_fn(state.agent)).items()
        if k.startswith("rank/")
    }
    result["intrinsic_rank"] = 2 * fns.envs.action_size + 1  # Tiwari et al., ADARL.md §7.4
    evaluate_lib.save(result, workdir, title=f"{config.algo} on {config.env.name}")
    evaluate_lib.plot_spectra(spectra_path, os.path.join(workdir, "spectrum.png"))
    summary["robustness"] = {
        k: result[k] for k in ("nominal", "grid_mean", "grid_min", "final_ranks", "intrinsic_rank")
    }
    with open(os.path.join(workdir, harness.SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=str)
    return summary


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's config from ``workdir/config.json`` (written by the harness)."""
    with open(os.path.join(workdir, "config.json")) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_agents(
    workdir: str, fns: TrainFns | None = None
) -> tuple[AgentState, TrainFns, ml_collections.ConfigDict]:
    """The latest checkpointed agents (leading seed axis (S,)), the train fns and the config."""
    import harness

    config = load_config(workdir)
    fns = make_train_fns(config) if fns is None else fns
    init = make_seeded(fns, int(config.num_seeds))[0]
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    like = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    state, _ = harness.load_state(workdir, like=like)
    return state.agent, fns, config


def load_policy(workdir: str, seed_index: int = 0, fns: TrainFns | None = None):
    """``(policy_fn, config)`` of a finished (or checkpointed) run.

    policy_fn(obs f32 (..., O)) -> deterministic action tanh(mean) f32 (..., A) in [-1, 1], with
    the run's observation normaliser; ``seed_index`` picks one of the vmapped seeds.
    """
    agents, fns, config = load_agents(workdir, fns)
    num_seeds = int(config.num_seeds)
    if not 0 <= seed_index < num_seeds:
        raise ValueError(f"seed_index={seed_index} must be in [0, {num_seeds})")
    agent = jax.tree.map(lambda x: x[seed_index], agents)
    return jax.jit(lambda obs: fns.policy(agent, obs)), config
