"""Causal language model over any mixer of the ``ssm`` package, with recurrent/cached decoding.

Architecture (Mamba ``MixerModel``, SSM.md §2 "Model wrapper"): token embedding ~ N(0, 0.02);
``n_layers`` residual blocks ``h <- h + Mixer(RMSNorm(h))`` (add-then-norm pre-norm; the
Transformer mixer normalises its two sub-layers itself), each optionally followed by a gated MLP
block ``h <- h + MLP(RMSNorm(h))`` (upstream ``d_intermediate``); final RMSNorm; tied
(``embed^T``) or untied head. Mixers come from the registry :data:`LAYERS` ("mamba", "mamba2",
"s4d", "s4", "transformer"); ``attn_layer_idx`` puts Transformer (attention) mixers at those
indices of a ``layer`` stack (hybrids as mamba_ssm's ``attn_layer_idx`` / Jamba). Each mixer has a
parallel ``__call__``, a parallel ``prefill(h, cache) -> (out, cache)`` that also returns its
decode cache, and a recurrent ``step`` with a typed cache. Output projections are scaled by
``1/sqrt(n_layers)`` (upstream ``rescale_prenorm_residual``).

Mixed precision (``dtype="bfloat16"``): parameters and the residual stream stay f32 (upstream
``residual_in_fp32``), projections/convs compute in bf16, SSM/SSD states, softmax and norms in
f32; logits are f32. Packed sequences: ``model.apply(params, tokens, seq_idx)`` with a
non-decreasing document index resets every mixer at document boundaries (Mamba/Mamba-2 conv and
state, attention mask and positions); S4/S4D do not support it (rejected).

Public API (contracts.md, used by the flowrl trainer):

* ``make_model(cfg) -> LM``; ``model.apply(params, tokens int32[B, L])`` ->
  ``(logits f32[B, L, V], hidden f32[B, L, D])`` (hidden = final-normed states fed to the head);
* :func:`token_logprobs` -> f32[B, L-1];
* :func:`generate` -> int32[B, P + max_new_tokens]: one parallel pass over the prompt
  (:meth:`LM.prefill`) that returns every layer's cache, then O(1) recurrent steps for the SSMs
  (O(position) for attention) in a ``lax.while_loop`` that stops when every row has emitted
  ``eos_id``. Sampling (:func:`sample_token`): greedy, temperature, top-k, top-p, min-p,
  repetition penalty, following mamba_ssm's ``generation.py`` conventions.
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
    attn_layer_idx: tuple[int, ...] = ()  # hybrid: Transformer mixers at these layer indices
    d_intermediate: int = 0  # > 0: a gated MLP block of this width after every mixer
    dtype: str = "float32"  # compute dtype, one of DTYPES (params stay float32)
    linear_init: str = "torch"  # mamba/mamba2 in_proj, x_proj init (ssm.mamba.LINEAR_INITS)
    conv_bias: bool = True

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> LMConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(m) - names)
        if unknown:
            raise harness.ConfigError(
                f"unknown model config fields {unknown}; known: {sorted(names)}"
            )
        m = dict(m)
        if "attn_layer_idx" in m:
            m["attn_layer_idx"] = tuple(m["attn_layer_idx"])
        return cls(**m)

    def layer_names(self) -> tuple[str, ...]:
        """The mixer of every layer: ``layer``, with "transformer" at ``attn_layer_idx``."""
        attn = set(self.attn_layer_idx)
        return tuple("transformer" if i in attn else self.layer for i in range(self.n_layers))

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _no_check(root: Any, field: str) -> None:
    del root, field


class LayerSpec(NamedTuple):
    """A registered mixer: ``make(cfg) -> Module`` and ``init_cache(cfg, batch, max_len)``;
    ``prenorm``: the LM applies RMSNorm before the mixer; ``check(root, field)``: raises
    ConfigError for a bad value of a config field this layer reads (``root[field]`` holds the
    LMConfig fields, ``field`` is their dotted prefix, e.g. ``"model"``); ``packed``: the
    mixer's ``__call__`` takes ``seq_idx`` (packed sequences)."""

    make: Callable[[LMConfig], nn.Module]
    init_cache: Callable[[LMConfig, int, int], Any]
    prenorm: bool = True
    check: Callable[[Any, str], None] = _no_check
    packed: bool = True


def _scale(cfg: LMConfig) -> float:
    return 1.0 / math.sqrt(cfg.n_layers)


def _check_mamba(root: Any, field: str) -> None:
    harness.check_choice(root, f"{field}.scan_method", scan.methods())
    harness.check_choice(root, f"{field}.linear_init", tuple(mamba.LINEAR_INITS))


def _check_mamba2(root: Any, field: str) -> None:
    harness.check_choice(root, f"{field}.ssd_impl", mamba2.SSD_IMPLS)
    harness.check_choice(root, f"{field}.linear_init", tuple(mamba.LINEAR_INITS))


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
            conv_bias=c.conv_bias,
            scan_method=c.scan_method,
            chunk_size=c.chunk_size,
            out_proj_scale=_scale(c),
            linear_init=c.linear_init,
            dtype=c.compute_dtype,
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
            conv_bias=c.conv_bias,
            linear_init=c.linear_init,
            dtype=c.compute_dtype,
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
        make=lambda c: s4d.S4DLayer(
            c.d_model, c.d_state, a_init=c.s4d_init, disc=c.s4d_disc, dtype=c.compute_dtype
        ),
        init_cache=lambda c, b, n: s4d.init_s4d_cache(b, c.d_model, c.d_state),
        check=_check_s4d,
        packed=False,
    ),
)
LAYERS.add(
    "s4",
    LayerSpec(
        make=lambda c: s4.S4Layer(c.d_model, c.d_state, l_max=c.max_len, dtype=c.compute_dtype),
        init_cache=lambda c, b, n: s4.init_s4_cache(b, c.d_model, c.d_state),
        check=_check_even_state,
        packed=False,
    ),
)
LAYERS.add("transformer", LayerSpec(
    make=lambda c: transformer.TransformerMixer(
        c.d_model, c.n_heads, c.mlp_ratio, c.norm_eps, out_proj_scale=_scale(c),
        dtype=c.compute_dtype),
    init_cache=lambda c, b, n: transformer.init_kv_cache(b, n, c.d_model, c.n_heads),
    prenorm=False,
))  # fmt: skip

_POSITIVE_FIELDS = ("vocab_size", "d_model", "n_layers", "max_len", "d_state", "d_conv", "expand")


def layer_names() -> tuple[str, ...]:
    return tuple(sorted(LAYERS.names()))


def validate(cfg: LMConfig | Mapping[str, Any], field: str = "model") -> LMConfig:
    """The one validator of the model config (used by :func:`make_model`, ``ssm.train`` and
    ``flowrl.trainer``): the layer name from :data:`LAYERS`, the shared sizes, the dtype, the
    hybrid indices, then each used layer's own ``check``. Raises :class:`harness.ConfigError`
    (a ValueError) naming ``config.<field>.<name>`` and the allowed values; returns the config as
    an LMConfig."""
    if not isinstance(cfg, LMConfig):
        cfg = LMConfig.from_mapping(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    root = {field: cfg}
    LAYERS.get(cfg.layer, f"{field}.layer")
    for name in _POSITIVE_FIELDS:
        harness.check_int(root, f"{field}.{name}", lo=1)
    harness.check_int(root, f"{field}.dt_rank", lo=0)
    harness.check_int(root, f"{field}.d_intermediate", lo=0)
    harness.check_choice(root, f"{field}.dtype", tuple(DTYPES))
    for i in cfg.attn_layer_idx:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < cfg.n_layers:
            raise harness.ConfigError(
                f"config.{field}.attn_layer_idx={cfg.attn_layer_idx!r}: each index must be an "
                f"int in [0, n_layers={cfg.n_layers})"
            )
    for name in sorted(set(cfg.layer_names())):
        LAYERS.get(name).check(root, field)
    return cfg


class GatedMLP(nn.Module):
    """Upstream ``GatedMLP``: ``fc2(y * silu(g))`` with ``y, g = split(fc1(h))``, no biases;
    fc2 init as the mixers' out_proj (scaled by ``out_proj_scale``)."""

    d_model: int
    d_intermediate: int
    out_proj_scale: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Array) -> Array:
        base = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        y = nn.Dense(2 * self.d_intermediate, use_bias=False, dtype=self.dtype,
                     kernel_init=base, name="fc1")(h.astype(self.dtype))  # fmt: skip
        y, g = jnp.split(y, 2, axis=-1)
        return nn.Dense(self.d_model, use_bias=False, dtype=self.dtype, name="fc2",
                        kernel_init=mamba.scaled_init(base, self.out_proj_scale))(y * nn.silu(g))  # fmt: skip


class LM(nn.Module):
    """Causal LM; see the module docstring. ``config``: :class:`LMConfig`."""

    config: LMConfig

    def setup(self):
        c = self.config
        self.specs = tuple(LAYERS.get(n) for n in c.layer_names())
        self.embed = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(0.02))
        self.mixers = [spec.make(c) for spec in self.specs]
        self.norms = [
            self.param(f"norm_{i}", nn.initializers.ones, (c.d_model,)) for i in range(c.n_layers)
        ]
        if c.d_intermediate:
            self.mlps = [
                GatedMLP(c.d_model, c.d_intermediate, _scale(c), c.compute_dtype)
                for _ in range(c.n_layers)
            ]
            self.mlp_norms = [
                self.param(f"mlp_norm_{i}", nn.initializers.ones, (c.d_model,))
                for i in range(c.n_layers)
            ]
        self.norm_f = self.param("norm_f", nn.initializers.ones, (c.d_model,))
        if not c.tie_embeddings:
            self.head = nn.Dense(c.vocab_size, use_bias=False, name="head")

    def _pre(self, i, h):
        """The mixer input: RMSNorm(h) in the compute dtype (the un-normed f32 stream for
        mixers without prenorm)."""
        if self.specs[i].prenorm:
            return transformer.rms_norm(h, self.norms[i], self.config.norm_eps).astype(
                self.config.compute_dtype
            )
        return h

    def _post(self, i, h, out):
        """Residual add in f32, then the optional MLP block."""
        h = h + out.astype(jnp.float32)
        if self.config.d_intermediate:
            x = transformer.rms_norm(h, self.mlp_norms[i], self.config.norm_eps)
            h = h + self.mlps[i](x).astype(jnp.float32)
        return h

    def _head(self, h):
        hidden = transformer.rms_norm(h, self.norm_f, self.config.norm_eps)
        if self.config.tie_embeddings:
            logits = self.embed.attend(hidden)
        else:
            logits = self.head(hidden)
        return logits.astype(jnp.float32), hidden.astype(jnp.float32)

    def __call__(self, tokens: Array, seq_idx: Array | None = None) -> tuple[Array, Array]:
        """tokens int32[B, L] -> (logits f32[B, L, V], hidden f32[B, L, D]).

        ``seq_idx``: optional int32[B, L] non-decreasing document index of packed sequences;
        each document then gives the same outputs as run on its own."""
        h = self.embed(tokens).astype(jnp.float32)
        if seq_idx is not None and not all(s.packed for s in self.specs):
            raise ValueError(
                f"seq_idx (packed sequences) is not supported by the layers {self.config.layer_names()}"
                f"; supported: {[n for n in LAYERS.names() if LAYERS.get(n).packed]}"
            )
        for i, mixer in enumerate(self.mixers):
            extra = {} if seq_idx is None else {"seq_idx": seq_idx}
            h = self._post(i, h, mixer(self._pre(i, h), **extra))
        return self._head(h)

    def prefill(self, tokens: Array, caches: tuple) -> tuple[Array, Array, tuple]:
        """One parallel pass over a chunk of tokens int32[B, L] starting from ``caches``:
        -> (last logits f32[B, V], last hidden f32[B, D], caches after the chunk), equal to L
        calls of :meth:`step`; the head runs on the last position only."""
        h = self.embed(tokens).astype(jnp.float32)
        new = []
        for i, mixer in enumerate(self.mixers):
            out, c = mixer.prefill(self._pre(i, h), caches[i])
            h = self._post(i, h, out)
            new.append(c)
        logits, hidden = self._head(h[:, -1])
        return logits, hidden, tuple(new)

    def step(self, token: Array, caches: tuple) -> tuple[Array, Array, tuple]:
        """token int32[B] -> (logits f32[B, V], hidden f32[B, D], new caches)."""
        h = self.embed(token).astype(jnp.float32)
        new = []
        for i, mixer in enumerate(self.mixers):
            out, c = mixer.step(self._pre(i, h), caches[i])
            h = self._post(i, h, out)
            new.append(c)
        logits, hidden = self._head(h)
        return logits, hidden, tuple(new)


# Published model shapes (mamba_ssm README / HF ``state-spaces/mamba-*`` and ``mamba2-*``
# configs): GPT-NeoX vocabulary 50277 padded to a multiple of 8, tied embeddings, no MLP.
_PUBLISHED = {
    "mamba": {"130m": (768, 24), "370m": (1024, 48), "790m": (1536, 48), "1.4b": (2048, 48),
              "2.8b": (2560, 64)},
    "mamba2": {"130m": (768, 24), "370m": (1024, 48), "780m": (1536, 48), "1.3b": (2048, 48),
               "2.7b": (2560, 64)},
}  # fmt: skip
_FAMILY = {
    "mamba": dict(layer="mamba", d_state=16, d_conv=4, expand=2),
    "mamba2": dict(layer="mamba2", d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1,
                   chunk_size=256),
}  # fmt: skip
SIZE_PRESETS: harness.Registry[dict] = harness.Registry("size preset")
for _fam, _sizes in _PUBLISHED.items():
    for _size, (_d, _n) in _sizes.items():
        SIZE_PRESETS.add(f"{_fam}-{_size}", dict(_FAMILY[_fam], d_model=_d, n_layers=_n,
                                                vocab_size=50280, tie_embeddings=True))  # fmt: skip


def preset(name: str, **overrides: Any) -> LMConfig:
    """A validated :class:`LMConfig` for a published size (:data:`SIZE_PRESETS`, e.g.
    ``"mamba-130m"``, ``"mamba2-2.7b"``) with ``overrides`` applied."""
    return validate({**SIZE_PRESETS.get(name, "model.preset"), **overrides})


def count_params(cfg: LMConfig | Mapping[str, Any]) -> int:
    """Number of parameters of the LM (shape-only init: nothing is allocated)."""
    model = make_model(cfg)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def make_model(cfg: LMConfig | Mapping[str, Any]) -> LM:
    """Validated :class:`LM` from an :class:`LMConfig` or a mapping (e.g. ``config.model``)."""
    return LM(validate(cfg))


def init_params(model: LM, key: Array, seq_len: int = 8) -> Any:
    """The model's variables (jitted init: one compile instead of op-by-op dispatch)."""
    return jax.jit(model.init)(key, jnp.zeros((1, seq_len), jnp.int32))


def init_caches(cfg: LMConfig, batch: int, max_len: int) -> tuple:
    """Zero decode caches for every layer (a tuple of the layers' cache NamedTuples)."""
    return tuple(LAYERS.get(n).init_cache(cfg, batch, max_len) for n in cfg.layer_names())


def token_logprobs(model: LM, params: Any, tokens: Array) -> Array:
    """``log p(tokens[:, t+1] | tokens[:, :t+1])``, f32[B, L-1]."""
    logits, _ = model.apply(params, tokens)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


def hidden_states(model: LM, params: Any, tokens: Array) -> Array:
    """Final-normed hidden states f32[B, L, D]."""
    return model.apply(params, tokens)[1]


class Sampling(NamedTuple):
    """Sampling controls (traced scalars; one compile serves every value).

    temperature: f32[], ``<= 0`` is greedy (argmax, no sort). top_k: int32[], 0 = off.
    top_p: f32[], ``<= 0`` or ``>= 1`` = off (mamba_ssm: 0.0 means off). min_p: f32[], 0 = off.
    repetition_penalty: f32[], 1 = off (CTRL, Keskar et al. 2019: a seen token's logit is divided
    by it when positive, multiplied when negative; greedy included, as upstream).
    """

    temperature: Array
    top_k: Array
    top_p: Array
    min_p: Array
    repetition_penalty: Array


def make_sampling(temperature=1.0, top_k=0, top_p=0.0, min_p=0.0, repetition_penalty=1.0):
    return Sampling(jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p),
                    jnp.float32(min_p), jnp.float32(repetition_penalty))  # fmt: skip


def apply_repetition_penalty(logits: Array, seen: Array, penalty: Array) -> Array:
    """logits f32[B, V], seen bool[B, V] (tokens in the prompt or generated so far)."""
    pen = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen, pen, logits)


def filter_top_k(logits: Array, k: Array) -> Array:
    """Keeps the logits >= the k-th largest (ties at the k-th are kept, as ``torch.topk``'s
    threshold in mamba_ssm); k = 0 keeps all. logits f32[B, V]."""
    srt = jnp.sort(logits, axis=-1)[:, ::-1]
    kth = jnp.take(srt, jnp.clip(k - 1, 0, logits.shape[-1] - 1), axis=-1)[:, None]
    return jnp.where((k > 0) & (logits < kth), -jnp.inf, logits)


def filter_top_p(logits: Array, p: Array) -> Array:
    """Nucleus filter (Holtzman et al. 2020; mamba_ssm ``modify_logits_for_top_p_filtering``):
    in descending order, a token is kept iff the probability mass strictly before it is < p
    (so the most likely token is always kept); ``p <= 0`` or ``p >= 1`` keeps all."""
    srt = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(srt, axis=-1)
    before = jnp.concatenate([jnp.zeros_like(probs[:, :1]), jnp.cumsum(probs, -1)[:, :-1]], -1)
    thresh = jnp.min(jnp.where(before < p, srt, jnp.inf), axis=-1, keepdims=True)
    off = (p <= 0) | (p >= 1)
    return jnp.where(off | (logits >= thresh), logits, -jnp.inf)


def filter_min_p(logits: Array, min_p: Array) -> Array:
    """Keeps tokens with ``p >= min_p * p_max`` (min-p sampling); min_p = 0 keeps all."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    floor = jnp.max(logp, axis=-1, keepdims=True) + jnp.log(jnp.maximum(min_p, 1e-30))
    return jnp.where((min_p <= 0) | (logp >= floor), logits, -jnp.inf)


def warp_logits(logits: Array, s: Sampling, sort: bool = True) -> Array:
    """Temperature, then top-k, top-p (on the top-k-renormalised distribution), then min-p,
    the order of mamba_ssm's ``sample``; ``sort=False`` skips the two sorting filters."""
    x = logits / jnp.maximum(s.temperature, 1e-6)
    if sort:
        x = filter_top_p(filter_top_k(x, s.top_k), s.top_p)
    return filter_min_p(x, s.min_p)


def sample_token(
    key: Array,
    logits: Array,
    temperature: Array | float = 1.0,
    top_p: Array | float = 0.0,
    top_k: Array | int = 0,
    min_p: Array | float = 0.0,
) -> Array:
    """One token per row, logits f32[B, V] -> int32[B] (see :class:`Sampling`).

    A ``lax.switch`` picks one of three branches at run time: greedy (argmax only), plain
    categorical (temperature/min-p, no sort) when top-k and top-p are off, and the sorting
    branch otherwise, so greedy and plain sampling never sort the vocabulary.
    """
    s = make_sampling(temperature, top_k, top_p, min_p)
    return _sample(key, logits, s)


def _sample(key: Array, logits: Array, s: Sampling) -> Array:
    needs_sort = (s.top_k > 0) | ((s.top_p > 0) & (s.top_p < 1))
    branch = jnp.where(s.temperature <= 0, 0, jnp.where(needs_sort, 2, 1))
    cat = lambda x: jax.random.categorical(key, x, axis=-1).astype(jnp.int32)
    return jax.lax.switch(
        branch,
        [
            lambda x: jnp.argmax(x, axis=-1).astype(jnp.int32),
            lambda x: cat(warp_logits(x, s, sort=False)),
            lambda x: cat(warp_logits(x, s, sort=True)),
        ],
        logits,
    )


class DecodeState(NamedTuple):
    """Carry of the decode loop: caches; logits f32[B, V] for the next token; tokens
    int32[B, max_new] (pad after a row finished); seen bool[B, V]; finished bool[B]; t int32[]."""

    caches: tuple
    logits: Array
    tokens: Array
    seen: Array
    finished: Array
    t: Array


@functools.lru_cache(maxsize=64)
def _generate_fn(cfg: LMConfig, max_new_tokens: int, cache_len: int | None):
    model = LM(cfg)

    def run(params, prompt, key, s: Sampling, eos_id, pad_id):
        B, P = prompt.shape
        V = cfg.vocab_size
        caches = init_caches(cfg, B, cache_len or P + max_new_tokens)
        logits, _, caches = model.apply(params, prompt, caches, method=LM.prefill)
        seen = jnp.zeros((B, V), bool).at[jnp.arange(B)[:, None], prompt].set(True)
        keys = jax.random.split(key, max_new_tokens)
        init = DecodeState(caches, logits, jnp.full((B, max_new_tokens), pad_id, jnp.int32),
                           seen, jnp.zeros((B,), bool), jnp.int32(0))  # fmt: skip

        def body(st: DecodeState) -> DecodeState:
            logits = apply_repetition_penalty(st.logits, st.seen, s.repetition_penalty)
            tok = jnp.where(st.finished, pad_id, _sample(keys[st.t], logits, s))
            tokens = jax.lax.dynamic_update_slice_in_dim(st.tokens, tok[:, None], st.t, 1)
            seen = st.seen.at[jnp.arange(B), tok].set(True)
            finished = st.finished | ((eos_id >= 0) & (tok == eos_id))
            logits, _, caches = model.apply(params, tok, st.caches, method=LM.step)
            return DecodeState(caches, logits, tokens, seen, finished, st.t + 1)

        def cond(st: DecodeState) -> Array:
            return (st.t < max_new_tokens) & ~jnp.all(st.finished)

        out = jax.lax.while_loop(cond, body, init)
        return jnp.concatenate([prompt.astype(jnp.int32), out.tokens], axis=1)

    return jax.jit(run)


def generate(
    model: LM,
    params: Any,
    prompt: Array,
    key: Array,
    max_new_tokens: int,
    temperature: float | Array = 1.0,
    top_p: float | Array = 0.0,
    top_k: int | Array = 0,
    min_p: float | Array = 0.0,
    repetition_penalty: float | Array = 1.0,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> Array:
    """Samples ``max_new_tokens`` after ``prompt`` int32[B, P] -> int32[B, P + max_new_tokens].

    The prompt goes through one parallel :meth:`LM.prefill` that returns each layer's cache
    (SSM/conv states, S4's recurrent matrices, the KV cache); the new tokens are O(1) recurrent
    steps (attention: O(position)). Sampling controls: see :class:`Sampling`
    (``temperature=0`` is greedy). With ``eos_id``, a row that emits it is finished: its later
    tokens are ``pad_id`` (default ``eos_id``) and the loop stops once every row is finished.
    The compiled function is cached per (config, max_new_tokens); the controls are traced.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be int32 (batch, P>=1), got shape {prompt.shape}")
    if (
        "s4" in model.config.layer_names()
        and prompt.shape[1] + max_new_tokens > model.config.max_len
    ):
        raise ValueError(
            f"S4 decodes at most max_len={model.config.max_len} tokens (its C~ is defined for "
            f"that length), asked for {prompt.shape[1] + max_new_tokens}"
        )
    eos = -1 if eos_id is None else int(eos_id)
    pad = (0 if eos_id is None else eos) if pad_id is None else int(pad_id)
    s = make_sampling(temperature, top_k, top_p, min_p, repetition_penalty)
    fn = _generate_fn(model.config, int(max_new_tokens), None)
    return fn(params, prompt, key, s, jnp.int32(eos), jnp.int32(pad))
