"""Verifiable rewards: exact match, TTRL majority-vote pseudo-labels, DAPO's overlong penalty.

All functions are pure JAX on integer token/answer arrays, so they run inside a jitted rollout.
Answers are integer ids produced by a task's deterministic extractor (equal ids = equivalent
answers); extraction failures are flagged by ``valid == False``.
"""

from __future__ import annotations

import jax.numpy as jnp

from flowrl.types import Array, Metrics


def exact_match_reward(
    pred: Array,
    target: Array,
    pred_mask: Array,
    target_mask: Array,
    correct: float = 1.0,
    wrong: float = 0.0,
) -> Array:
    """``correct`` where the masked token strings are identical (same length, same tokens), else
    ``wrong``.

    Args:
      pred: i32[B, L] predicted answer tokens; target: i32[B, L] reference tokens.
      pred_mask, target_mask: [B, L] 1 on the answer tokens (left-aligned within the span).

    Returns:
      f32[B] rewards.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
    pm, tm = pred_mask > 0, target_mask > 0
    same = jnp.all((pm == tm) & (~pm | (pred == target)), axis=-1)
    return jnp.where(same, correct, wrong).astype(jnp.float32)


def majority_vote(answers: Array, valid: Array | None = None) -> tuple[Array, Array, Array]:
    """Majority answer of each prompt's samples (TTRL, arXiv 2504.16084, Listing 1).

    Ties go to the answer that occurs first, as ``Counter.most_common(1)`` does.

    Args:
      answers: i32[P, N] extracted answer ids.
      valid: bool[P, N] extraction succeeded (None = all valid). Invalid samples do not vote.

    Returns:
      (label i32[P] (-1 if no valid sample), votes f32[P] count of the majority answer,
       agreement f32[P] = votes / N, TTRL's ``majority_ratio``).
    """
    valid = jnp.ones(answers.shape, bool) if valid is None else valid.astype(bool)
    same = (answers[..., :, None] == answers[..., None, :]) & valid[..., None, :]
    counts = jnp.where(valid, jnp.sum(same, axis=-1), -1)  # [P, N] votes for sample i's answer
    first = jnp.argmax(counts, axis=-1)  # first sample holding a maximal answer
    votes = jnp.take_along_axis(counts, first[..., None], axis=-1)[..., 0]
    label = jnp.take_along_axis(answers, first[..., None], axis=-1)[..., 0]
    label = jnp.where(votes > 0, label, -1)
    votes = jnp.maximum(votes, 0).astype(jnp.float32)
    return label, votes, votes / answers.shape[-1]


def majority_vote_reward(
    answers: Array,
    valid: Array | None = None,
    ground_truth: Array | None = None,
    num_train: int | None = None,
) -> tuple[Array, Metrics]:
    """TTRL pseudo-label reward r_i = 1[answer_i == majority answer] (FLOWRL.md §5.1).

    The vote uses all N samples; with ``num_train`` only the first ``num_train`` samples per
    prompt are returned (TTRL votes over 64 and trains on the first 32).

    Args:
      answers: i32[P, N]; valid: bool[P, N] or None.
      ground_truth: i32[P] hidden true answers, for the diagnostic metrics only.
      num_train: keep the first ``num_train`` samples (None = all).

    Returns:
      (rewards f32[P, num_train or N], metrics): ``majority_ratio`` (mean agreement rate), and
      with ``ground_truth``: ``label_accuracy`` (majority == truth), ``reward_accuracy``
      (pseudo reward == true reward over the returned samples), ``ground_truth_ratio``.
    """
    n = answers.shape[-1]
    if num_train is not None and not 1 <= num_train <= n:
        raise ValueError(f"num_train={num_train} must lie in [1, {n}]")
    valid_b = jnp.ones(answers.shape, bool) if valid is None else valid.astype(bool)
    label, _, agreement = majority_vote(answers, valid_b)
    rewards = ((answers == label[:, None]) & valid_b & (label[:, None] >= 0)).astype(jnp.float32)
    metrics = {"majority_ratio": jnp.mean(agreement)}
    if ground_truth is not None:
        true_rewards = ((answers == ground_truth[:, None]) & valid_b).astype(jnp.float32)
        k = n if num_train is None else num_train
        metrics["label_accuracy"] = jnp.mean((label == ground_truth).astype(jnp.float32))
        metrics["reward_accuracy"] = jnp.mean(
            (rewards[:, :k] == true_rewards[:, :k]).astype(jnp.float32)
        )
        metrics["ground_truth_ratio"] = jnp.mean(true_rewards)
    if num_train is not None:
        rewards = rewards[:, :num_train]
    return rewards, metrics


def overlong_penalty(
    lengths: Array, max_len: int, buffer_len: int, penalty_factor: float = 1.0
) -> Array:
    """DAPO soft overlong punishment (arXiv 2503.14476 eq. 13; verl ``reward_manager/dapo.py``).

    exceed = |y| - (L_max - L_buf); penalty = min(-exceed / L_buf * penalty_factor, 0): zero up to
    L_max - L_buf, then linear down to -penalty_factor at L_max. Add it to the task reward.

    Args:
      lengths: i32[B] response lengths |y|.
      max_len: L_max; buffer_len: L_buf in [1, L_max]; penalty_factor: >= 0.

    Returns:
      f32[B] penalties (<= 0).
    """
    if not 1 <= buffer_len <= max_len:
        raise ValueError(f"buffer_len={buffer_len} must lie in [1, max_len={max_len}]")
    if penalty_factor < 0:
        raise ValueError(f"penalty_factor={penalty_factor} must be >= 0")
    exceed = lengths.astype(jnp.float32) - (max_len - buffer_len)
    return jnp.minimum(-exceed / buffer_len * penalty_factor, 0.0)
