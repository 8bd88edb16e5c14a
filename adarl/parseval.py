"""Parseval regularisation (Chung, Cherif, Precup, Meger, NeurIPS 2024, arXiv 2412.07224).

Following the official code [PAR-code ``parseval_reg/agent.py``] as summarised in ADARL.md §7.2:

    L_parseval = λ · (64/width)² · Σ_{l ∈ hidden layers of actor and critics} ‖K_lᵀ K_l − s·I‖²_F

with Flax kernels K_l of shape (in, out) (PyTorch's ``W Wᵀ`` with W = Kᵀ), ``s = 2`` (the squared
orthogonal-init gain √2), over every hidden layer including input->hidden, never the output layer
nor biases. The ``(64/width)²`` factor of [PAR-code] is kept behind ``width_scaling`` (it is 1 at
the paper's width 64). The optional learnable input scale and per-unit "diag" layers live in
``adarl.networks`` (``learnable_input_scale``, ``diag_layer``) and are not penalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from adarl import networks


def orthogonality_gap(kernel: jax.Array, s: float = 2.0) -> jax.Array:
    """‖KᵀK − s·I‖²_F for one kernel K f32 (in, out); returns f32 ()."""
    gram = kernel.T @ kernel
    return jnp.sum((gram - s * jnp.eye(gram.shape[0], dtype=gram.dtype)) ** 2)


def penalty(
    kernels: Sequence[jax.Array], lam: float, s: float = 2.0, width_scaling: bool = True
) -> jax.Array:
    """λ Σ_l (64/out_l)² ‖K_lᵀK_l − sI‖²_F over ``kernels`` (each (in, out) or (C, in, out))."""
    total = jnp.zeros((), jnp.float32)
    for k in kernels:
        gap = (
            jax.vmap(lambda m: orthogonality_gap(m, s))(k)
            if k.ndim == 3
            else orthogonality_gap(k, s)
        )
        factor = (64.0 / k.shape[-1]) ** 2 if width_scaling else 1.0
        total = total + factor * jnp.sum(gap)
    return lam * total


def actor_kernels(actor_params: dict, actor_rank: jax.Array) -> list[jax.Array]:
    """Hidden kernels of the actor (Flax variable dict) at its current ranks."""
    return networks.hidden_kernels(actor_params["params"]["mlp"], actor_rank)


def critic_kernels(critic_params: dict, critic_rank: jax.Array) -> list[jax.Array]:
    """Hidden kernels of the critics, each f32 (C, in, out)."""
    mlp = critic_params["params"]["mlp"]
    per_layer = jax.vmap(networks.hidden_kernels)(mlp, critic_rank)
    return list(per_layer)
