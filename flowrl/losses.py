"""Policy losses for sequence policies, registered by name with one signature.

Every loss is ``loss_fn(inputs: LossInputs, config: LossConfig) -> (loss f32[], metrics)``, with
``metrics`` a dict of f32[] arrays (no host transfers, so losses run under ``jit``/``grad``).
All reductions go through :func:`agg_loss`. Registered names (:class:`LossName`):

======== ============================================================ ======================
name     per-token objective (minimised)                              default aggregation
======== ============================================================ ======================
sft      -log pi                                                      token-mean
reinforce -A log pi                                                   token-mean
ppo      max(-A rho, -A clip(rho, 1-e_lo, 1+e_hi)), dual clip c        token-mean
grpo     ppo-clip + kl_coef * k3 (DeepSeekMath, eq. 3)                seq-mean-token-mean
dr_grpo  ppo-clip, constant-length normaliser (arXiv 2503.20783)      seq-mean-token-sum-norm
dapo     ppo-clip with clip-higher 0.2 / 0.28 (arXiv 2503.14476)      token-mean
gspo     clip of the sequence ratio s_i = (pi/pi_old)^(1/|y|)         seq-mean-token-mean
cispo    -sg(clip(rho)) A log pi (MiniMax-M1, arXiv 2506.13585)       token-mean
flowrl   w (log Z + avg log pi - beta r_hat - avg log pi_ref)^2       mean over sequences
======== ============================================================ ======================

with rho = exp(log pi - log pi_old). :func:`default_loss_config` returns each loss's published
hyperparameters. Usage::

    loss_fn = get_loss("dapo")
    loss, metrics = loss_fn(LossInputs(logp, mask, adv, old_logp=old), default_loss_config("dapo"))
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

import harness
from flowrl.aggregation import agg_loss, masked_mean, seq_mean, seq_sum
from flowrl.kl import kl_estimate
from flowrl.types import (
    AggMode,
    Array,
    FlowRLReference,
    ISWeightMode,
    LossConfig,
    LossInputs,
    LossName,
    Metrics,
    PolicyLoss,
    Registry,
)

__all__ = [
    "AggMode",
    "LossConfig",
    "LossInputs",
    "LossName",
    "PolicyLoss",
    "agg_loss",
    "compute_policy_loss",
    "default_loss_config",
    "FLOWRL_WEIGHTS",
    "flowrl_optimal_log_z",
    "flowrl_residual",
    "flowrl_weight_overrides",
    "get_loss",
    "loss_names",
    "ppo_clip_token_loss",
    "register_loss",
    "value_loss",
]

LOG_RATIO_CLAMP = 20.0  # verl clamps log(pi/pi_old) to [-20, 20] before exp

_REGISTRY: Registry[LossName, PolicyLoss] = Registry("policy loss", LossName)


def register_loss(name: LossName | str):
    """Decorator adding a :class:`PolicyLoss` under ``name`` (a :class:`LossName` member);
    registering a name twice raises ValueError."""
    return _REGISTRY.register(name)


def get_loss(name: LossName | str) -> PolicyLoss:
    """The registered loss; unknown names raise ValueError listing the registered ones."""
    return _REGISTRY.get(name)


def loss_names() -> list[str]:
    return list(_REGISTRY)


_DEFAULTS: dict[str, LossConfig] = {
    LossName.SFT.value: LossConfig(),
    LossName.REINFORCE.value: LossConfig(),
    LossName.PPO.value: LossConfig(clip_low=0.2, clip_high=0.2, dual_clip=3.0),
    # DeepSeekMath: eps 0.2, k3 KL in the loss with beta 0.04 [Recalled, FLOWRL.md §2.2].
    LossName.GRPO.value: LossConfig(clip_low=0.2, clip_high=0.2, dual_clip=None, kl_coef=0.04),
    LossName.DR_GRPO.value: LossConfig(clip_low=0.2, clip_high=0.2, dual_clip=None),
    # DAPO script: clip-higher 0.2/0.28, clip_ratio_c 10, no KL.
    LossName.DAPO.value: LossConfig(clip_low=0.2, clip_high=0.28, dual_clip=10.0),
    # GSPO paper v2 §5.1 (via TRL): 3e-4 / 4e-4.
    LossName.GSPO.value: LossConfig(clip_low=3e-4, clip_high=4e-4, dual_clip=None),
    # CISPO: no lower bound on the IS weight [Secondary]; upper bound [Rec] 0.28 (not verified).
    LossName.CISPO.value: LossConfig(clip_low=1.0, clip_high=0.28, dual_clip=None),
    # FlowRL: beta 15; w unclipped, as in the paper-version code (FLOWRL.md §3.1, §3.4; the
    # named alternatives are FLOWRL_WEIGHTS below).
    LossName.FLOWRL.value: LossConfig(beta=15.0, is_weight="unclipped"),
}

_DEFAULT_AGG: dict[str, str] = {
    LossName.SFT.value: AggMode.TOKEN_MEAN.value,
    LossName.REINFORCE.value: AggMode.TOKEN_MEAN.value,
    LossName.PPO.value: AggMode.TOKEN_MEAN.value,
    LossName.GRPO.value: AggMode.SEQ_MEAN_TOKEN_MEAN.value,
    LossName.DR_GRPO.value: AggMode.SEQ_MEAN_TOKEN_SUM_NORM.value,
    LossName.DAPO.value: AggMode.TOKEN_MEAN.value,
    LossName.GSPO.value: AggMode.SEQ_MEAN_TOKEN_MEAN.value,
    LossName.CISPO.value: AggMode.TOKEN_MEAN.value,
}


def default_loss_config(name: LossName | str, **overrides) -> LossConfig:
    """Published hyperparameters of loss ``name`` (FLOWRL.md §2-3), with field overrides."""
    get_loss(name)  # unknown names raise here with the registered list
    key = name.value if isinstance(name, LossName) else name
    return dataclasses.replace(_DEFAULTS[key], **overrides)


def compute_policy_loss(
    name: LossName | str, inputs: LossInputs, config: LossConfig | None = None
) -> tuple[Array, Metrics]:
    """``get_loss(name)(inputs, config)``; ``config`` defaults to ``default_loss_config(name)``."""
    return get_loss(name)(inputs, default_loss_config(name) if config is None else config)


# --------------------------------------------------------------------------- helpers


def _check(inputs: LossInputs, name: str, *required: str) -> None:
    """Shape and presence checks; they read static shapes only, so they run before compiling."""
    shape = inputs.logp.shape
    if len(shape) != 2:
        raise ValueError(f"LossInputs.logp must be [B, T], got shape {shape}")
    for field in ("mask", "advantages", "old_logp", "ref_logp"):
        value = getattr(inputs, field)
        if value is not None and value.shape != shape:
            raise ValueError(f"LossInputs.{field} has shape {value.shape}, expected {shape}")
    if inputs.log_z is not None and inputs.log_z.shape != shape[:1]:
        raise ValueError(f"LossInputs.log_z has shape {inputs.log_z.shape}, expected {shape[:1]}")
    for field in required:
        if getattr(inputs, field) is None:
            raise ValueError(f"LossInputs.{field} is required by loss {name!r}")


def _agg_mode(config: LossConfig, name: str) -> str:
    return config.agg_mode if config.agg_mode is not None else _DEFAULT_AGG[name]


def _log_ratio(logp: Array, old_logp: Array) -> Array:
    return jnp.clip(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _with_kl(
    loss: Array, metrics: Metrics, inputs: LossInputs, config: LossConfig, mode: str, name: str
) -> tuple[Array, Metrics]:
    """Add ``kl_coef * agg_loss(kl)`` when ``kl_coef > 0`` (GRPO-style KL in the loss)."""
    if config.kl_coef > 0.0:
        _check(inputs, name, "ref_logp")
        kl = agg_loss(
            kl_estimate(inputs.logp, inputs.ref_logp, config.kl_type),
            inputs.mask,
            mode,
            config.max_len,
        )
        metrics = {**metrics, "kl_loss": kl}
        loss = loss + config.kl_coef * kl
    return loss, {**metrics, "loss": loss}


def ppo_clip_token_loss(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
) -> tuple[Array, Array, Array]:
    """Per-token PPO-clip loss with asymmetric range and optional dual clip (FLOWRL.md §2.1).

    rho = exp(log pi - log pi_old); l1 = -A rho; l2 = -A clip(rho, 1 - e_lo, 1 + e_hi);
    l = max(l1, l2), and for A < 0 with dual clip c: l = min(l, -A c) (Ye et al. 2020, eq. 5).

    Args:
      logp, old_logp, advantages: f32[B, T].
      clip_low, clip_high: e_lo, e_hi.
      dual_clip: c > 1, or None.

    Returns:
      (loss f32[B, T], clipped f32[B, T] indicator of l2 > l1, dual-clipped f32[B, T] indicator).
    """
    ratio = jnp.exp(_log_ratio(logp, old_logp))
    l1 = -advantages * ratio
    l2 = -advantages * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = jnp.maximum(l1, l2)
    clipped = (l2 > l1).astype(jnp.float32)
    dual = jnp.zeros_like(loss)
    if dual_clip is not None:
        l3 = -advantages * dual_clip
        dual = ((advantages < 0) & (loss > l3)).astype(jnp.float32)
        loss = jnp.where(advantages < 0, jnp.minimum(loss, l3), loss)
    return loss, clipped, dual


def _clipped_pg(inputs: LossInputs, config: LossConfig, name: str) -> tuple[Array, Metrics]:
    _check(inputs, name, "old_logp")
    mode = _agg_mode(config, name)
    loss_mat, clipped, dual = ppo_clip_token_loss(
        inputs.logp,
        inputs.old_logp,
        inputs.advantages,
        config.clip_low,
        config.clip_high,
        config.dual_clip,
    )
    pg = agg_loss(loss_mat, inputs.mask, mode, config.max_len)
    metrics = {
        "pg_loss": pg,
        "pg_clipfrac": agg_loss(clipped, inputs.mask, AggMode.TOKEN_MEAN),
        "pg_clipfrac_lower": agg_loss(dual, inputs.mask, AggMode.TOKEN_MEAN),
        "ppo_kl": agg_loss(inputs.old_logp - inputs.logp, inputs.mask, AggMode.TOKEN_MEAN),
    }
    return _with_kl(pg, metrics, inputs, config, mode, name)


# --------------------------------------------------------------------------- losses


@register_loss(LossName.SFT)
def sft_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """Negative log-likelihood of the (demonstration) tokens: agg(-log pi, mask)."""
    _check(inputs, LossName.SFT.value)
    nll = agg_loss(-inputs.logp, inputs.mask, _agg_mode(config, "sft"), config.max_len)
    return nll, {"loss": nll, "nll": nll}


@register_loss(LossName.REINFORCE)
def reinforce_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """REINFORCE (Williams 1992): agg(-A log pi, mask); gradient -A grad log pi per token."""
    name = LossName.REINFORCE.value
    _check(inputs, name)
    mode = _agg_mode(config, name)
    pg = agg_loss(-inputs.advantages * inputs.logp, inputs.mask, mode, config.max_len)
    return _with_kl(pg, {"pg_loss": pg}, inputs, config, mode, name)


@register_loss(LossName.PPO)
def ppo_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """PPO-clip (Schulman et al. 2017, eq. 7) with asymmetric range and dual clip; see
    :func:`ppo_clip_token_loss`. Needs ``old_logp``."""
    return _clipped_pg(inputs, config, LossName.PPO.value)


@register_loss(LossName.GRPO)
def grpo_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """GRPO (DeepSeekMath, arXiv 2402.03300, eq. 3): PPO-clip averaged per response then per group
    (seq-mean-token-mean) minus beta * k3 KL to pi_ref in the loss (``kl_coef``). Use the ``grpo``
    advantage estimator for A."""
    return _clipped_pg(inputs, config, LossName.GRPO.value)


@register_loss(LossName.DR_GRPO)
def dr_grpo_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """Dr.GRPO (arXiv 2503.20783): PPO-clip summed over tokens and divided by a constant length
    (seq-mean-token-sum-norm, ``max_len``); use the ``dr_grpo`` advantage (no std)."""
    return _clipped_pg(inputs, config, LossName.DR_GRPO.value)


@register_loss(LossName.DAPO)
def dapo_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """DAPO (arXiv 2503.14476, eq. 8): PPO-clip with clip-higher (0.2 / 0.28) and token-level
    averaging over all tokens of the batch; dynamic sampling and overlong shaping live in
    :mod:`flowrl.sampling` and :mod:`flowrl.rewards`."""
    return _clipped_pg(inputs, config, LossName.DAPO.value)


@register_loss(LossName.GSPO)
def gspo_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """GSPO (arXiv 2507.18071), in its GSPO-token form.

    s_i = exp((1/|y_i|) sum_t (log pi - log pi_old)) and per token
    s_{i,t} = sg(s_i) pi(y_t) / sg(pi(y_t)), equal in value to s_i; the token loss is
    max(-A s_{i,t}, -A clip(s_{i,t}, 1 - e_lo, 1 + e_hi)), so clipping removes whole sequences.
    With a per-sequence advantage and seq-mean-token-mean this is exactly the sequence-level
    objective (1/G) sum_i min(s_i A_i, clip(s_i) A_i).
    """
    name = LossName.GSPO.value
    _check(inputs, name, "old_logp")
    mode = _agg_mode(config, name)
    seq_log_ratio = seq_mean(inputs.logp - inputs.old_logp, inputs.mask)
    seq_log_ratio = jnp.clip(seq_log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    token_log_ratio = jax.lax.stop_gradient(seq_log_ratio)[:, None] + (
        inputs.logp - jax.lax.stop_gradient(inputs.logp)
    )
    s = jnp.exp(token_log_ratio)
    adv = inputs.advantages
    l1 = -adv * s
    l2 = -adv * jnp.clip(s, 1.0 - config.clip_low, 1.0 + config.clip_high)
    loss_mat = jnp.maximum(l1, l2)
    pg = agg_loss(loss_mat, inputs.mask, mode, config.max_len)
    metrics = {
        "pg_loss": pg,
        "pg_clipfrac": agg_loss((l2 > l1).astype(jnp.float32), inputs.mask, AggMode.TOKEN_MEAN),
        "seq_ratio_mean": masked_mean(
            jnp.exp(seq_log_ratio), (jnp.sum(inputs.mask, -1) > 0).astype(jnp.float32)
        ),
    }
    return _with_kl(pg, metrics, inputs, config, mode, name)


@register_loss(LossName.CISPO)
def cispo_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """CISPO (MiniMax-M1, arXiv 2506.13585): agg(-sg(clip(rho, 1 - e_lo, 1 + e_hi)) A log pi);
    every token keeps a gradient, only its weight is clipped. ``clip_low = 1`` means no lower
    bound (the MiniMax recipe, [Secondary])."""
    name = LossName.CISPO.value
    _check(inputs, name, "old_logp")
    mode = _agg_mode(config, name)
    ratio = jnp.exp(_log_ratio(inputs.logp, inputs.old_logp))
    weight = jax.lax.stop_gradient(jnp.clip(ratio, 1.0 - config.clip_low, 1.0 + config.clip_high))
    pg = agg_loss(-weight * inputs.advantages * inputs.logp, inputs.mask, mode, config.max_len)
    clipped = (weight != jax.lax.stop_gradient(ratio)).astype(jnp.float32)
    metrics = {"pg_loss": pg, "pg_clipfrac": agg_loss(clipped, inputs.mask, AggMode.TOKEN_MEAN)}
    return _with_kl(pg, metrics, inputs, config, mode, name)


# --------------------------------------------------------------------------- FlowRL

# FlowRL's importance weight w as each source computes it (FLOWRL.md §3.4), as LossConfig
# overrides. ``paper_code`` is the default: the paper-version code (verl@FlowRL 2b0ab88,
# ``compute_flowrl_objective``) computes a clipped weight but uses the unclipped one.
FLOWRL_WEIGHTS: harness.Registry[dict] = harness.Registry("FlowRL importance weight")
for _name, _over in {
    "paper_code": {"is_weight": ISWeightMode.UNCLIPPED.value},
    # later official code (verl_FlowRL dp_actor.py): clamp(w, max=10)
    "later_code": {"is_weight": ISWeightMode.MAX.value, "is_weight_max": 10.0},
    # verl recipe ``flowrl_clip``: clamp(w, 0.8, 1.28), DAPO-style asymmetric
    "verl_clip": {"is_weight": ISWeightMode.CLIP.value, "clip_low": 0.2, "clip_high": 0.28},
    # third-party summaries of the paper: clip(w, 1 - 0.2, 1 + 0.2) (epsilon not verified)
    "summary_clip": {"is_weight": ISWeightMode.CLIP.value, "clip_low": 0.2, "clip_high": 0.2},
    # verl recipe on-policy case (old_log_prob = log_prob.detach()): w = 1
    "one": {"is_weight": ISWeightMode.ONE.value},
}.items():
    FLOWRL_WEIGHTS.add(_name, _over)


def flowrl_weight_overrides(variant: str, field: str = "flowrl_weight") -> dict:
    """LossConfig overrides of a :data:`FLOWRL_WEIGHTS` variant; unknown names raise
    ConfigError naming ``field`` and the registered variants."""
    return dict(FLOWRL_WEIGHTS.get(variant, field))


def _flowrl_weight(inputs: LossInputs, config: LossConfig) -> Array:
    """Detached sequence importance weight w f32[B] (FLOWRL.md §3.4), clipped in log space
    because exp of a long sum of token log-ratios overflows."""
    if config.is_weight == ISWeightMode.ONE.value:
        return jnp.ones(inputs.logp.shape[:1], jnp.float32)
    log_w = jax.lax.stop_gradient(seq_sum(inputs.logp - inputs.old_logp, inputs.mask))
    if config.is_weight == ISWeightMode.CLIP.value:
        lo = math.log(1.0 - config.clip_low) if config.clip_low < 1.0 else -jnp.inf
        log_w = jnp.clip(log_w, lo, math.log1p(config.clip_high))
    elif config.is_weight == ISWeightMode.MAX.value:
        log_w = jnp.minimum(log_w, math.log(config.is_weight_max))
    return jnp.exp(log_w)


def flowrl_residual(inputs: LossInputs, config: LossConfig) -> tuple[Array, Array, Metrics]:
    """FlowRL's trajectory-balance residual and weight (arXiv 2509.15207, README loss).

    delta_b = log Z(x_b) + (1/|y_b|) log pi(y_b|x_b) - beta r_hat_b - (1/|y_b|) log pi_ref(y_b|x_b)
    with r_hat_b = masked mean of ``advantages`` over the response (the GRPO group z-score, as in
    the official code), log Z := 0 when ``use_log_z`` is False, and pi_old in place of pi_ref when
    ``flowrl_reference == "old"``.

    Returns:
      (delta f32[B], w f32[B] detached weight, metrics).
    """
    name = LossName.FLOWRL.value
    need = []
    if config.use_log_z:
        need.append("log_z")
    if config.is_weight != ISWeightMode.ONE.value:
        need.append("old_logp")
    need.append("ref_logp" if config.flowrl_reference == FlowRLReference.REF.value else "old_logp")
    _check(inputs, name, *need)
    ref = inputs.ref_logp if config.flowrl_reference == FlowRLReference.REF.value else None
    ref = inputs.old_logp if ref is None else ref
    avg_logp = seq_mean(inputs.logp, inputs.mask)
    avg_ref = seq_mean(ref, inputs.mask)
    r_hat = seq_mean(inputs.advantages, inputs.mask)
    log_z = inputs.log_z if config.use_log_z else jnp.zeros_like(avg_logp)
    delta = log_z + avg_logp - config.beta * r_hat - avg_ref
    w = _flowrl_weight(inputs, config)
    valid = (jnp.sum(inputs.mask, axis=-1) > 0).astype(jnp.float32)
    metrics = {
        "flowrl_delta": masked_mean(delta, valid),
        "flowrl_abs_delta": masked_mean(jnp.abs(delta), valid),
        "log_z": masked_mean(log_z, valid),
        "avg_logp": masked_mean(avg_logp, valid),
        "avg_ref_logp": masked_mean(avg_ref, valid),
        "is_weight": masked_mean(w, valid),
    }
    return delta, w, metrics


@register_loss(LossName.FLOWRL)
def flowrl_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """FlowRL flow-balanced loss (arXiv 2509.15207): mean over sequences of w * delta^2.

    L = mean_b w_b (log Z(x_b) + (1/|y_b|) log pi(y_b|x_b) - beta r_hat_b
                    - (1/|y_b|) log pi_ref(y_b|x_b))^2,
    see :func:`flowrl_residual`. Its gradient is 2 w delta ((1/|y|) sum_t grad log pi + grad log Z)
    per sequence (FLOWRL.md §3.2). Needs ``log_z`` (unless ``use_log_z=False``), ``ref_logp``
    and, for a non-``one`` weight, ``old_logp``. ``agg_mode`` is ignored: length normalisation is
    part of the objective.
    """
    delta, w, metrics = flowrl_residual(inputs, config)
    valid = (jnp.sum(inputs.mask, axis=-1) > 0).astype(jnp.float32)
    loss = masked_mean(w * jnp.square(delta), valid)
    return loss, {**metrics, "loss": loss}


def flowrl_optimal_log_z(inputs: LossInputs, config: LossConfig, group_ids: Array) -> Array:
    """The log Z minimising the FlowRL loss when each prompt group shares one log Z, f32[B].

    d L / d log Z_g = (2/N) sum_{b in g} w_b delta_b = 0 gives
    log Z_g = -sum_b w_b (delta_b - log Z_b) / sum_b w_b, the w-weighted mean of the negated
    residual without log Z. Useful for diagnostics and to initialise a per-prompt table.

    Args:
      inputs, config: as for :func:`flowrl_loss` (``inputs.log_z`` is ignored).
      group_ids: i32[B] prompt group of each sequence, values in [0, B).
    """
    no_z = inputs._replace(log_z=jnp.zeros(inputs.logp.shape[:1], jnp.float32))
    delta, w, _ = flowrl_residual(no_z, dataclasses.replace(config, use_log_z=True))
    w = w * (jnp.sum(inputs.mask, axis=-1) > 0)
    n = delta.shape[0]
    num = jax.ops.segment_sum(w * delta, group_ids, num_segments=n)
    den = jax.ops.segment_sum(w, group_ids, num_segments=n)
    return -(num / jnp.maximum(den, 1e-30))[group_ids]


# --------------------------------------------------------------------------- critic


def value_loss(
    values: Array, old_values: Array, returns: Array, mask: Array, clip: float | None = None
) -> Array:
    """PPO critic loss (verl ``compute_value_loss``), token-mean over ``mask``.

    Unclipped: 0.5 (V - R)^2. With ``clip`` (verl ``cliprange_value``, 0.5):
    0.5 max((V - R)^2, (V_old + clip(V - V_old, -clip, clip) - R)^2), which stops the critic from
    moving more than ``clip`` away from the rollout's values on the pessimistic side.

    Args:
      values: f32[B, T] current value predictions (carry the gradient).
      old_values: f32[B, T] predictions of the rollout policy (constants).
      returns: f32[B, T] targets. mask: f32[B, T].
    """
    err = jnp.square(values - returns)
    if clip is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip, clip)
        err = jnp.maximum(err, jnp.square(clipped - returns))
    return 0.5 * masked_mean(err, mask)
