"""HPT's Unified Policy Gradient Estimator (UPGE) and Hybrid Post-Training (arXiv 2509.04419).

UPGE (FLOWRL.md §4.1) writes the gradient of SFT and of the RL losses as one expression,

    grad_Uni = sum_t 1_stable,t * A_t * grad pi_theta(y_t | x, y_<t) / pi_ref(y_t | x, y_<t),

built from four interchangeable parts:

1. stabilisation mask ``1_stable`` (:class:`StableMask`): none, PPO clip (+ dual clip), CISPO's
   soft mask clip(rho)/rho, GSPO's sequence clip;
2. reference denominator ``pi_ref`` (:class:`Denominator`): pi_theta (detached), pi_old, 1, or
   GSPO's pi_theta (pi_old(y|x) / pi_theta(y|x))^(1/|y|) (all detached);
3. the advantage A (from :mod:`flowrl.advantages`, or 1 for SFT);
4. the likelihood gradient grad pi_theta, realised by the surrogate
   ``-sg(1_stable) A exp(log pi - sg(log pi_ref))`` whose gradient is -1_stable A grad pi / pi_ref.

:data:`UPGE_INSTANCES` lists the paper's Table (SFT, REINFORCE, PPO, GRPO, CISPO, GSPO, SRFT);
each reproduces the gradient of the matching loss in :mod:`flowrl.losses` exactly (tests).
Loss *values* of the surrogate differ from those losses; only gradients agree.

HPT (FLOWRL.md §4.3) picks per prompt between SFT on the demonstration and RL on the rollouts
(:func:`hpt_switch`, :func:`hpt_soft_coefficients`) and optimises
``sft_coef * L_SFT + L_RL`` (:func:`hpt_mixed_loss`).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowrl.aggregation import agg_loss, seq_mean
from flowrl.types import AggMode, Array, LossConfig, LossInputs, Metrics, check_name

LOG_RATIO_CLAMP = 20.0


class Denominator(str, enum.Enum):
    """Reference-policy denominator pi_ref of UPGE (part 2)."""

    THETA = "theta"
    OLD = "old"
    ONE = "one"
    GSPO = "gspo"


class StableMask(str, enum.Enum):
    """Stabilisation mask of UPGE (part 1)."""

    NONE = "none"
    CLIP = "clip"
    CIS = "cis"
    SEQ_CLIP = "seq_clip"


class UPGESpec(NamedTuple):
    """One UPGE instance: denominator, stabilisation mask, and whether A is fixed to 1 (SFT)."""

    denominator: str
    stable_mask: str
    unit_advantage: bool = False


UPGE_INSTANCES: dict[str, UPGESpec] = {
    # Paper figure "post-training algorithms table" (FLOWRL.md §4.2).
    "sft": UPGESpec(Denominator.THETA.value, StableMask.NONE.value, unit_advantage=True),
    "reinforce": UPGESpec(Denominator.THETA.value, StableMask.NONE.value),
    "ppo": UPGESpec(Denominator.OLD.value, StableMask.CLIP.value),
    "grpo": UPGESpec(Denominator.OLD.value, StableMask.CLIP.value),
    "cispo": UPGESpec(Denominator.OLD.value, StableMask.CIS.value),
    "gspo": UPGESpec(Denominator.GSPO.value, StableMask.SEQ_CLIP.value),
    "srft": UPGESpec(Denominator.ONE.value, StableMask.NONE.value),
}


def log_denominator(kind: Denominator | str, inputs: LossInputs) -> Array:
    """log pi_ref of UPGE, f32[B, T], detached.

    theta: sg(log pi); old: log pi_old; one: 0; gspo: sg(log pi) + sg(mean_t(log pi_old - log pi))
    (so pi / pi_ref equals the GSPO sequence ratio s_i on every token).
    """
    kind = check_name(Denominator, kind, "denominator")
    sg = jax.lax.stop_gradient
    if kind == Denominator.THETA.value:
        return sg(inputs.logp)
    if kind == Denominator.ONE.value:
        return jnp.zeros_like(inputs.logp)
    _require_old(inputs, kind)
    if kind == Denominator.OLD.value:
        return sg(inputs.old_logp)
    gap = seq_mean(inputs.old_logp - inputs.logp, inputs.mask)
    return sg(inputs.logp + gap[:, None])


def stabilization_mask(kind: StableMask | str, inputs: LossInputs, config: LossConfig) -> Array:
    """1_stable f32[B, T], detached (part 1).

    clip: 0 where (A > 0 and rho > 1 + e_hi) or (A < 0 and rho < 1 - e_lo), or, with dual clip c,
    (A < 0 and rho > c): exactly the tokens whose PPO-clip loss is flat in theta.
    cis: clip(rho, 1 - e_lo, 1 + e_hi) / rho (CISPO's clipped weight over the ratio).
    seq_clip: the clip rule applied to the GSPO sequence ratio s_i, shared by all tokens of y_i.
    """
    kind = check_name(StableMask, kind, "stable_mask")
    if kind == StableMask.NONE.value:
        return jnp.ones_like(inputs.logp)
    _require_old(inputs, kind)
    adv = inputs.advantages
    log_ratio = jnp.clip(inputs.logp - inputs.old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if kind == StableMask.SEQ_CLIP.value:
        log_ratio = jnp.broadcast_to(seq_mean(log_ratio, inputs.mask)[:, None], adv.shape)
    ratio = jax.lax.stop_gradient(jnp.exp(log_ratio))
    if kind == StableMask.CIS.value:
        return jnp.clip(ratio, 1.0 - config.clip_low, 1.0 + config.clip_high) / ratio
    off = ((adv > 0) & (ratio > 1.0 + config.clip_high)) | (
        (adv < 0) & (ratio < 1.0 - config.clip_low)
    )
    if kind == StableMask.CLIP.value and config.dual_clip is not None:
        off = off | ((adv < 0) & (ratio > config.dual_clip))
    return 1.0 - off.astype(jnp.float32)


def _require_old(inputs: LossInputs, what: str) -> None:
    if inputs.old_logp is None:
        raise ValueError(f"LossInputs.old_logp is required by UPGE part {what!r}")


def upge_loss(
    inputs: LossInputs, spec: UPGESpec | str, config: LossConfig
) -> tuple[Array, Metrics]:
    """UPGE surrogate whose gradient is grad_Uni (HPT paper §3, FLOWRL.md §4.1).

    loss = agg_loss(-sg(1_stable) * A * exp(log pi - sg(log pi_ref)), mask, mode), mode =
    ``config.agg_mode`` (token-mean if None).

    Args:
      inputs: LossInputs with logp, mask, advantages f32[B, T] (and old_logp where the parts need
        it).
      spec: a :class:`UPGESpec` or a key of :data:`UPGE_INSTANCES`.
      config: clip ranges, dual clip, aggregation.

    Returns:
      (loss f32[], metrics with the stable fraction).
    """
    if isinstance(spec, str):
        if spec not in UPGE_INSTANCES:
            raise ValueError(f"unknown UPGE instance {spec!r}; known: {sorted(UPGE_INSTANCES)}")
        spec = UPGE_INSTANCES[spec]
    stable = stabilization_mask(spec.stable_mask, inputs, config)
    log_den = log_denominator(spec.denominator, inputs)
    adv = jnp.ones_like(inputs.logp) if spec.unit_advantage else inputs.advantages
    mode = AggMode.TOKEN_MEAN.value if config.agg_mode is None else config.agg_mode
    surrogate = -stable * adv * jnp.exp(jnp.clip(inputs.logp - log_den, None, LOG_RATIO_CLAMP))
    loss = agg_loss(surrogate, inputs.mask, mode, config.max_len)
    stable_frac = agg_loss((stable > 0).astype(jnp.float32), inputs.mask, AggMode.TOKEN_MEAN)
    return loss, {"loss": loss, "stable_frac": stable_frac}


# --------------------------------------------------------------------------- HPT


class HPTStrategy(str, enum.Enum):
    SWITCH = "switch"
    SOFT = "soft"


@dataclasses.dataclass(frozen=True)
class HPTConfig:
    """HPT settings (``Unify-Post-Training`` ``exp_scripts/train.sh``, FLOWRL.md §4.3).

    Attributes:
      strategy: "switch" (released: SFT iff #correct <= gate) or "soft" (graded table).
      gate: switch gate gamma (0 for Qwen2.5-Math-7B, 2 for LLaMA-3.1-8B).
      sft_coef: weight of L_SFT (1.0; 0.3 suggested for Qwen2.5-Math-1.5B).
      rl_spec: UPGE instance of the RL part; released run: pi_old denominator, no clip.
      rl_agg_mode: released run divides by the padded length (``seq-mean-token-sum-norm``).
      sft_agg_mode: token-mean NLL on the demonstration.
      max_len: constant divisor of ``seq-mean-token-sum-norm`` (None = padded length).
    """

    strategy: str = "switch"
    gate: int = 0
    sft_coef: float = 1.0
    rl_spec: UPGESpec = UPGESpec(Denominator.OLD.value, StableMask.NONE.value)
    rl_agg_mode: str = AggMode.SEQ_MEAN_TOKEN_SUM_NORM.value
    sft_agg_mode: str = AggMode.TOKEN_MEAN.value
    max_len: int | None = None

    def __post_init__(self):
        check_name(HPTStrategy, self.strategy, "strategy")
        check_name(AggMode, self.rl_agg_mode, "rl_agg_mode")
        check_name(AggMode, self.sft_agg_mode, "sft_agg_mode")
        check_name(Denominator, self.rl_spec.denominator, "rl_spec.denominator")
        check_name(StableMask, self.rl_spec.stable_mask, "rl_spec.stable_mask")
        if self.gate < 0:
            raise ValueError(f"gate={self.gate} must be >= 0")
        if self.sft_coef < 0.0:
            raise ValueError(f"sft_coef={self.sft_coef} must be >= 0")


def hpt_switch(num_correct: Array, gate: int) -> tuple[Array, Array]:
    """HPT switch (``select_on_off_ada_balance``): alpha = 1[k > gate], beta = 1 - alpha.

    Args:
      num_correct: i32[P] correct rollouts per prompt.
      gate: switch gate gamma.

    Returns:
      (rl weight alpha f32[P], sft weight beta f32[P]).
    """
    alpha = (num_correct > gate).astype(jnp.float32)
    return alpha, 1.0 - alpha


# (on, sft) coefficients of the "soft" strategy, soft_type=1, for k = 0..5+ (FLOWRL.md §4.3 table;
# k = 0 behaves like the switch: SFT only).
# numpy, not jnp: module constants must not touch the device at import time.
_SOFT_ON = np.array([0.0, 0.0, 0.125, 0.25, 0.5, 1.0], np.float32)
_SOFT_SFT = np.array([1.0, 1.0, 0.5, 0.25, 0.125, 0.0], np.float32)


def hpt_soft_coefficients(num_correct: Array) -> tuple[Array, Array]:
    """Graded ``soft`` HPT coefficients (rl f32[P], sft f32[P]) for k = #correct (k >= 5: RL only).
    The k = 0 row (not in the table) is taken as pure SFT, as in the switch."""
    k = jnp.clip(num_correct, 0, 5).astype(jnp.int32)
    return jnp.asarray(_SOFT_ON)[k], jnp.asarray(_SOFT_SFT)[k]


def hpt_mixed_loss(
    rl: LossInputs,
    sft: LossInputs,
    rl_prompt_ids: Array,
    sft_prompt_ids: Array,
    num_correct: Array,
    config: HPTConfig,
    loss_config: LossConfig | None = None,
) -> tuple[Array, Metrics]:
    """HPT loss L = sft_coef * L_SFT + L_RL with per-prompt coefficients (HPT Algorithm 1).

    L_SFT = agg(-beta_p log pi(tau*), demonstration mask) over prompts whose beta_p > 0;
    L_RL = UPGE surrogate of ``config.rl_spec`` with A scaled by alpha_p over rollouts whose
    alpha_p > 0. Prompts switched to SFT drop out of the RL average entirely (their rollouts are
    discarded in the released code), and vice versa.

    Args:
      rl: rollouts' LossInputs, f32[B_rl, T] (advantages e.g. from the ``dr_grpo`` estimator).
      sft: demonstrations' LossInputs, f32[B_sft, T'] (advantages unused).
      rl_prompt_ids: i32[B_rl] prompt index of each rollout, in [0, P).
      sft_prompt_ids: i32[B_sft] prompt index of each demonstration, in [0, P).
      num_correct: i32[P] correct rollouts per prompt (of ``n_verify``).
      config: HPT settings. loss_config: clip ranges for clipped RL specs (default LossConfig()).

    Returns:
      (loss f32[], metrics: loss_rl, loss_sft, sft_fraction).
    """
    if config.strategy == HPTStrategy.SWITCH.value:
        on, off = hpt_switch(num_correct, config.gate)
    else:
        on, off = hpt_soft_coefficients(num_correct)
    on_seq, sft_seq = on[rl_prompt_ids], off[sft_prompt_ids]
    rl_inputs = rl._replace(
        mask=rl.mask * (on_seq > 0)[:, None], advantages=rl.advantages * on_seq[:, None]
    )
    cfg = LossConfig() if loss_config is None else loss_config
    cfg = dataclasses.replace(cfg, agg_mode=config.rl_agg_mode, max_len=config.max_len)
    loss_rl, _ = upge_loss(rl_inputs, config.rl_spec, cfg)
    sft_mask = sft.mask * (sft_seq > 0)[:, None]
    loss_sft = agg_loss(-sft_seq[:, None] * sft.logp, sft_mask, config.sft_agg_mode)
    loss = config.sft_coef * loss_sft + loss_rl
    metrics = {
        "loss": loss,
        "loss_rl": loss_rl,
        "loss_sft": loss_sft,
        "sft_fraction": jnp.mean((off > 0).astype(jnp.float32)),
    }
    return loss, metrics
