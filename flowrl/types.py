"""Shared types for the flowrl loss family: inputs, names, configs and a typed registry.

Every policy loss in :mod:`flowrl.losses` takes one :class:`LossInputs` and one
:class:`LossConfig` and returns ``(loss, metrics)``; every advantage estimator in
:mod:`flowrl.advantages` takes one :class:`AdvantageInputs` and one :class:`AdvantageConfig` and
returns :class:`AdvantageOutputs`. Names are ``str`` Enums, so ``"grpo"`` and ``LossName.GRPO``
are interchangeable. Shapes: ``B`` sequences (all groups of a batch concatenated), ``T`` padded
response length.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator
from typing import Generic, NamedTuple, Protocol, TypeVar

import jax

import harness

Array = jax.Array
Metrics = dict[str, Array]


class LossName(str, enum.Enum):
    """Registered policy losses (FLOWRL.md §2-3)."""

    SFT = "sft"
    REINFORCE = "reinforce"
    PPO = "ppo"
    GRPO = "grpo"
    DR_GRPO = "dr_grpo"
    DAPO = "dapo"
    GSPO = "gspo"
    CISPO = "cispo"
    FLOWRL = "flowrl"


class AdvantageName(str, enum.Enum):
    """Registered advantage estimators (FLOWRL.md §1.2, §2.4)."""

    GRPO = "grpo"
    DR_GRPO = "dr_grpo"
    RLOO = "rloo"
    REINFORCE_PLUS_PLUS = "reinforce_plus_plus"
    GAE = "gae"


class AggMode(str, enum.Enum):
    """Loss aggregation modes (FLOWRL.md §1.4, verl ``agg_loss``)."""

    TOKEN_MEAN = "token-mean"
    SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"
    SEQ_MEAN_TOKEN_SUM = "seq-mean-token-sum"
    SEQ_MEAN_TOKEN_SUM_NORM = "seq-mean-token-sum-norm"


class KLName(str, enum.Enum):
    """KL estimators (FLOWRL.md §1.3; verl names in brackets): k1 ["kl"], k2 ["mse"],
    k3 ["low_var_kl"]."""

    K1 = "k1"
    K2 = "k2"
    K3 = "k3"


class ISWeightMode(str, enum.Enum):
    """FlowRL's sequence importance weight w (FLOWRL.md §3.4).

    ``one``: w = 1. ``unclipped``: w = sg(exp(sum_t m (log pi - log pi_old))) (first public code).
    ``clip``: w clipped to [1 - clip_low, 1 + clip_high] in log space (paper per summaries;
    symmetric 0.2 or DAPO-style 0.2/0.28 via the clip fields). ``max``: min(w, is_weight_max)
    (later code, max 10).
    """

    ONE = "one"
    UNCLIPPED = "unclipped"
    CLIP = "clip"
    MAX = "max"


class FlowRLReference(str, enum.Enum):
    """Which log-probs play pi_ref in FlowRL: the frozen reference (paper) or pi_old (ablation
    ``compute_flowrl_with_old_policy``, FLOWRL.md §3.5)."""

    REF = "ref"
    OLD = "old"


def check_name(enum_cls: type[enum.Enum], value: object, field: str) -> str:
    """Return ``value`` as the Enum's string value or raise a ValueError naming ``field``."""
    valid = [m.value for m in enum_cls]
    if isinstance(value, enum.Enum):
        value = value.value
    if value not in valid:
        raise ValueError(f"{field}={value!r} is not one of {valid}")
    return str(value)


class LossInputs(NamedTuple):
    """Per-token arrays of a batch of sampled responses (all float32 unless noted).

    Attributes:
      logp: f32[B, T] log pi_theta(y_t | x, y_<t) under the current policy (carries the gradient).
      mask: f32[B, T] response mask, 1 for real response tokens up to and including EOS.
      advantages: f32[B, T] per-token advantages (outcome advantages broadcast over tokens, see
        :func:`flowrl.advantages.compute_advantages`). FlowRL reads its r_hat from here as the
        per-sequence masked mean, as the official code does. SFT ignores it.
      old_logp: f32[B, T] log pi_old (behaviour policy that sampled the batch); needed by
        ppo/grpo/dr_grpo/dapo/gspo/cispo and by FlowRL's importance weight.
      ref_logp: f32[B, T] log pi_ref (frozen reference); needed by FlowRL and by any loss with
        ``kl_coef > 0``.
      log_z: f32[B] log Z_phi(x) per sequence from the caller's head (the G samples of a prompt
        share the value); FlowRL only.
    """

    logp: Array
    mask: Array
    advantages: Array
    old_logp: Array | None = None
    ref_logp: Array | None = None
    log_z: Array | None = None


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Hyperparameters of every policy loss (plain, hashable values; pass it closed over or as a
    static argument). :func:`flowrl.losses.default_loss_config` gives each loss's published
    defaults.

    Attributes:
      agg_mode: an :class:`AggMode` value, or None for the loss's published mode (sft, reinforce,
        ppo, dapo, cispo: token-mean; grpo, gspo: seq-mean-token-mean; dr_grpo:
        seq-mean-token-sum-norm). FlowRL always averages w·delta^2 over sequences.
      clip_low, clip_high: PPO ratio clip range [1 - clip_low, 1 + clip_high] (DAPO clip-higher:
        0.2 / 0.28); also GSPO's sequence-ratio range, CISPO's importance-weight range and FlowRL's
        ``clip`` weight range.
      dual_clip: dual-clip constant c > 1 for negative advantages (verl ``clip_ratio_c``), or None.
      kl_coef: coefficient of the KL-to-reference loss term added to the clipped losses (GRPO:
        0.04 in DeepSeekMath), 0 disables it.
      kl_type: a :class:`KLName` value for that term.
      max_len: constant divisor of ``seq-mean-token-sum-norm``; None uses the padded length T.
      beta: FlowRL reward temperature beta (15 in the paper).
      is_weight: FlowRL importance-weight mode, an :class:`ISWeightMode` value.
      is_weight_max: cap of the ``max`` mode (10 in the later official code).
      use_log_z: False gives the FlowRL "no log Z" ablation (log Z := 0).
      flowrl_reference: a :class:`FlowRLReference` value.
    """

    agg_mode: str | None = None
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = 3.0
    kl_coef: float = 0.0
    kl_type: str = "k3"
    max_len: int | None = None
    beta: float = 15.0
    is_weight: str = "clip"
    is_weight_max: float = 10.0
    use_log_z: bool = True
    flowrl_reference: str = "ref"

    def __post_init__(self):
        if self.agg_mode is not None:
            object.__setattr__(self, "agg_mode", check_name(AggMode, self.agg_mode, "agg_mode"))
        object.__setattr__(self, "kl_type", check_name(KLName, self.kl_type, "kl_type"))
        object.__setattr__(self, "is_weight", check_name(ISWeightMode, self.is_weight, "is_weight"))
        object.__setattr__(
            self,
            "flowrl_reference",
            check_name(FlowRLReference, self.flowrl_reference, "flowrl_reference"),
        )
        if not 0.0 <= self.clip_low <= 1.0:
            raise ValueError(f"clip_low={self.clip_low} must lie in [0, 1]")
        if self.clip_high < 0.0:
            raise ValueError(f"clip_high={self.clip_high} must be >= 0")
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"dual_clip={self.dual_clip} must be > 1 or None")
        if self.kl_coef < 0.0:
            raise ValueError(f"kl_coef={self.kl_coef} must be >= 0")
        if self.max_len is not None and self.max_len < 1:
            raise ValueError(f"max_len={self.max_len} must be >= 1 or None")
        if self.is_weight_max <= 0.0:
            raise ValueError(f"is_weight_max={self.is_weight_max} must be > 0")


class PolicyLoss(Protocol):
    """Signature of every registered policy loss."""

    def __call__(self, inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]: ...


class AdvantageInputs(NamedTuple):
    """Inputs of the advantage estimators.

    Attributes:
      token_rewards: f32[B, T] per-token rewards; an outcome reward sits on the last response token
        (:func:`flowrl.advantages.outcome_to_token_rewards`). Outcome estimators use
        ``score = sum_t token_rewards * mask``.
      mask: f32[B, T] response mask.
      group_ids: i32[B] prompt group of each sequence, values in [0, B) (GRPO/Dr.GRPO/RLOO).
      values: f32[B, T] value-head predictions (GAE only).
      seq_valid: f32[B] 1 for real sequences, 0 for padding rows (e.g. unfilled dynamic-sampling
        slots); padding rows are excluded from every group and batch statistic. None = all real.
    """

    token_rewards: Array
    mask: Array
    group_ids: Array | None = None
    values: Array | None = None
    seq_valid: Array | None = None


class AdvantageOutputs(NamedTuple):
    """advantages: f32[B, T] (zero on masked tokens); returns: f32[B, T] value targets."""

    advantages: Array
    returns: Array


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
    """Hyperparameters of the advantage estimators.

    Attributes:
      eps: added to the std in GRPO / REINFORCE++ normalisation (1e-6 in verl).
      unbiased_std: GRPO std with the N-1 divisor (verl, ``torch.std``) or the population std (the
        sources disagree, FLOWRL.md §2.7).
      gamma, lam: discount and GAE lambda (REINFORCE++ uses gamma).
      whiten_gae: normalise GAE advantages over the batch's tokens (verl does).
    """

    eps: float = 1e-6
    unbiased_std: bool = True
    gamma: float = 1.0
    lam: float = 1.0
    whiten_gae: bool = True

    def __post_init__(self):
        if self.eps < 0.0:
            raise ValueError(f"eps={self.eps} must be >= 0")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma={self.gamma} must lie in [0, 1]")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam={self.lam} must lie in [0, 1]")


class AdvantageEstimator(Protocol):
    """Signature of every registered advantage estimator."""

    def __call__(self, inputs: AdvantageInputs, config: AdvantageConfig) -> AdvantageOutputs: ...


E = TypeVar("E", bound=enum.Enum)
F = TypeVar("F", bound=Callable)


class Registry(harness.Registry[F], Generic[E, F]):
    """:class:`harness.Registry` keyed by a str Enum: a name must be a member of ``names`` to be
    registered, Enum members and their string values look up the same entry, iteration is sorted,
    and an unknown name raises ConfigError (a ValueError) listing the registered ones."""

    def __init__(self, kind: str, names: type[E]):
        super().__init__(kind)
        self.enum = names

    def register(self, name: E | str) -> Callable[[F], F]:
        return super().register(check_name(self.enum, name, f"{self.kind} name"))

    def get(self, name: E | str, field: str | None = None) -> F:
        key = name.value if isinstance(name, enum.Enum) else name
        if key not in self:
            raise harness.ConfigError(
                f"unknown {self.kind} {name!r}; registered: {sorted(self.names())}"
            )
        return super().get(key, field)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.names()))

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name.value if isinstance(name, enum.Enum) else name)
