"""SAC and AdaRL, pure-functional and jitted (ADARL.md §2, §5, §6; STYLE.md conventions 2-4).

``make_train(config) -> train(key)`` runs a whole training run as one pure function of the key
(jit it, vmap it over seeds). ``train_and_evaluate(config, workdir)`` runs the same pieces through
``harness.run_experiment`` (metrics, checkpoints, resume, plots) with all seeds of
``config.num_seeds`` vmapped in one process, then evaluates under nominal and perturbed dynamics.

The algorithm (``config.algo``, registry :data:`ALGOS`) only switches the upper level with
everything else equal:

* ``"sac"``: the paper's SAC baseline (Spinning Up; Haarnoja et al. 2018): tanh-Gaussian actor,
  twin critics, clipped double-Q, Polyak targets, fixed or learned temperature, with *dense*
  hidden layers, a constant learning rate and no observation normalisation (:data:`PAPER_SAC`,
  pinned by :func:`resolve_config`).
* ``"sac_factorised"``: the same SAC on AdaRL's factorised layers, schedule and normaliser,
  without truncation (the layers keep their initial rank): AdaRL minus rank adaptation.
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

import copy
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import harness
from adarl import (
    acting,
    buffers,
    checkpoints,
    footprint,
    losses,
    lowrank,
    networks,
    running_stats,
    tasks,
)
from adarl import dynamics as dynamics_lib
from adarl import envs as envs_lib
from adarl import evaluate as evaluate_lib
from adarl import sharding as sharding_lib
from adarl.types import AgentState, ReplayState, TrainState, Transition

# ---------------------------------------------------------------------------------------------
# Algorithms (registry) and config validation
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AlgoSpec:
    """What an algorithm switches on: rank adaptation and/or the Parseval penalty.

    fixes: dotted config fields the algorithm pins, ``((field, value), ...)``; applied by
    :func:`resolve_config` before validation (so the saved config.json shows what ran).
    """

    truncate: bool
    parseval: bool
    fixes: tuple[tuple[str, Any], ...] = ()


# The paper's SAC baseline (Spinning Up, ADARL.md §2.7): dense 64-64, constant learning rate,
# no warm-up, no observation normalisation.
PAPER_SAC = (
    ("network.low_rank", False),
    ("network.normalize_observations", False),
    ("sac.lr_schedule", "constant"),
    ("sac.warmup_steps", 0),
)
ALGOS: harness.Registry[AlgoSpec] = harness.Registry("algorithm")
ALGOS.add("sac", AlgoSpec(truncate=False, parseval=False, fixes=PAPER_SAC))
# The same factorised layers, schedule and normaliser as AdaRL, without truncation.
ALGOS.add("sac_factorised", AlgoSpec(truncate=False, parseval=False))
ALGOS.add("adarl", AlgoSpec(truncate=True, parseval=False))
ALGOS.add("parseval", AlgoSpec(truncate=False, parseval=True))
# Fields added after runs were saved, with the behaviour those runs had: their checkpoints hold
# the replay; 0 = the device's own memory limit.
LEGACY_DEFAULTS = (("train.checkpoint_replay", True), ("train.device_memory_gb", 0.0))
ALPHA_MODES = ("fixed", "auto")
LR_SCHEDULES = ("cosine", "constant")
TARGET_MODES = ("copy", "project")


def get_algo(name: str) -> AlgoSpec:
    return ALGOS.get(name, "algo")


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the fields its algorithm pins (:attr:`AlgoSpec.fixes`) set;
    an unknown ``config.algo`` raises ConfigError. The caller's config is not changed."""
    harness.check_choice(config, "algo", ALGOS.names())
    out = copy.deepcopy(config)
    for field, value in LEGACY_DEFAULTS:  # configs saved before these fields existed
        section, name = field.split(".")
        if name not in out[section]:
            out[section][name] = value
    for field, value in get_algo(config.algo).fixes:
        section, name = field.split(".")
        out[section][name] = value
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every field ``make_train`` reads; raises harness.ConfigError (a ValueError)."""
    harness.check_choice(config, "algo", ALGOS.names())
    harness.check_choice(config, "env.name", envs_lib.names())
    harness.check_choice(config, "dynamics.sampler", dynamics_lib.SAMPLERS.names())
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
    harness.check_choice(config, "train.checkpoint_replay", (True, False))
    harness.check_range(config, "train.device_memory_gb", lo=0.0)
    harness.check_int(config, "eval.num_episodes", lo=1)
    _validate_sac(config)
    _validate_network(config)
    if get_algo(config.algo).truncate and not config.network.low_rank:
        raise harness.ConfigError("config.algo='adarl' needs config.network.low_rank=True")
    if config.train.batch_size > config.train.replay_size:
        raise harness.ConfigError(
            f"config.train.batch_size={config.train.batch_size} exceeds "
            f"config.train.replay_size={config.train.replay_size}"
        )
    if config.train.num_envs > config.train.replay_size:
        raise harness.ConfigError("config.train.num_envs must be <= config.train.replay_size")
    train_mesh(config)


def train_mesh(config: ml_collections.ConfigDict):
    """The mesh of ``config.parallel`` (None without one): envs, the replay buffer and sampled
    batches split over ``"data"`` (so each must divide), parameters replicated, no FSDP."""
    divisible = {f"train.{f}": config.train[f] for f in ("num_envs", "replay_size", "batch_size")}
    return sharding_lib.trainer_mesh(config, divisible, "SAC/AdaRL (adarl.train)")


def _validate_sac(config: ml_collections.ConfigDict) -> None:
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
    harness.check_range(config, "parseval.lam", lo=0.0)
    harness.check_range(config, "parseval.s", lo=0.0, lo_inclusive=False)


def _validate_network(config: ml_collections.ConfigDict) -> None:
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
    """The task of ``config`` (:func:`adarl.tasks.make_task`) as an :class:`EnvBundle`."""
    task = tasks.make_task(config)
    return EnvBundle(
        task.train_env, task.eval_env, task.observation_size, task.action_size, task.spec
    )


# ---------------------------------------------------------------------------------------------
# Pieces: networks, learning rate, optimisers
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
# The trainer: a static setup read from the config, and module-level step functions over it
# ---------------------------------------------------------------------------------------------


class Setup(NamedTuple):
    """Everything the step functions read besides their state (built once from the config).

    nets, envs, packer (env state <-> checkpointable carry), loss_cfg, algo; lr_kw: keyword
    arguments of :func:`learning_rate`; the remaining fields are plain ints/floats/strs/bools
    copied from ``config.train`` / ``config.sac`` / ``config.lowrank``.
    """

    nets: losses.Networks
    envs: EnvBundle
    packer: acting.EnvPacker
    loss_cfg: losses.LossConfig
    algo: AlgoSpec
    lr_kw: dict[str, Any]
    num_envs: int
    batch_size: int
    n_grad: int
    n_steps: int
    total_grad_steps: int
    replay_size: int
    prefill_steps: int
    norm_on: bool
    n_layers: int
    auto_alpha: bool
    alpha_init: float
    alpha_lr: float
    tau: float
    init_rank: int
    rank_max: int
    rule: str
    beta: float
    target_mode: str
    interval: int
    max_truncations: int
    num_eval: int
    eval_steps: int
    mesh: Any = None  # jax.sharding.Mesh of config.parallel (None: unsharded, adarl.sharding)


def make_setup(config: ml_collections.ConfigDict, envs: EnvBundle) -> Setup:
    tc, sc, lc = config.train, config.sac, config.lowrank
    algo = get_algo(config.algo)
    n_grad, n_steps = int(tc.grad_updates_per_step), int(tc.steps_per_update)
    total_grad_steps = int(tc.num_updates) * n_steps * n_grad
    return Setup(
        nets=make_networks(config, envs.action_size),
        envs=envs,
        packer=acting.EnvPacker.for_env(envs.train_env, int(tc.num_envs)),
        loss_cfg=losses.LossConfig(
            gamma=float(sc.gamma),
            reward_scaling=float(sc.reward_scaling),
            target_entropy=float(sc.alpha.target_entropy_scale) * envs.action_size,
            parseval_lam=float(config.parseval.lam) if algo.parseval else 0.0,
            parseval_s=float(config.parseval.s),
            parseval_width_scaling=bool(config.parseval.width_scaling),
        ),
        algo=algo,
        lr_kw=dict(
            base=float(sc.lr),
            total_steps=total_grad_steps,
            warmup_steps=int(sc.warmup_steps),
            schedule=str(sc.lr_schedule),
            min_ratio=float(sc.min_lr_ratio),
        ),
        num_envs=int(tc.num_envs),
        batch_size=int(tc.batch_size),
        n_grad=n_grad,
        n_steps=n_steps,
        total_grad_steps=total_grad_steps,
        replay_size=int(tc.replay_size),
        prefill_steps=int(tc.prefill_steps),
        norm_on=bool(config.network.normalize_observations),
        n_layers=num_factorised(config),
        auto_alpha=sc.alpha.mode == "auto",
        alpha_init=float(sc.alpha.init),
        alpha_lr=float(sc.alpha.lr),
        tau=float(sc.tau),
        init_rank=int(lc.init_rank),
        rank_max=int(lc.rank_max),
        rule=str(lc.rule),
        beta=float(lc.beta),
        target_mode=str(lc.target_mode),
        interval=int(lc.interval),
        max_truncations=int(lc.max_truncations),
        num_eval=int(config.eval.num_episodes),
        eval_steps=math.ceil(config.env.episode_length / config.env.action_repeat),
        mesh=train_mesh(config),
    )


def lr_at(s: Setup, step: jax.Array, last_reset: jax.Array) -> jax.Array:
    return learning_rate(step, last_reset, **s.lr_kw)


def normalize_obs(s: Setup, stats: running_stats.RunningStats, obs: jax.Array) -> jax.Array:
    """The running-statistics normaliser when ``network.normalize_observations`` (else obs)."""
    return running_stats.normalize(stats, obs) if s.norm_on else obs


def policy(s: Setup, agent: AgentState, obs: jax.Array) -> jax.Array:
    """Deterministic action tanh(mean) f32 (..., A) of raw observations f32 (..., O)."""
    mean, _ = s.nets.actor.apply(
        agent.actor_params, normalize_obs(s, agent.normalizer, obs), agent.actor_rank
    )
    return jnp.tanh(mean)


def project_mlp_to(mlp: dict, new_ranks: jax.Array, old_ranks: jax.Array, rank_max: int) -> dict:
    """Each factorised layer of ``mlp`` (active rank ``old_ranks[j]``) replaced by its best
    rank-``new_ranks[j]`` approximation (ADARL.md §6, target projection; init with init_rank)."""
    new = dict(mlp)
    for j, name in enumerate(networks.factorised_layer_names(mlp)):
        a = mlp[name]["A"] * networks.rank_mask(old_ranks[j], rank_max)
        a_new, b_new, _ = lowrank.project_factors(a, mlp[name]["B"], new_ranks[j])
        new[name] = {**mlp[name], "A": a_new, "B": b_new}
    return new


def align_mlp_to(mlp: dict, ref: dict, ranks: jax.Array) -> dict:
    """Each factorised layer of ``mlp`` rotated onto ``ref``'s factors (:func:`lowrank.
    align_factors`; products unchanged). ranks: i32 (L,), the common rank of both."""
    new = dict(mlp)
    for j, name in enumerate(networks.factorised_layer_names(mlp)):
        a, b = lowrank.align_factors(mlp[name]["A"], mlp[name]["B"], ref[name]["A"], ranks[j])
        new[name] = {**mlp[name], "A": a, "B": b}
    return new


def _with_mlp(params: dict, mlp: dict) -> dict:
    return {"params": {**params["params"], "mlp": mlp}}


def init_agent(s: Setup, key: jax.Array) -> AgentState:
    k_actor, k_critic = jax.random.split(key)
    obs_size, act_size = s.envs.observation_size, s.envs.action_size
    actor_rank = jnp.full((max(s.n_layers, 1),), s.init_rank, jnp.int32)
    critic_rank = jnp.full((2, max(s.n_layers, 1)), s.init_rank, jnp.int32)
    obs0, act0 = jnp.zeros((1, obs_size)), jnp.zeros((1, act_size))
    actor_params = s.nets.actor.init(k_actor, obs0, actor_rank)
    critic_params = s.nets.critic.init(k_critic, obs0, act0, critic_rank)
    if s.n_layers and s.init_rank < s.rank_max:
        # Start from the best rank-init_rank approximation of the dense initialisation.
        a_mlp = project_mlp_to(actor_params["params"]["mlp"], actor_rank, actor_rank, s.rank_max)
        c_mlp = jax.vmap(functools.partial(project_mlp_to, rank_max=s.rank_max))(
            critic_params["params"]["mlp"], critic_rank, critic_rank
        )
        actor_params, critic_params = (
            _with_mlp(actor_params, a_mlp),
            _with_mlp(critic_params, c_mlp),
        )
    log_alpha = jnp.asarray(math.log(s.alpha_init), jnp.float32)
    return AgentState(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=critic_params,
        actor_opt_state=ADAM.init(actor_params),
        critic_opt_state=ADAM.init(critic_params),
        log_alpha=log_alpha,
        alpha_opt_state=optax.adam(s.alpha_lr).init(log_alpha),
        actor_rank=actor_rank,
        critic_rank=critic_rank,
        normalizer=running_stats.init((obs_size,)),
        grad_steps=jnp.zeros((), jnp.int32),
        env_steps=jnp.zeros((), jnp.int32),
        last_reset=jnp.zeros((), jnp.int32),
        num_truncations=jnp.zeros((), jnp.int32),
    )


# -- acting ------------------------------------------------------------------------------------


def env_step(s: Setup, carry: TrainState, random_actions: bool) -> TrainState:
    """One vectorised env step: act, store the transition, update normaliser and returns."""
    key, k_act = jax.random.split(carry.key)
    agent, env_state = carry.agent, s.packer.unpack(carry.env_state)
    obs = env_state.obs
    if random_actions:
        action = jax.random.uniform(
            k_act, (s.num_envs, s.envs.action_size), minval=-1.0, maxval=1.0
        )
    else:
        mean, log_std = s.nets.actor.apply(
            agent.actor_params, normalize_obs(s, agent.normalizer, obs), agent.actor_rank
        )
        action, _ = networks.tanh_gaussian_sample(k_act, mean, log_std)
    next_state = s.envs.train_env.step(env_state, action)
    out = acting.outcome(next_state)
    transition = Transition(
        obs=obs,
        action=action,
        reward=out.reward,
        discount=1.0 - out.terminal,
        next_obs=out.next_obs,
        # With final_obs, time-outs bootstrap; brax-style wrappers overwrite next_obs, so those
        # transitions are dropped from the critic loss instead.
        truncation=jnp.zeros_like(out.truncation) if out.bootstrap_timeouts else out.truncation,
    )
    normalizer = running_stats.update(agent.normalizer, obs) if s.norm_on else agent.normalizer
    returns, _ = acting.track_returns(
        acting.Returns(carry.episode_return, carry.last_return), out.reward, out.done
    )
    agent = agent.replace(normalizer=normalizer, env_steps=agent.env_steps + s.num_envs)
    return carry.replace(
        agent=agent,
        buffer=buffers.insert(carry.buffer, transition),
        env_state=s.packer.pack(next_state),
        key=key,
        episode_return=returns.running,
        last_return=returns.last,
    )


# -- learning ----------------------------------------------------------------------------------


def critic_update(s: Setup, agent: AgentState, batch: Transition, alpha, lr, key):
    """One Adam step on the twin critics' soft TD loss; (critic_params, opt_state, metrics)."""
    (_, metrics), grads = jax.value_and_grad(losses.critic_loss, has_aux=True)(
        agent.critic_params,
        s.nets,
        s.loss_cfg,
        agent.actor_params,
        agent.actor_rank,
        agent.critic_rank,
        agent.target_critic_params,
        alpha,
        batch,
        key,
    )
    params, opt = apply_adam(agent.critic_params, grads, agent.critic_opt_state, lr)
    return params, opt, metrics


def actor_update(s: Setup, agent: AgentState, critic_params, batch: Transition, alpha, lr, key):
    """One Adam step on the actor's loss against the updated critics; (params, opt, metrics)."""

    def objective(p):
        return losses.actor_loss(
            p, s.nets, s.loss_cfg, agent.actor_rank, critic_params, agent.critic_rank, alpha,
            batch, key,
        )  # fmt: skip

    (_, metrics), grads = jax.value_and_grad(objective, has_aux=True)(agent.actor_params)
    params, opt = apply_adam(agent.actor_params, grads, agent.actor_opt_state, lr)
    return params, opt, metrics


def alpha_update(s: Setup, agent: AgentState, entropy: jax.Array):
    """Temperature step on ``alpha_loss`` (auto mode; unchanged otherwise)."""
    if not s.auto_alpha:
        return agent.log_alpha, agent.alpha_opt_state
    logp = -entropy * jnp.ones((1,))
    grad = jax.grad(lambda la: losses.alpha_loss(la, logp, s.loss_cfg.target_entropy)[0])(
        agent.log_alpha
    )
    upd, opt = optax.adam(s.alpha_lr).update(grad, agent.alpha_opt_state, agent.log_alpha)
    return optax.apply_updates(agent.log_alpha, upd), opt


def sgd_step(s: Setup, agent: AgentState, buffer: ReplayState, key: jax.Array):
    """One gradient step of critics, actor, temperature and Polyak targets."""
    k_batch, k_critic, k_actor = jax.random.split(key, 3)
    batch = sharding_lib.data(s.mesh, buffers.sample(buffer, k_batch, s.batch_size))
    batch = batch._replace(
        obs=normalize_obs(s, agent.normalizer, batch.obs),
        next_obs=normalize_obs(s, agent.normalizer, batch.next_obs),
    )
    alpha = jnp.exp(agent.log_alpha)
    lr = lr_at(s, agent.grad_steps, agent.last_reset)
    critic_params, critic_opt, c_metrics = critic_update(s, agent, batch, alpha, lr, k_critic)
    actor_params, actor_opt, a_metrics = actor_update(
        s, agent, critic_params, batch, alpha, lr, k_actor
    )
    log_alpha, alpha_opt_state = alpha_update(s, agent, a_metrics["entropy"])
    target = jax.tree.map(
        lambda t, p: (1.0 - s.tau) * t + s.tau * p, agent.target_critic_params, critic_params
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


def shard_state(s: Setup, carry: TrainState) -> TrainState:
    """Envs and the replay buffer split over the mesh's ``"data"`` axis, the agent replicated
    (identity without a multi-device mesh; GSPMD partitions the step around these)."""
    return carry.replace(
        agent=sharding_lib.replicated(s.mesh, carry.agent),
        buffer=carry.buffer._replace(data=sharding_lib.data(s.mesh, carry.buffer.data)),
        env_state=sharding_lib.data(s.mesh, carry.env_state, s.num_envs),
        episode_return=sharding_lib.data(s.mesh, carry.episode_return),
    )


def training_step(s: Setup, carry: TrainState, _=None):
    carry = env_step(s, shard_state(s, carry), random_actions=False)
    key, k_sgd = jax.random.split(carry.key)
    agent, metrics = jax.lax.scan(
        lambda a, k: sgd_step(s, a, carry.buffer, k),
        carry.agent,
        jax.random.split(k_sgd, s.n_grad),
    )
    return carry.replace(agent=agent, key=key), jax.tree.map(jnp.mean, metrics)


# -- rank adaptation ---------------------------------------------------------------------------


def truncate(s: Setup, agent: AgentState) -> AgentState:
    """Algorithm 1 step 4 + optimizer reset + LR restart (ADARL.md §2.5, §2.6, §5.2)."""
    a_mlp, a_rank, _ = lowrank.project_mlp(
        agent.actor_params["params"]["mlp"], agent.actor_rank, s.rule, s.beta
    )
    c_mlp, c_rank, _ = lowrank.project_critics(
        agent.critic_params["params"]["mlp"], agent.critic_rank, s.rule, s.beta
    )
    actor_params = _with_mlp(agent.actor_params, a_mlp)
    critic_params = _with_mlp(agent.critic_params, c_mlp)
    if s.target_mode == "copy":
        target = critic_params
    else:  # "project": the target critics' own best approximation at the new ranks, with
        # factors rotated onto the online ones so that later Polyak steps average like with like
        t_mlp = jax.vmap(functools.partial(project_mlp_to, rank_max=s.rank_max))(
            agent.target_critic_params["params"]["mlp"], c_rank, agent.critic_rank
        )
        t_mlp = jax.vmap(align_mlp_to)(t_mlp, c_mlp, c_rank)
        target = _with_mlp(agent.target_critic_params, t_mlp)
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


def truncation_due(s: Setup, agent: AgentState) -> jax.Array:
    if not (s.algo.truncate and s.n_layers):
        return jnp.asarray(False)
    due = agent.grad_steps >= (agent.num_truncations + 1) * s.interval
    # No truncation after the last update: the final policy gets no recovery phase.
    due = due & (agent.grad_steps < s.total_grad_steps)
    if s.max_truncations > 0:
        due = due & (agent.num_truncations < s.max_truncations)
    return due


def rank_info(s: Setup, agent: AgentState) -> dict[str, jax.Array]:
    out: dict[str, jax.Array] = {}
    if not s.n_layers:
        return out
    for j, sv in enumerate(lowrank.spectra(agent.actor_params["params"]["mlp"], agent.actor_rank)):
        out[f"rank/actor_{j}"] = agent.actor_rank[j]
        out[f"sv/actor_{j}"] = sv
    c_spec = jax.vmap(lowrank.spectra)(agent.critic_params["params"]["mlp"], agent.critic_rank)
    for j, sv in enumerate(c_spec):
        for c in range(2):
            out[f"rank/critic{c}_{j}"] = agent.critic_rank[c, j]
            out[f"sv/critic{c}_{j}"] = sv[c]
    return out


# -- init / update / evaluate ------------------------------------------------------------------


def example_transition(s: Setup) -> Transition:
    """One zero transition of the task's shapes (the replay's row layout)."""
    obs_size, act_size = s.envs.observation_size, s.envs.action_size
    return Transition(
        obs=jnp.zeros((obs_size,)),
        action=jnp.zeros((act_size,)),
        reward=jnp.zeros(()),
        discount=jnp.zeros(()),
        next_obs=jnp.zeros((obs_size,)),
        truncation=jnp.zeros(()),
    )


def start(s: Setup, key: jax.Array) -> TrainState:
    """Fresh agent and reset envs with no replay yet (``buffer`` None): what a checkpoint saved
    without replay holds (``train.checkpoint_replay=False``)."""
    k_agent, k_env, key = jax.random.split(key, 3)
    env_state = s.envs.train_env.reset(jax.random.split(k_env, s.num_envs))
    returns = acting.returns_init(s.num_envs)
    return TrainState(
        agent=init_agent(s, k_agent),
        buffer=None,
        env_state=s.packer.pack(env_state),
        key=key,
        episode_return=returns.running,
        last_return=returns.last,
    )


def fill(s: Setup, carry: TrainState, random_actions: bool) -> TrainState:
    """A new empty replay filled with ``train.prefill_steps`` transitions, no gradient steps.

    ``random_actions=True``: uniform actions, the start of a run (Spinning Up's start_steps).
    ``False``: the current stochastic policy, the warm-up of a run resumed from a checkpoint
    saved without its replay (the optimizer states and learning-rate schedule are kept).
    """
    carry = carry.replace(buffer=buffers.init(s.replay_size, example_transition(s)))
    n_prefill = math.ceil(s.prefill_steps / s.num_envs)
    if n_prefill:
        carry = jax.lax.fori_loop(
            0,
            n_prefill,
            lambda _, c: env_step(s, shard_state(s, c), random_actions=random_actions),
            carry,
        )
    return shard_state(s, carry)


def init(s: Setup, key: jax.Array) -> TrainState:
    """Fresh agent, empty replay prefilled with ``train.prefill_steps`` random-action steps."""
    return fill(s, start(s, key), random_actions=True)


def update(s: Setup, carry: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
    """``train.steps_per_update`` training steps, then a rank adaptation if one is due."""
    carry, metrics = jax.lax.scan(functools.partial(training_step, s), carry, None, s.n_steps)
    metrics = jax.tree.map(jnp.mean, metrics)
    agent = carry.agent
    agent = jax.lax.cond(
        truncation_due(s, agent), functools.partial(truncate, s), lambda a: a, agent
    )
    info = {k: v for k, v in rank_info(s, agent).items() if k.startswith("rank/")}
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
    return shard_state(s, carry.replace(agent=agent)), metrics


def evaluate(s: Setup, agent: AgentState, key: jax.Array, params=None) -> jax.Array:
    """f32 (E,) deterministic returns under nominal dynamics (params None) or under ``params``
    (dict name -> (E,)); E = ``eval.num_episodes`` without params."""
    n = s.num_eval if params is None else jax.tree.leaves(params)[0].shape[0]
    return acting.episode_returns(
        s.envs.eval_env,
        functools.partial(policy, s, agent),
        jax.random.split(key, n),
        params,
        s.eval_steps,
    )


class TrainFns(NamedTuple):
    """Pure functions of one seed (vmap them for several), :func:`functools.partial` of the
    module-level functions above over one :class:`Setup`.

    init: key -> TrainState (prefilled replay).
    update: TrainState -> (TrainState, metrics dict of f32 ()) (jit it).
    evaluate: (AgentState, key, params|None) -> f32 (E,) deterministic episode returns under
      nominal dynamics (params None) or under ``params`` (dict name -> (E,)).
    policy: (AgentState, obs f32 (..., O)) -> deterministic action f32 (..., A).
    rank_info: AgentState -> dict of ranks and singular values (for logging).
    truncate: AgentState -> AgentState, one rank adaptation + optimizer reset (unconditional).
    lr: (grad_step, last_reset) -> learning rate.
    nets, envs, total_grad_steps, setup.
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
    setup: Setup


def make_train_fns(config: ml_collections.ConfigDict, envs: EnvBundle | None = None) -> TrainFns:
    """Builds init/update/evaluate for one seed (resolves and validates ``config`` first)."""
    config = resolve_config(config)
    validate(config)
    s = make_setup(config, make_envs(config) if envs is None else envs)
    bind = functools.partial
    return TrainFns(
        init=bind(init, s),
        update=bind(update, s),
        evaluate=bind(evaluate, s),
        policy=bind(policy, s),
        rank_info=bind(rank_info, s),
        truncate=bind(truncate, s),
        lr=bind(lr_at, s),
        nets=s.nets,
        envs=s.envs,
        total_grad_steps=s.total_grad_steps,
        setup=s,
    )


def make_train(config: ml_collections.ConfigDict, envs: EnvBundle | None = None):
    """``train(key) -> (TrainState, metrics)``: the whole run as one pure function.

    ``metrics`` holds every update's metrics stacked over updates, plus ``eval/return`` f32 ()
    (mean deterministic return under nominal dynamics at the end). jit it; vmap it over keys
    for several seeds.
    """
    config = resolve_config(config)
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


class Seeded(NamedTuple):
    """Jitted functions over ``S`` vmapped seeds (leading axis (S,) on every state leaf).

    init: key -> TrainState (prefilled replay; the key is split per seed).
    update: TrainState -> (TrainState, metrics); its argument is *donated*, so the replay is
      updated in place instead of being copied (the state passed in is deleted).
    evaluate: (AgentState, key) -> f32 (S, E) nominal returns. rank_info: AgentState -> dict.
    start: key -> TrainState without replay (:func:`start`).
    prefill / refill: TrainState without replay -> with a filled one (:func:`fill`; uniform
      actions / the current policy).
    """

    init: Callable
    update: Callable
    evaluate: Callable
    rank_info: Callable
    start: Callable
    prefill: Callable
    refill: Callable


_SEEDED_CACHE: dict[tuple[int, int], tuple[TrainFns, Seeded]] = {}


def make_seeded(fns: TrainFns, num_seeds: int) -> Seeded:
    """:class:`Seeded` functions of ``fns`` over ``num_seeds`` vmapped seeds.

    Memoised per ``fns`` object so repeated runs in one process (tests, resume) reuse the
    compiled functions.
    """
    cache_key = (id(fns), num_seeds)
    if cache_key not in _SEEDED_CACHE:
        s = fns.setup
        keys = functools.partial(_seed_keys, num_seeds=num_seeds)
        _SEEDED_CACHE[cache_key] = (
            fns,
            Seeded(
                init=jax.jit(lambda key: jax.vmap(fns.init)(keys(key))),
                update=jax.jit(jax.vmap(fns.update), donate_argnums=0),
                evaluate=jax.jit(jax.vmap(fns.evaluate, in_axes=(0, None))),
                rank_info=jax.jit(jax.vmap(fns.rank_info)),
                start=jax.jit(lambda key: jax.vmap(functools.partial(start, s))(keys(key))),
                prefill=jax.jit(jax.vmap(functools.partial(fill, s, random_actions=True))),
                refill=jax.jit(jax.vmap(functools.partial(fill, s, random_actions=False))),
            ),
        )
    return _SEEDED_CACHE[cache_key][1]


class ReplayOutsideCheckpoints:
    """The harness's ``init``/``update`` pair for ``train.checkpoint_replay=False``: the state
    the harness sees and checkpoints has ``buffer=None`` and the replay lives here between
    updates. Without a buffer here, the state is either fresh (no gradient step yet: prefill
    with uniform actions, as :func:`init`) or restored from a checkpoint (refill
    ``train.prefill_steps`` transitions with the restored policy, then continue)."""

    def __init__(self, seeded: Seeded):
        self.seeded = seeded
        self.buffer: ReplayState | None = None
        self.init = seeded.start

    def update(self, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        if self.buffer is None:
            fresh = int(np.max(np.asarray(state.agent.grad_steps))) == 0
            if not fresh:
                print("[replay] resumed without a saved replay: refilling it with the policy")
            full = (self.seeded.prefill if fresh else self.seeded.refill)(state)
        else:
            full = state.replace(buffer=self.buffer)
        full, metrics = self.seeded.update(full)
        self.buffer = full.buffer
        return full.replace(buffer=None), metrics


def timed(update: Callable) -> Callable:
    """``update`` plus ``perf/update_s``, its wall time (host clock, result awaited)."""

    def run(state):
        t0 = time.perf_counter()
        state, metrics = update(state)
        jax.block_until_ready(metrics)
        return state, {**metrics, "perf/update_s": time.perf_counter() - t0}

    return run


def check_memory(config: ml_collections.ConfigDict, fns: TrainFns, verbose: bool = True):
    """:func:`adarl.footprint.check_fits` for ``config`` (resolved) from traced shapes only."""
    s, key = fns.setup, jax.random.PRNGKey(0)
    return footprint.check_fits(
        config,
        jax.eval_shape(functools.partial(example_transition, s)),
        jax.eval_shape(functools.partial(init_agent, s), key),
        jax.eval_shape(lambda k: s.envs.train_env.reset(jax.random.split(k, 1)), key),
        verbose=verbose,
    )


def checkpointed_init(config: ml_collections.ConfigDict, seeded: Seeded) -> Callable:
    """The init whose shapes the run's checkpoints have (with or without the replay)."""
    return seeded.init if config.train.checkpoint_replay else seeded.start


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
    config = resolve_config(config)
    validate(config)
    fns = make_train_fns(config) if fns is None else fns
    check_memory(config, fns, verbose=progress)
    num_seeds = int(config.num_seeds)
    seeded = make_seeded(fns, num_seeds)
    eval_fn, info_fn = seeded.evaluate, seeded.rank_info
    if config.train.checkpoint_replay:
        init, update = seeded.init, seeded.update
    else:
        outside = ReplayOutsideCheckpoints(seeded)
        init, update = outside.init, outside.update
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
        update=timed(update),
        num_updates=int(config.train.num_updates),
        seed=int(config.seed),
        checkpoint_every=int(config.train.checkpoint_every),
        evaluate=evaluate,
        eval_every=int(config.train.eval_every) or None,
        plots={
            "return.png": harness.Plot(
                ["eval/return", "train/return"],
                title=f"{config.algo} on {config.env.name}: episode return",
                ylabel="episode return",
            ),
            "rank.png": harness.Plot(
                rank_keys if num_factorised(config) else [],
                title=f"{config.algo}: rank of the factorised layers",
                ylabel="rank",
            ),
            "losses.png": harness.Plot(
                ["train/critic_loss", "train/actor_loss"], title="SAC losses", ylabel="loss"
            ),
        },
        desc=str(config.algo),
        headline=["eval/return", "train/return", "rank/actor_0"],
        x_label=(
            f"update ({int(config.train.steps_per_update) * int(config.train.num_envs)} env "
            f"steps, {int(config.train.steps_per_update) * int(config.train.grad_updates_per_step)}"
            " gradient steps each)"
        ),
        stop_after=stop_after,
        progress=progress,
    )
    if summary.get("interrupted") or "robustness" in summary or fns.envs.spec is None:
        return summary
    state = checkpoints.load_state(workdir, init)
    summary["robustness"] = final_robustness(
        config, workdir, fns, info_fn, state.agent, progress=progress
    )
    with open(os.path.join(workdir, harness.SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=str)
    return summary


def final_robustness(
    config: ml_collections.ConfigDict,
    workdir: str,
    fns: TrainFns,
    info_fn,
    agents: AgentState,
    progress: bool = True,
) -> dict[str, Any]:
    """Nominal and grid returns of the final agents (leading seed axis), final ranks; writes
    ``robustness.json``/``.png`` and ``spectrum.png``; returns the summary's ``robustness``.
    ``progress``: a progress bar over the grid rows."""
    key = jax.random.PRNGKey(int(config.seed) + 1)
    result = evaluate_lib.robustness(fns, agents, config, key, progress=progress)
    result["final_ranks"] = {
        k: np.asarray(v).tolist()
        for k, v in jax.device_get(info_fn(agents)).items()
        if k.startswith("rank/")
    }
    result["intrinsic_rank"] = 2 * fns.envs.action_size + 1  # Tiwari et al., ADARL.md §7.4
    evaluate_lib.save(result, workdir, title=f"{config.algo} on {config.env.name}")
    evaluate_lib.plot_spectra(
        os.path.join(workdir, SPECTRA_FILE), os.path.join(workdir, "spectrum.png")
    )
    return {
        k: result[k] for k in ("nominal", "grid_mean", "grid_min", "final_ranks", "intrinsic_rank")
    }


def load_agents(
    workdir: str, fns: TrainFns | None = None
) -> tuple[AgentState, TrainFns, ml_collections.ConfigDict]:
    """The latest checkpointed agents (leading seed axis (S,)), the train fns and the config."""
    config = checkpoints.read_config(workdir)
    fns = make_train_fns(config) if fns is None else fns
    seeded = make_seeded(fns, int(config.num_seeds))
    state = checkpoints.load_state(workdir, checkpointed_init(resolve_config(config), seeded))
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
