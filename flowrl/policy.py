"""The sequence policy: an ``ssm`` language model plus FlowRL's log Z head and a value head.

* The LM (:mod:`ssm.lm`, contracts.md) -- Mamba by default, the Transformer as the baseline --
  gives ``(logits, hidden)`` in parallel mode and samples with its recurrent/cached ``generate``.
* ``log Z_phi(x)`` (FLOWRL.md §3.3, official ``ProjZModule``): (num_layers - 1) blocks
  Dense(H) -> GELU -> LayerNorm, then Dense(1), on the mean of the last layer's hidden states
  over the prompt positions **excluding the last one**. No stop-gradient into the trunk (the
  official ``avg_hidden.detach()`` is commented out); ``z_stop_grad`` makes it a config choice.
  The official head has dropout 0.1; this one has none (deterministic updates, tiny models).
* A value head for PPO (a 2-layer MLP on the hidden state before each response token). By
  default it reads stop-gradient features (``value_stop_grad``), so the value loss cannot disturb
  the shared trunk [Rec; verl uses a separate critic model].
* The frozen reference copy is simply a second copy of the LM parameters kept by the trainer
  (no gradient flows into it).

Log-probs are those of the temperature-T distribution, ``log_softmax(logits / T)`` (FLOWRL.md
§1.1, as verl), so the trained distribution is the sampled one.

Shapes: ``B`` sequences, ``P`` prompt length, ``R`` response length, ``L = P + R``, ``V`` vocab.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssm import lm as ssm_lm

Array = jax.Array


class PolicyParams(NamedTuple):
    """Trainable variables: ``lm`` (the LM's variables dict), ``log_z`` and ``value`` heads."""

    lm: Any
    log_z: Any
    value: Any


class Forward(NamedTuple):
    """Per-response-token outputs of :meth:`Policy.forward`.

    Attributes:
      logp: f32[B, R] log pi_T(y_t | x, y_<t) of the response tokens at temperature T.
      entropy: f32[B, R] entropy of the temperature-T next-token distribution.
      log_z: f32[B] log Z_phi(x) from the pooled prompt states.
      values: f32[B, R] value predictions for the state before each response token.
    """

    logp: Array
    entropy: Array
    log_z: Array
    values: Array


class LogZHead(nn.Module):
    """FlowRL's ``ProjZModule`` without dropout: pooled prompt state f32[B, H] -> f32[B]."""

    num_layers: int = 3

    @nn.compact
    def __call__(self, pooled: Array) -> Array:
        h = pooled
        width = pooled.shape[-1]
        for _ in range(self.num_layers - 1):
            h = nn.LayerNorm()(nn.gelu(nn.Dense(width)(h)))
        return nn.Dense(1)(h)[..., 0]


class ValueHead(nn.Module):
    """Two-layer MLP on hidden states f32[..., H] -> f32[...]."""

    width: int = 64

    @nn.compact
    def __call__(self, h: Array) -> Array:
        return nn.Dense(1)(nn.gelu(nn.Dense(self.width)(h)))[..., 0]


def default_backend():
    """The contract's LM module (``make_model``, ``generate``): :mod:`ssm.lm`."""
    return ssm_lm


@dataclasses.dataclass(frozen=True)
class Policy:
    """Static description of the policy (hashable; close over it in jitted functions).

    Attributes:
      model: the LM module from ``backend.make_model``.
      backend: a module/object with ``generate(model, params, prompt, key, max_new_tokens,
        temperature, top_p)`` (``ssm.lm`` by default; tests may pass a stand-in).
      z_layers: layers of the log Z head (3 in the official code).
      z_stop_grad: stop the gradient of log Z into the trunk (official: False).
      value_stop_grad: value head on detached features.
    """

    model: Any
    backend: Any
    z_layers: int = 3
    z_stop_grad: bool = False
    value_stop_grad: bool = True

    @property
    def z_head(self) -> LogZHead:
        return LogZHead(self.z_layers)

    @property
    def value_head(self) -> ValueHead:
        return ValueHead()

    def init(self, key: Array, seq_len: int) -> PolicyParams:
        """Initial parameters; ``seq_len`` only shapes the dummy input."""
        key_lm, key_z, key_v = jax.random.split(key, 3)
        tokens = jnp.zeros((1, seq_len), jnp.int32)
        lm = self.model.init(key_lm, tokens)
        _, hidden = self.model.apply(lm, tokens)
        return PolicyParams(
            lm=lm,
            log_z=self.z_head.init(key_z, hidden[:, 0]),
            value=self.value_head.init(key_v, hidden),
        )

    def forward(
        self, params: PolicyParams, tokens: Array, prompt_len: int, temperature: float | Array
    ) -> Forward:
        """Parallel-mode pass over prompt + response, int32[B, L] -> :class:`Forward`."""
        if tokens.ndim != 2 or tokens.shape[1] <= prompt_len:
            raise ValueError(
                f"tokens must be int32[B, L] with L > prompt_len={prompt_len}, got {tokens.shape}"
            )
        if prompt_len < 2:
            raise ValueError(f"prompt_len={prompt_len} must be >= 2 (log Z pools P - 1 states)")
        logits, hidden = self.model.apply(params.lm, tokens)
        # Position t predicts token t + 1: response token j sits at P + j, predicted at P + j - 1.
        pred = logits[:, prompt_len - 1 : -1].astype(jnp.float32) / temperature
        logq = jax.nn.log_softmax(pred, axis=-1)
        resp = tokens[:, prompt_len:]
        logp = jnp.take_along_axis(logq, resp[..., None], axis=-1)[..., 0]
        entropy = -jnp.sum(jnp.exp(logq) * logq, axis=-1)
        pooled = jnp.mean(hidden[:, : prompt_len - 1], axis=1)
        if self.z_stop_grad:
            pooled = jax.lax.stop_gradient(pooled)
        log_z = self.z_head.apply(params.log_z, pooled)
        feats = hidden[:, prompt_len - 1 : -1]
        if self.value_stop_grad:
            feats = jax.lax.stop_gradient(feats)
        values = self.value_head.apply(params.value, feats)
        return Forward(logp=logp, entropy=entropy, log_z=log_z, values=values)

    def generate(
        self,
        lm_params: Any,
        prompts: Array,
        key: Array,
        max_new_tokens: int,
        temperature: float | Array,
        top_p: float | Array = 1.0,
    ) -> Array:
        """Samples responses int32[B, R] (R = max_new_tokens) after prompts int32[B, P]
        (temperature 0: greedy; nucleus sampling with ``top_p`` < 1)."""
        out = self.backend.generate(
            self.model,
            lm_params,
            prompts,
            key,
            max_new_tokens,
            temperature=temperature,
            top_p=top_p,
        )
        return out[:, prompts.shape[1] :]


def make_policy(
    model_config: Any,
    *,
    backend: Any = None,
    z_layers: int = 3,
    z_stop_grad: bool = False,
    value_stop_grad: bool = True,
) -> Policy:
    """Builds the :class:`Policy` from an LM config mapping (``ssm.lm.LMConfig`` fields).

    Args:
      model_config: mapping or ``LMConfig`` for ``backend.make_model``.
      backend: LM module with ``make_model`` and ``generate`` (default :mod:`ssm.lm`).
    """
    if z_layers < 1:
        raise ValueError(f"z_layers={z_layers} must be >= 1")
    backend = default_backend() if backend is None else backend
    model = backend.make_model(model_config)
    return Policy(
        model=model,
        backend=backend,
        z_layers=z_layers,
        z_stop_grad=z_stop_grad,
        value_stop_grad=value_stop_grad,
    )
