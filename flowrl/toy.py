"""FlowRL's toy contrast (arXiv 2509.15207, Fig. 1): reward matching vs reward maximisation on an
enumerable answer set, measured by the exact KL to the reward-tilted target.

A single-step policy pi_theta = softmax(theta) over K answers starts at pi_ref. The target is

    pi*(y) = pi_ref(y) exp(beta r(y)) / Z,    Z = sum_y pi_ref(y) exp(beta r(y)),

and every step samples G answers from pi_theta (on-policy) and takes one Adam step on

* ``flowrl``: the FlowRL loss with the raw reward as r_hat (w = 1, a learned scalar log Z); its
  zero-residual point is exactly pi*;
* ``flowrl_zscore``: the official FlowRL recipe, r_hat = the group z-score of the G rewards
  (FLOWRL.md §3.2); its fixed point is not pi*, reported for contrast;
* ``grpo``: PPO-clip with group-normalised advantages and no KL (reward maximisation).

``make_toy_train(config) -> train(key)`` returns KL(pi_theta || pi*) and the expected reward every
``log_every`` steps; it is pure and vmapped over seeds by the caller. The task (pi_ref, r) is
fixed by ``task_seed``: K answers, ``num_modes`` of them correct (reward 1) spread over the
reference's probability range, the rest reward 0.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import harness
from flowrl import losses
from flowrl.advantages import compute_advantages, outcome_to_token_rewards
from flowrl.types import AdvantageConfig, AdvantageInputs, LossInputs

Array = jax.Array


class ToyTask(NamedTuple):
    """ref_logp f32[K] log pi_ref; reward f32[K]; target_logp f32[K] log pi* for beta."""

    ref_logp: Array
    reward: Array
    target_logp: Array


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.num_answers = 32  # K
    c.num_modes = 4  # correct answers
    c.task_seed = 0
    c.beta = 3.0  # target temperature; 15 (paper) makes pi* a near-hard mask of the modes
    c.group_size = 16  # G samples per step
    c.steps = 500
    c.lr = 0.05
    c.log_every = 10
    return c


def make_task(config) -> ToyTask:
    rng = np.random.default_rng(config.task_seed)
    logits = rng.normal(0.0, 1.0, config.num_answers)
    ref_logp = logits - np.log(np.sum(np.exp(logits)))
    order = np.argsort(-ref_logp)
    # Modes at evenly spaced ranks of pi_ref: one likely, others rare, so a collapse is visible.
    ranks = np.linspace(0, config.num_answers - 1, config.num_modes).astype(int)
    reward = np.zeros(config.num_answers)
    reward[order[ranks]] = 1.0
    target = ref_logp + config.beta * reward
    target = target - np.log(np.sum(np.exp(target)))
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return ToyTask(f32(ref_logp), f32(reward), f32(target))


def kl_to_target(logits: Array, task: ToyTask) -> Array:
    """KL(pi_theta || pi*) in nats, exact over the K answers."""
    logp = jax.nn.log_softmax(logits)
    return jnp.sum(jnp.exp(logp) * (logp - task.target_logp))


def group_z_score(rewards: Array) -> Array:
    """GRPO advantage f32[G, 1] of one group's rewards f32[G] (unbiased std, eps 1e-6)."""
    mask = jnp.ones((rewards.shape[0], 1))
    inputs = AdvantageInputs(
        outcome_to_token_rewards(rewards, mask), mask, jnp.zeros(rewards.shape[0], jnp.int32)
    )
    return compute_advantages("grpo", inputs, AdvantageConfig()).advantages


class ToyParams(NamedTuple):
    logits: Array  # f32[K]
    log_z: Array  # f32[] (FlowRL only)


def _flowrl_loss(params: ToyParams, task: ToyTask, answers: Array, r_hat: Array, beta: float):
    logp = jax.nn.log_softmax(params.logits)[answers][:, None]
    n = answers.shape[0]
    inputs = LossInputs(
        logp,
        jnp.ones((n, 1)),
        r_hat,
        ref_logp=task.ref_logp[answers][:, None],
        log_z=jnp.full((n,), params.log_z),
    )
    cfg = losses.default_loss_config("flowrl", beta=beta, is_weight="one")
    return losses.get_loss("flowrl")(inputs, cfg)[0]


def flowrl_raw(params, task, answers, beta):
    return _flowrl_loss(params, task, answers, task.reward[answers][:, None], beta)


def flowrl_zscore(params, task, answers, beta):
    return _flowrl_loss(params, task, answers, group_z_score(task.reward[answers]), beta)


def grpo(params, task, answers, beta):
    del beta
    logp = jax.nn.log_softmax(params.logits)[answers][:, None]
    n = answers.shape[0]
    adv = group_z_score(task.reward[answers])
    inputs = LossInputs(logp, jnp.ones((n, 1)), adv, old_logp=jax.lax.stop_gradient(logp))
    cfg = losses.default_loss_config("grpo", kl_coef=0.0)
    return losses.get_loss("grpo")(inputs, cfg)[0]


# method name -> loss(params, task, answers i32[G], beta) -> f32[]
METHODS: harness.Registry = harness.Registry("toy method")
METHODS.add("flowrl", flowrl_raw)
METHODS.add("flowrl_zscore", flowrl_zscore)
METHODS.add("grpo", grpo)


class ToyCarry(NamedTuple):
    params: ToyParams
    opt_state: optax.OptState


def _step(config, task, loss_fn, opt, carry: ToyCarry, key: Array):
    answers = jax.random.categorical(key, carry.params.logits, shape=(config.group_size,))
    grads = jax.grad(loss_fn)(carry.params, task, answers, config.beta)
    updates, opt_state = opt.update(grads, carry.opt_state)
    params = optax.apply_updates(carry.params, updates)
    return ToyCarry(params, opt_state), None


def _log_block(config, task, loss_fn, opt, carry: ToyCarry, key: Array):
    step = functools.partial(_step, config, task, loss_fn, opt)
    carry, _ = jax.lax.scan(step, carry, jax.random.split(key, config.log_every))
    pi = jax.nn.softmax(carry.params.logits)
    return carry, (kl_to_target(carry.params.logits, task), jnp.sum(pi * task.reward))


class ToyCurves(NamedTuple):
    """kl f32[n_log + 1] KL(pi || pi*) at steps 0, log_every, ...; reward f32[n_log + 1]."""

    kl: Array
    reward: Array


def make_toy_train(config, method: str):
    """``train(key) -> ToyCurves`` for one method (pure; vmap it over keys for seeds)."""
    if config.steps % config.log_every:
        raise harness.ConfigError(
            f"config.steps={config.steps} must be a multiple of config.log_every={config.log_every}"
        )
    loss_fn = METHODS.get(method, "method")
    task = make_task(config)
    opt = optax.adam(config.lr)
    block = functools.partial(_log_block, config, task, loss_fn, opt)

    def train(key):
        params = ToyParams(task.ref_logp, jnp.zeros((), jnp.float32))
        carry = ToyCarry(params, opt.init(params))
        _, (kl, reward) = jax.lax.scan(
            block, carry, jax.random.split(key, config.steps // config.log_every)
        )
        kl0 = kl_to_target(task.ref_logp, task)
        r0 = jnp.sum(jnp.exp(task.ref_logp) * task.reward)
        return ToyCurves(jnp.concatenate([kl0[None], kl]), jnp.concatenate([r0[None], reward]))

    return train
