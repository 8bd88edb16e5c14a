"""Causal language model over any mixer of the ``ssm`` package, with recurrent/cached decoding.

Architecture (Mamba ``MixerModel``, SSM.md §2 "Model wrapper"): token embedding ~ N(0, 0.02);
``n_layers`` residual blocks ``h <- h + Mixer(RMSNorm(h))`` (add-then-norm pre-norm; the
Transformer mixer normalises its two sub-layers itself); final RMSNorm; tied (``embed^T``) or
untied head. Mixers come from the registry :data:`LAYERS` ("mamba", "mamba2", "s4d", "s4",
"transformer"); each has a parallel ``__call__`` and a recurrent ``step`` with a typed cache.
Output projections are scaled by ``1/sqrt(n_layers)`` (upstream ``rescale_prenorm_residual``).

Public API (contracts.md, used by the flowrl trainer):

* ``make_model(cfg) -> LM``; ``model.apply(params, tokens int32[B, L])`` ->
  ``(logits f32[B, L, V], hidden f32[B, L, D])`` (hidden = final-normed states fed to the head);
* :func:`token_logprobs` -> f32[B, L-1];
* :func:`generate` -> int32[B, P + max_new_tokens]; the cache is carried through ``lax.scan``, so
  a new token costs O(1) for the SSMs and O(position) for the Transformer. Prompts are fed through
  the same recurrent step (prefill by scan), so decoding is exactly the recurrent mode.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

import harness
from ssm import mamba, mamba2, s4, s4d, scan, transformer

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Plain, hashable model config (the experiment config's ``model`` section).

    Fields used by each layer: mamba (d_state, d_conv, expand, dt_rank, scan_method, chunk_size),
    mamba2 (d_state, d_conv, expand, headdim, ngroups, ssd_impl, chunk_size), s4d (d_state,
    s4d_init, s4d_disc), s4 (d_state, max_len as l_max), transformer (n_heads, mlp_ratio).
    """

    vocab_size: int = 16
    d_model: int = 64
    n_layers: int = 2
    layer: str = "mamba"
    max_len: int = 1024  # default decode-cache length and S4's l_max
    tie_embeddings: bool = True
    scan_method: str = "ref"  # ssm.scan back-end for mamba
    chunk_size: int = 64  # chunked scan / SSD chunk
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # 0 -> ceil(d_model / 16)
    headdim: int = 32
    ngroups: int = 1
    ssd_impl: str = "chunked"
    s4d_init: str = "lin"
    s4d_disc: str = "zoh"
    n_heads: int = 4
    mlp_ratio: int = 4
    norm_eps: float = 1e-5

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> LMConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(m) - names)
        if unknown:
            raise harness.ConfigError(
                f"unknown model config fields {unknown}; known: {sorted(names)}"
            )
        return cls(**dict(m))


def _no_check(root: Any, field: str) -> None:
    del root, field


class LayerSpec(NamedTuple):
    """A registered mixer: ``make(cfg) -> Module`` and ``init_cache(cfg, batch, max_len)``;
    ``prenorm``: the LM applies RMSNorm before the mixer; ``check(root, field)``: raises
    ConfigError for a bad value of a config field this layer reads (``root[field]`` holds the
    LMConfig fields, ``field`` is their dotted prefix, e.g. ``"model"``)."""

    make: Callable[[LMConfig], nn.Module]
    init_cache: Callable[[LMConfig, int, int], Any]
    prenorm: bool = True
    check: Callable[[Any, str], None] = _no_check


def _scale(cfg: LMConfig) -> float:
    return 1.0 / math.sqrt(cfg.n_layers)


def _check_mamba(root: Any, field: str) -> None:
    harness.check_choice(root, f"{field}.scan_method", scan.methods())


def _check_mamba2(root: Any, field: str) -> None:
    harness.check_choice(root, f"{field}.ssd_impl", mamba2.SSD_IMPLS)


def _check_even_state(root: Any, field: str) -> None:
    """S4 and S4D store one of each conjugate pair of modes, so d_state must be even."""
    n = harness.check_int(root, f"{field}.d_state", lo=2)
    if n % 2:
        raise harness.ConfigError(
            f"config.{field}.d_state={n} must be even for the conjugate-pair S4/S4D state"
        )


def _check_s4d(root: Any, field: str) -> None:
    harness.check_choice(root, f"{field}.s4d_init", s4d.INITS)
    harness.check_choice(root, f"{field}.s4d_disc", s4d.DISCRETISATIONS)
    _check_even_state(root, field)


LAYERS: harness.Registry[LayerSpec] = harness.Registry("layer")
LAYERS.add(
    "mamba",
    LayerSpec(
        make=lambda c: mamba.MambaMixer(
            c.d_model,
            c.d_state,
            c.d_conv,
            c.expand,
            c.dt_rank or None,
            scan_method=c.scan_method,
            chunk_size=c.chunk_size,
            out_proj_scale=_scale(c),
        ),
        init_cache=lambda c, b, n: mamba.init_mamba_cache(
            b, c.d_model, c.d_state, c.d_conv, c.expand
        ),
        check=_check_mamba,
    ),
)
LAYERS.add(
    "mamba2",
    LayerSpec(
        make=lambda c: mamba2.Mamba2Mixer(
            c.d_model,
            c.d_state,
            c.d_conv,
            c.expand,
            c.headdim,
            c.ngroups,
            chunk_size=c.chunk_size,
            ssd_impl=c.ssd_impl,
            out_proj_scale=_scale(c),
        ),
        init_cache=lambda c, b, n: mamba2.init_mamba2_cache(
            b, c.d_model, c.d_state, c.d_conv, c.expand, c.headdim, c.ngroups
        ),
        check=_check_mamba2,
    ),
)
LAYERS.add(
    "s4d",
    LayerSpec(
        make=lambda c: s4d.S4DLayer(c.d_model, c.d_state, a_init=c.s4d_init, disc=c.s4d_disc),
        init_cache=lambda c, b, n: s4d.init_s4d_cache(b, c.d_model, c.d_state),
        check=_check_s4d,
    ),
)
LAYERS.add(
    "s4",
    LayerSpec(
        make=lambda c: s4.S4Layer(c.d_model, c.d_state, l_max=c.max_len),
        init_cache=lambda c, b, n: s4.init_s4_cache(b, c.d_model, c.d_state),
        check=_check_even_state,
    ),
)
LAYERS.add("transformer", LayerSpec(
    make=lambda c: transformer.TransformerMixer(
        c.d_model, c.n_heads, c.mlp_ratio, c.norm_eps, out_proj_scale=_scale(c)),
    init_cache=lambda c, b, n: transformer.init_kv_cache(b, n, c.d_model, c.n_heads),
    prenorm=False,
))  # fmt: skip

_POSITIVE_FIELDS = ("vocab_size", "d_model", "n_layers", "max_len", "d_state", "d_conv", "expand")


def layer_names() -> tuple[str, ...]:
    return tuple(sorted(LAYERS.names()))


def validate(cfg: LMConfig | Mapping[str, Any], field: str = "model") -> LMConfig:
    """The one validator of the model config (used by :func:`make_model`, ``ssm.train`` and
    ``flowrl.trainer``): the layer name from :data:`LAYERS`, the shared sizes, then the chosen
    layer's own ``check``. Raises :class:`harness.ConfigError` (a ValueError) naming
    ``config.<field>.<name>`` and the allowed values; returns the config as an LMConfig."""
    if not isinstance(cfg, LMConfig):
        cfg = LMConfig.from_mapping(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    root = {field: cfg}
    spec = LAYERS.get(cfg.layer, f"{field}.layer")
    for name in _POSITIVE_FIELDS:
        harness.check_int(root, f"{field}.{name}", lo=1)
    harness.check_int(root, f"{field}.dt_rank", lo=0)
    spec.check(root, field)
    return cfg


class LM(nn.Module):
    """Causal LM; see the module docstring. ``config``: :class:`LMConfig`."""

    config: LMConfig

    def setup(self):
        c = self.config
        spec = LAYERS.get(c.layer)
        self.embed = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(0.02))
        self.mixers = [spec.make(c) for _ in range(c.n_layers)]
        self.norms = [
            self.param(f"norm_{i}", nn.initializers.ones, (c.d_model,)) for i in range(c.n_layers)
        ]
        self.norm_f = self.param("norm_f", nn.initializers.ones, (c.d_model,))
        if not c.tie_embeddings:
            self.head = nn.Dense(c.vocab_size, use_bias=False, name="head")

    def _pre(self, i, h):
        if LAYERS.get(self.config.layer).prenorm:
            return transformer.rms_norm(h, self.norms[i], self.config.norm_eps)
        return h

    def _head(self, h):
        hidden = transformer.rms_norm(h, self.norm_f, self.config.norm_eps)
        if self.config.tie_embeddings:
            logits = self.embed.attend(hidden)
        else:
            logits = self.head(hidden)
        return logits.astype(jnp.float32), hidden.astype(jnp.float32)

    def __call__(self, tokens: Array) -> tuple[Array, Array]:
        """tokens int32[B, L] -> (logits f32[B, L, V], hidden f32[B, L, D])."""
        h = self.embed(tokens).astype(jnp.float32)
        for i, mixer in enumerate(self.mixers):
            h = h + mixer(self._pre(i, h))
        return self._head(h)

    def step(self, token: Array, caches: tuple) -> tuple[Array, Array, tuple]:
        """token int32[B] -> (logits f32[B, V], hidden f32[B, D], new caches)."""
        h = self.embed(token).astype(jnp.float32)
        new = []
        for i, mixer in enumerate(self.mixers):
            out, c = mixer.step(self._pre(i, h), caches[i])
            h = h + out
            new.append(c)
        logits, hidden = self._head(h)
        return logits, hidden, tuple(new)


def make_model(cfg: LMConfig | Mapping[str, Any]) -> LM:
    """Validated :class:`LM` from an :class:`LMConfig` or a mapping (e.g. ``config.model``)."""
    return LM(validate(cfg))


def init_params(model: LM, key: Array, seq_len: int = 8) -> Any:
    """The model's variables (jitted init: one compile instead of op-by-op dispatch)."""
    return jax.jit(model.init)(key, jnp.zeros((1, seq_len), jnp.int32))


def init_caches(cfg: LMConfig, batch: int, max_len: int) -> tuple:
    """Zero decode caches for every layer (a tuple of the layers' cache NamedTuples)."""
    spec = LAYERS.get(cfg.layer)
    return tuple(spec.init_cache(cfg, batch, max_len) for _ in range(cfg.n_layers))


def token_logprobs(model: LM, params: Any, tokens: Array) -> Array:
    """``log p(tokens[:, t+1] | tokens[:, :t+1])``, f32[B, L-1]."""
    logits, _ = model.apply(params, tokens)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


def hidden_states(model: LM, params: Any, tokens: Array) -> Array:
    """Final-normed hidden states f32[B, L, D]."""
    return model.apply(params, tokens)[1]


def sample_token(key: Array, logits: Array, temperature: Array, top_p: Array) -> Array:
    """Nucleus sampling at a temperature; ``temperature <= 0`` is greedy (argmax).

    logits f32[B, V] -> int32[B]. ``top_p`` keeps the smallest set of tokens whose probability
    mass reaches top_p (always at least the most likely one).
    """
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = logits / jnp.maximum(temperature, 1e-6)
    srt = jnp.sort(scaled, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(srt, axis=-1)
    keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
    thresh = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
    scaled = jnp.where(scaled >= thresh, scaled, -jnp.inf)
    sampled = jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)
    return jnp.where(temperature > 0, sampled, greedy)


@functools.lru_cache(maxsize=64)
def _generate_fn(cfg: LMConfig, max_new_tokens: int, cache_len: int | None):
    model = LM(cfg)

    def run(params, prompt, key, temperature, top_p):
        B, P = prompt.shape
        caches = init_caches(cfg, B, cache_len or P + max_new_tokens)

        def prefill(c, tok):
            logits, _, c = model.apply(params, tok, c, method=LM.step)
            return c, logits

        caches, logits = jax.lax.scan(prefill, caches, prompt.T)

        def decode(carry, key_t):
            c, last = carry
            tok = sample_token(key_t, last, temperature, top_p)
            logits, _, c = model.apply(params, tok, c, method=LM.step)
            return (c, logits), tok

        _, toks = jax.lax.scan(decode, (caches, logits[-1]), jax.random.split(key, max_new_tokens))
        return jnp.concatenate([prompt.astype(jnp.int32), toks.T], axis=1)

    return jax.jit(run)


def generate(
    model: LM,
    params: Any,
    prompt: Array,
    key: Array,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> Array:
    """Samples ``max_new_tokens`` after ``prompt`` int32[B, P] -> int32[B, P + max_new_tokens].

    The per-layer caches (SSM/conv states, or the KV cache) are carried through ``lax.scan``; the
    compiled function is cached per (config, max_new_tokens), temperature/top_p are traced.
    ``temperature=0`` is greedy decoding.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be int32 (batch, P>=1), got shape {prompt.shape}")
    if model.config.layer == "s4" and prompt.shape[1] + max_new_tokens > model.config.max_len:
        raise ValueError(
            f"S4 decodes at most max_len={model.config.max_len} tokens (its C~ is defined for "
            f"that length), asked for {prompt.shape[1] + max_new_tokens}"
        )
    fn = _generate_fn(model.config, int(max_new_tokens), None)
    return fn(params, prompt, key, jnp.float32(temperature), jnp.float32(top_p))
