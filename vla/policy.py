"""The VLA policy: an ``ssm.lm`` backbone that emits a whole action chunk in one parallel pass.

OpenVLA-OFT setting (SimpleVLA-RL, FLOWRL.md §6.1): the input is the instruction, the tokenised
state and ``chunk * ACTION_DIM`` action-slot placeholders (:func:`vla.tokens.prompt_tokens`);
the causal backbone's logits at the placeholder positions, restricted to the last
``ACTION_BINS`` vocabulary ids (the action-bin slice), give every action token of the chunk at
once. Sampling and training both use the temperature-T distribution
``log_softmax(logits_slice / T)`` (verl divides the logits by the rollout temperature).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ssm import lm
from vla.envs import ACTION_DIM
from vla.tokens import ACTION_BINS, bin_to_token, prompt_len, vocab_size

Array = jax.Array


def make_model(model_config: Mapping[str, Any], obs_bins: int, chunk: int) -> lm.LM:
    """The backbone; ``model_config`` holds :class:`ssm.lm.LMConfig` fields (vocab and max_len
    are set here from the tokenisation)."""
    fields = dict(model_config)
    fields.update(vocab_size=vocab_size(obs_bins, chunk), max_len=prompt_len(chunk))
    return lm.make_model(lm.LMConfig.from_mapping(fields))


def init_params(model: lm.LM, key: Array, chunk: int) -> Any:
    return model.init(key, jnp.zeros((1, prompt_len(chunk)), jnp.int32))


def bin_logits(model: lm.LM, params: Any, prompts: Array, chunk: int) -> Array:
    """prompts i32[N, L] -> logits over action bins f32[N, chunk * ACTION_DIM, ACTION_BINS].

    ``token = V - bin - 1``, so bin b is vocabulary id V - 1 - b: the slice is reversed.
    """
    logits, _ = model.apply(params, prompts)
    return logits[:, -chunk * ACTION_DIM :, -ACTION_BINS:][..., ::-1]


def chunk_logp(
    model: lm.LM, params: Any, prompts: Array, bins: Array, temperature: Array, chunk: int
) -> Array:
    """log pi_T(bins | prompt) per action token, f32[N, chunk * ACTION_DIM] (one forward pass)."""
    logp = jax.nn.log_softmax(bin_logits(model, params, prompts, chunk) / temperature, axis=-1)
    return jnp.take_along_axis(logp, bins[..., None], axis=-1)[..., 0]


def chunk_logp_reference(
    model: lm.LM, params: Any, prompts: Array, bins: Array, temperature: float, chunk: int
) -> Array:
    """Plain reference of :func:`chunk_logp`: one action token at a time over the full-vocabulary
    logits, picking the token ids ``V - bin - 1`` (no slicing trick, no reversal)."""
    n_slots = chunk * ACTION_DIM
    vocab = model.config.vocab_size
    first = vocab - ACTION_BINS
    out = []
    for j in range(n_slots):
        logits, _ = model.apply(params, prompts)
        pos = prompts.shape[1] - n_slots + j
        slice_ = logits[:, pos, first:] / temperature
        tokens = bin_to_token(bins[:, j], vocab)
        out.append(
            jax.nn.log_softmax(slice_, axis=-1)[jnp.arange(prompts.shape[0]), tokens - first]
        )
    return jnp.stack(out, axis=1)


def sample_bins(key: Array, logits: Array, temperature: Array) -> Array:
    """Multinomial sample at ``temperature`` (greedy argmax when it is <= 0): i32[N, A]."""
    sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6), axis=-1)
    greedy = jnp.argmax(logits, axis=-1)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)
