"""Actor and twin critics for SAC/AdaRL with factorised (low-rank) hidden->hidden layers.

AdaRL (arXiv 2510.11899, App. A.2.1, Fig. 5) inserts a linear bottleneck (no bias, no activation)
between the two hidden layers, so the hidden->hidden weight becomes ``W = W1 W2`` of rank <= r.
Here (ADARL.md §5.1) the bottleneck has a fixed maximal width ``R`` and a 0/1 rank mask
``m = arange(R) < rank``; a rank change edits the mask (an int32 array in the state), never a
shape, so nothing recompiles, and masked columns get exactly zero gradient:

    y = ((x A) ⊙ m) B + b,      A: (in, R), B: (R, out), b: (out,)        (Flax kernels are (in, out))

The factors are initialised from the SVD of an ordinary ``lecun_uniform`` dense kernel
(``A = U sqrt(S)``, ``B = sqrt(S) Vᵀ``), so at full rank the network starts as the dense one.

Parseval options (ADARL.md §7.2, [PAR-code]): a learnable scalar input scale and a per-unit
learnable scale+bias ("diag layer") after every hidden layer, before the activation.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # Spinning Up's SquashedGaussianMLPActor clamp
_KERNEL_INIT = nn.initializers.lecun_uniform()  # brax's SAC networks


def svd_factors(kernel: jax.Array, rank_max: int) -> tuple[jax.Array, jax.Array]:
    """Splits ``kernel`` (in, out) into A (in, R), B (R, out) with ``A B`` its best rank-R approx.

    Columns/rows beyond ``min(in, out)`` are zero.
    """
    u, s, vt = jnp.linalg.svd(kernel, full_matrices=False)
    k = min(rank_max, s.shape[0])
    root = jnp.sqrt(s[:k])
    a = jnp.zeros((kernel.shape[0], rank_max), kernel.dtype).at[:, :k].set(u[:, :k] * root)
    b = jnp.zeros((rank_max, kernel.shape[1]), kernel.dtype).at[:k].set(root[:, None] * vt[:k])
    return a, b


def rank_mask(rank: jax.Array, rank_max: int, dtype=jnp.float32) -> jax.Array:
    """f32 (R,) mask with ones in the first ``rank`` entries."""
    return (jnp.arange(rank_max) < rank).astype(dtype)


class LowRankDense(nn.Module):
    """``y = x ((A ⊙ mask(rank)) B) + b``: a dense layer of rank <= ``rank`` (ADARL.md §5.1).

    Params: ``A`` f32 (in, R), ``B`` f32 (R, out), ``bias`` f32 (out,). ``rank``: i32 () traced.
    """

    features: int
    rank_max: int

    @nn.compact
    def __call__(self, x: jax.Array, rank: jax.Array) -> jax.Array:
        in_dim = x.shape[-1]
        init_a = init_b = None
        if self.is_initializing():
            kernel = _KERNEL_INIT(self.make_rng("params"), (in_dim, self.features))
            init_a, init_b = svd_factors(kernel, self.rank_max)
        a = self.param("A", lambda _: init_a)
        b = self.param("B", lambda _: init_b)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        # Form the (in, out) product once instead of masking a (batch, R) activation: the same
        # function and gradients (masked columns of A and rows of B still get zero gradient), at
        # the cost of a dense layer for the large batches SAC uses.
        kernel = (a * rank_mask(rank, self.rank_max, a.dtype)) @ b
        return x @ kernel + bias


class DiagLayer(nn.Module):
    """Per-unit learnable scale and bias ``y = x ⊙ c + d`` (c=1, d=0 at init), [PAR-code]."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        d = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return x * c + d


class MLP(nn.Module):
    """ReLU MLP; hidden layer i >= 1 is a :class:`LowRankDense` when ``low_rank``.

    Layers are named ``hidden_0 .. hidden_{L}`` and ``output`` (the Parseval penalty and the rank
    projection find the hidden layers by these names). ``ranks``: i32 (L,) with L = len(hidden)-1.
    """

    hidden: Sequence[int]
    out_dim: int
    low_rank: bool
    rank_max: int
    diag_layer: bool = False
    learnable_input_scale: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, ranks: jax.Array) -> jax.Array:
        if self.learnable_input_scale:
            x = x * self.param("input_scale", nn.initializers.ones, ())
        for i, width in enumerate(self.hidden):
            if i > 0 and self.low_rank:
                x = LowRankDense(width, self.rank_max, name=f"hidden_{i}")(x, ranks[i - 1])
            else:
                x = nn.Dense(width, kernel_init=_KERNEL_INIT, name=f"hidden_{i}")(x)
            if self.diag_layer:
                x = DiagLayer(name=f"diag_{i}")(x)
            x = nn.relu(x)
        return nn.Dense(self.out_dim, kernel_init=_KERNEL_INIT, name="output")(x)


class Actor(nn.Module):
    """Tanh-Gaussian policy head: returns (mean, log_std), each f32 (..., A), pre-squash."""

    action_size: int
    hidden: Sequence[int]
    low_rank: bool
    rank_max: int
    diag_layer: bool = False
    learnable_input_scale: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, ranks: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP(
            self.hidden,
            2 * self.action_size,
            self.low_rank,
            self.rank_max,
            self.diag_layer,
            self.learnable_input_scale,
            name="mlp",
        )(obs, ranks)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class Critics(nn.Module):
    """``num_critics`` independent Q networks on concat(obs, action): returns f32 (C, ...).

    ``ranks``: i32 (C, L). Parameters carry a leading (C,) axis (``nn.vmap``).
    """

    num_critics: int
    hidden: Sequence[int]
    low_rank: bool
    rank_max: int
    diag_layer: bool = False
    learnable_input_scale: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array, ranks: jax.Array) -> jax.Array:
        vmapped = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(None, 0),
            out_axes=0,
            axis_size=self.num_critics,
        )
        q = vmapped(
            self.hidden,
            1,
            self.low_rank,
            self.rank_max,
            self.diag_layer,
            self.learnable_input_scale,
            name="mlp",
        )(jnp.concatenate([obs, action], axis=-1), ranks)
        return q[..., 0]


# ---------------------------------------------------------------------------------------------
# Tanh-Gaussian distribution (Haarnoja et al. 2018, App. C, Eq. 21)
# ---------------------------------------------------------------------------------------------


def tanh_gaussian_sample(
    key: jax.Array, mean: jax.Array, log_std: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reparameterised sample a = tanh(mean + std·ε) and its log-density, f32 (..., A), (...)."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(u), tanh_gaussian_log_prob_pre(u, mean, log_std)


def tanh_gaussian_log_prob_pre(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log π(tanh u) = log N(u; mean, std) − Σ log(1 − tanh² u), the latter in the stable form
    ``2 (log 2 − u − softplus(−2u))`` (SAC Eq. 21; Spinning Up)."""
    z = (u - mean) * jnp.exp(-log_std)
    log_normal = -0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.sum(log_normal - log_det, axis=-1)


# ---------------------------------------------------------------------------------------------
# Access to hidden layers (rank projection, Parseval, logging)
# ---------------------------------------------------------------------------------------------


def hidden_layer_names(params: dict) -> list[str]:
    """Names ``hidden_i`` of an MLP's hidden layers in order (``params`` = the mlp's dict)."""
    names = [k for k in params if k.startswith("hidden_")]
    return sorted(names, key=lambda k: int(k.split("_")[1]))


def effective_kernel(layer: dict, rank: jax.Array | None = None) -> jax.Array:
    """The (in, out) kernel of a Dense (``kernel``) or LowRankDense (``(A ⊙ m) B``) layer."""
    if "kernel" in layer:
        return layer["kernel"]
    a, b = layer["A"], layer["B"]
    return (a * rank_mask(rank, a.shape[-1], a.dtype)) @ b


def hidden_kernels(mlp_params: dict, ranks: jax.Array) -> list[jax.Array]:
    """Effective kernels of every hidden layer of one MLP (input->hidden included)."""
    out = []
    for name in hidden_layer_names(mlp_params):
        i = int(name.split("_")[1])
        layer = mlp_params[name]
        out.append(effective_kernel(layer, ranks[i - 1] if "A" in layer else None))
    return out


def factorised_layer_names(mlp_params: dict) -> list[str]:
    """Names of the :class:`LowRankDense` layers of one MLP, in order."""
    return [n for n in hidden_layer_names(mlp_params) if "A" in mlp_params[n]]
