"""SAC losses (Haarnoja et al. 2018, arXiv 1812.05905) as importable functions.

Each returns ``(loss f32 (), metrics dict)``. ``batch`` is a :class:`adarl.types.Transition` of
B transitions whose observations are already normalised. Shapes: obs (B, O), action (B, A).

* critic (Eq. 5 with clipped double-Q, Fujimoto et al. 2018):
  y = r·c + γ·d·(min_j Q̄_j(s', a') − α log π(a'|s')),  a' ~ π(·|s'),
  L = ½ Σ_j mean(((Q_j(s, a) − y)·(1 − trunc))²)            (brax's masking of time-outs)
* actor (Eq. 7): L = mean(α log π(ã|s) − min_j Q_j(s, ã)), ã ~ π(·|s) reparameterised
* temperature (Eq. 18): L = mean(−log α · (log π(ã|s) + H̄))   (gradient w.r.t. log α)

Parseval (adarl.parseval) adds λ Σ ‖KᵀK − sI‖² over the hidden layers of the network whose loss
it is (actor or critics) when ``parseval_lam > 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from adarl import networks, parseval
from adarl.types import Transition


class Networks(NamedTuple):
    """The Flax modules: ``actor`` (:class:`networks.Actor`), ``critic`` (:class:`networks.Critics`)."""

    actor: nn.Module
    critic: nn.Module


class LossConfig(NamedTuple):
    """Scalars of the losses (plain floats; sweepable).

    gamma: discount γ. reward_scaling: c. target_entropy: H̄ (e.g. −|A|).
    parseval_lam: λ (0 disables). parseval_s: s. parseval_width_scaling: (64/width)² on/off.
    """

    gamma: float
    reward_scaling: float
    target_entropy: float
    parseval_lam: float = 0.0
    parseval_s: float = 2.0
    parseval_width_scaling: bool = True


def sample_action(nets: Networks, actor_params, actor_rank, obs, key):
    """ã ~ π(·|obs) and log π(ã|obs): f32 (B, A), (B,)."""
    mean, log_std = nets.actor.apply(actor_params, obs, actor_rank)
    return networks.tanh_gaussian_sample(key, mean, log_std)


def critic_loss(
    critic_params,
    nets: Networks,
    cfg: LossConfig,
    actor_params,
    actor_rank: jax.Array,
    critic_rank: jax.Array,
    target_critic_params,
    alpha: jax.Array,
    batch: Transition,
    key: jax.Array,
):
    """Clipped double-Q TD loss; returns (loss, metrics)."""
    next_action, next_logp = sample_action(nets, actor_params, actor_rank, batch.next_obs, key)
    next_q = nets.critic.apply(target_critic_params, batch.next_obs, next_action, critic_rank)
    next_v = jnp.min(next_q, axis=0) - alpha * next_logp
    target = jax.lax.stop_gradient(
        batch.reward * cfg.reward_scaling + batch.discount * cfg.gamma * next_v
    )
    q = nets.critic.apply(critic_params, batch.obs, batch.action, critic_rank)  # (C, B)
    err = (q - target) * (1.0 - batch.truncation)
    td = 0.5 * jnp.mean(err**2, axis=-1).sum()
    metrics = {"critic_loss": td, "q_mean": jnp.mean(q)}
    return _add_parseval(
        td, metrics, cfg, "critic_parseval", parseval.critic_kernels, critic_params, critic_rank
    )


def _add_parseval(loss, metrics, cfg: LossConfig, name: str, kernels_fn, params, rank):
    """Adds the Parseval penalty (ADARL.md §7.2) of ``kernels_fn(params, rank)`` when λ > 0."""
    if cfg.parseval_lam > 0:
        pen = parseval.penalty(
            kernels_fn(params, rank), cfg.parseval_lam, cfg.parseval_s, cfg.parseval_width_scaling
        )
        loss = loss + pen
        metrics[name] = pen
    return loss, metrics


def actor_loss(
    actor_params,
    nets: Networks,
    cfg: LossConfig,
    actor_rank: jax.Array,
    critic_params,
    critic_rank: jax.Array,
    alpha: jax.Array,
    batch: Transition,
    key: jax.Array,
):
    """Reparameterised policy loss; returns (loss, metrics) with the entropy estimate."""
    action, logp = sample_action(nets, actor_params, actor_rank, batch.obs, key)
    q = nets.critic.apply(critic_params, batch.obs, action, critic_rank)
    pi_loss = jnp.mean(alpha * logp - jnp.min(q, axis=0))
    metrics = {"actor_loss": pi_loss, "entropy": -jnp.mean(logp)}
    return _add_parseval(
        pi_loss, metrics, cfg, "actor_parseval", parseval.actor_kernels, actor_params, actor_rank
    )


def alpha_loss(log_alpha: jax.Array, logp: jax.Array, target_entropy: float):
    """Temperature loss (SAC Eq. 18) on log α; ``logp`` f32 (B,) is treated as a constant."""
    loss = -jnp.mean(log_alpha * jax.lax.stop_gradient(logp + target_entropy))
    return loss, {"alpha_loss": loss}
