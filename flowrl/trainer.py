"""RL trainer for sequence-model policies on verifiable tasks: GRPO family, PPO, FlowRL, HPT, TTRL.

``make_train(config) -> train(key)`` is pure (jit-able; FLOWRL.md §8, STYLE.md convention 2):

1. **SFT warm start** on the demonstrations of the first ``sft.demo_fraction`` of the training
   problems (token-mean NLL, ``sft.steps`` Adam steps, or with ``sft.until_maj`` > 0 until maj@m
   on held-out training problems reaches it: :func:`run_sft`), so the pass rate starts in (0, 1); the
   result is both the RL initialisation and the frozen reference pi_ref. The SFT start depends
   only on the seed and the SFT/model/task fields, so every algorithm of a sweep starts from the
   same weights (``train_and_evaluate`` caches it with ``sft.cache_dir``).
2. **RL steps**: sample P prompts x G responses at temperature T (recurrent/cached decoding);
   score them with the task's exact verifier (or, in TTRL mode, with the majority vote over the
   G samples as pseudo-label, FLOWRL.md §5.1, training on the first ``train_group_size``);
   optional DAPO overlong shaping of the rewards (``rl.overlong_buffer``) and dynamic sampling
   (drop all-equal groups, refill from 3x batches up to 10 times, error when unfilled); old and
   reference log-probs at the rollout temperature (``old`` from the rollout policy); optional
   KL-in-reward (``rl.kl_in_reward``); advantages from the advantage registry; then ``epochs`` x
   ``num_minibatches`` AdamW updates (``rl.lr_schedule`` with warm-up) of one objective

       L = L_policy(inputs masked by alpha_p) + value_coef L_value - entropy_coef H
           + sft_coef L_SFT(demonstrations weighted by 1 - alpha_p)

   where ``L_policy`` comes from the loss registry (:func:`flowrl.losses.get_loss`) by name and
   alpha_p = 1[#correct_p > hpt_gate] is HPT's per-prompt switch (:func:`flowrl.upge.hpt_switch`;
   ``hpt_gate = -1`` never switches; the ``soft`` strategy uses HPT's graded table instead);
   L_value is clipped around the rollout's values for PPO, and during ``critic_warmup`` steps
   only L_value is optimised. The trainer never branches on algorithm names: an
   algorithm is an :class:`AlgoSpec` row of :data:`ALGORITHMS` (loss name, advantage name, loss
   overrides, coefficients), and the HPT mixed loss is the row with gate 0 and sft_coef 1 whose
   RL part is the unclipped Dr.GRPO surrogate (equal, value and gradient, to
   :func:`flowrl.upge.hpt_mixed_loss` with HPT's released settings; tested).
3. **Evaluation** on held-out prompts: pass@1, unbiased pass@k (k up to n), maj@n, distinct
   correct answers per prompt (and their share of all solutions), response length; pass@1 at
   extra temperatures (greedy, 0.6); sampled completions to ``workdir/rollouts.jsonl`` and a
   per-prompt reward histogram to ``workdir/tb_rollouts`` (:func:`log_rollouts`).

Train metrics: reward, accuracy, policy entropy, k3 KL to the reference, response length, the
loss's own metrics, HPT's SFT fraction, TTRL's label/reward accuracy, and (host side) tokens/s.

Shapes: P prompts per step, G samples per prompt (G_t trained on), B = P G_t sequences,
``Lp`` prompt length, R response length.

Parallelism (``config.parallel``, :mod:`harness.parallel`): the P G generated sequences, their
scoring and the B / M rows of every minibatch are split over the mesh axis ``"data"`` (checked to
divide before compiling); the policy, its log Z and value heads, the reference LM and the
optimizer state are replicated, or FSDP-sharded over ``"data"`` with ``parallel.fsdp=True``
(:func:`state_shardings`). GSPMD inserts the collectives; on one device this is the plain loop.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorboardX

import harness
from flowrl import losses, metrics, rewards, sampling, tasks, upge
from flowrl.advantages import compute_advantages, outcome_to_token_rewards
from flowrl.aggregation import agg_loss, masked_mean, seq_sum
from flowrl.kl import kl_estimate
from flowrl.policy import Policy, PolicyParams, make_policy
from flowrl.types import AdvantageConfig, AdvantageInputs, LossInputs
from harness import parallel
from ssm import lm as ssm_lm

Array = jax.Array

# ---------------------------------------------------------------------------------------------
# Algorithms: registry rows, no name branches in the trainer
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AlgoSpec:
    """One RL algorithm as data.

    Attributes:
      loss: a :mod:`flowrl.losses` registry name.
      advantage: a :mod:`flowrl.advantages` registry name.
      loss_overrides: LossConfig fields over the loss's published defaults.
      value_coef: weight of the value-head regression (PPO).
      sft_coef: weight of the SFT term on demonstrations (HPT).
      hpt_gate: per-prompt switch: RL iff #correct > gate, SFT otherwise; -1 = always RL.
      entropy_coef: entropy bonus (HPT: 0.001); ``rl.entropy_coef >= 0`` overrides it.
      dynamic_sampling: drop groups with all-equal rewards and refill (DAPO).
      hpt_strategy: a :data:`HPT_STRATEGIES` name: "switch" (released HPT: alpha = 1[k > gate])
        or "soft" (HPT's graded table, FLOWRL.md §4.3).
      value_clip: PPO value clipping range around the rollout's values (verl
        ``cliprange_value`` 0.5), None = unclipped.
      critic_warmup: RL steps during which only the value head learns (verl ``critic_warmup``);
        the policy, log Z and SFT terms are switched off until then.
    """

    loss: str
    advantage: str
    loss_overrides: tuple[tuple[str, Any], ...] = ()
    value_coef: float = 0.0
    sft_coef: float = 0.0
    hpt_gate: int = -1
    entropy_coef: float = 0.0
    dynamic_sampling: bool = False
    hpt_strategy: str = "switch"
    value_clip: float | None = None
    critic_warmup: int = 0


ALGORITHMS: harness.Registry[AlgoSpec] = harness.Registry("algorithm")
for _name, _spec_row in {
    "grpo": AlgoSpec("grpo", "grpo"),
    "dr_grpo": AlgoSpec("dr_grpo", "dr_grpo"),
    "dapo": AlgoSpec("dapo", "grpo", dynamic_sampling=True),
    "gspo": AlgoSpec("gspo", "grpo"),
    "cispo": AlgoSpec("cispo", "grpo"),
    "reinforce": AlgoSpec("reinforce", "rloo"),
    # PPO with a value head: GAE (gamma = lam = 1, whitened), value loss 0.5 (FLOWRL.md §2.1),
    # value clipping 0.5 (verl cliprange_value); the fresh value head gets 5 critic-only steps
    # before the policy moves [Rec: verl's critic_warmup defaults to 0, but its critic starts
    # from the LM, ours from a random head].
    "ppo": AlgoSpec("ppo", "gae", value_coef=0.5, value_clip=0.5, critic_warmup=5),
    # FlowRL: r_hat = GRPO z-score (official script), beta and w mode from the loss defaults.
    "flowrl": AlgoSpec("flowrl", "grpo"),
    # HPT released settings (FLOWRL.md §4.3): gate 0, sft_coef 1, no clip (clip range [0, inf)),
    # Dr.GRPO advantage, division by the padded length, entropy 0.001, no KL.
    "hpt": AlgoSpec(
        "dr_grpo",
        "dr_grpo",
        loss_overrides=(("clip_low", 1.0), ("clip_high", 1e9), ("dual_clip", None)),
        sft_coef=1.0,
        hpt_gate=0,
        entropy_coef=0.001,
    ),
    # HPT's graded "soft" strategy (unify_strategy="soft", soft_type=1; not the released run).
    "hpt_soft": AlgoSpec(
        "dr_grpo",
        "dr_grpo",
        loss_overrides=(("clip_low", 1.0), ("clip_high", 1e9), ("dual_clip", None)),
        sft_coef=1.0,
        hpt_strategy="soft",
        entropy_coef=0.001,
    ),
    # Control arm: keep doing SFT on the demonstrations of the sampled prompts for the same RL
    # budget (a gate no group reaches: every prompt is switched to SFT, no policy-gradient term).
    "sft_continued": AlgoSpec("sft", "grpo", sft_coef=1.0, hpt_gate=2**30),
}.items():
    ALGORITHMS.add(_name, _spec_row)


def register_algorithm(name: str, spec: AlgoSpec) -> None:
    """Adds an algorithm row; a duplicate name raises ValueError, an unknown loss ConfigError."""
    losses.get_loss(spec.loss)
    HPT_STRATEGIES.get(spec.hpt_strategy, "AlgoSpec.hpt_strategy")
    ALGORITHMS.add(name, spec)


# HPT per-prompt coefficients (alpha = RL weight f32[P], beta = SFT weight f32[P]) from the number
# of correct rollouts i32[P] and the gate (FLOWRL.md §4.3).
HPT_STRATEGIES: harness.Registry[Callable] = harness.Registry("HPT strategy")
HPT_STRATEGIES.add("switch", upge.hpt_switch)
HPT_STRATEGIES.add("soft", lambda num_correct, gate: upge.hpt_soft_coefficients(num_correct))


def _constant_lr(lr: float, warmup: int, total: int) -> optax.Schedule:
    return optax.linear_schedule(lr / max(warmup, 1) if warmup else lr, lr, max(warmup, 1))


def _cosine_lr(lr: float, warmup: int, total: int) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        lr / max(warmup, 1) if warmup else lr, lr, warmup, max(total, warmup + 1), end_value=0.0
    )


def _linear_lr(lr: float, warmup: int, total: int) -> optax.Schedule:
    start = lr / max(warmup, 1) if warmup else lr
    return optax.join_schedules(
        [optax.linear_schedule(start, lr, warmup), optax.linear_schedule(lr, 0.0, total - warmup)],
        [warmup],
    )


# Learning-rate schedules over optimizer steps: (peak lr, linear warm-up steps, total steps) ->
# optax schedule. Warm-up rises linearly from lr / warmup at the first step to lr (verl's
# lr_warmup_steps; DAPO/FlowRL: 10 steps), then: constant (verl default), cosine or linear to 0.
LR_SCHEDULES: harness.Registry[Callable] = harness.Registry("learning-rate schedule")
LR_SCHEDULES.add("constant", _constant_lr)
LR_SCHEDULES.add("cosine", _cosine_lr)
LR_SCHEDULES.add("linear", _linear_lr)


def get_algorithm(name: str) -> AlgoSpec:
    """The registered row; an unknown name raises ConfigError listing the registered ones."""
    return ALGORITHMS.get(name, "rl.algo")


# ---------------------------------------------------------------------------------------------
# Reward sources (labelled verifier vs TTRL majority vote) and prompt splits
# ---------------------------------------------------------------------------------------------


def verifier_reward(answers: Array, scores: Array, truth: Array, num_train: int):
    """Ground-truth reward: the verifier's score. answers, scores [P, G] -> (f32[P, G_t], diag)."""
    del answers, truth
    ones = jnp.ones(scores.shape[:1], jnp.float32)
    return scores[:, :num_train], {"label_accuracy": ones, "majority_ratio": ones}


def majority_vote_reward(answers: Array, scores: Array, truth: Array, num_train: int):
    """TTRL (arXiv 2504.16084, Listing 1): r_i = 1[answer_i == majority of all G answers].

    The vote uses all G samples; the first ``num_train`` are returned for training. The hidden
    ground truth is used only for the diagnostics (per group f32[P]): label accuracy (majority ==
    truth), majority ratio and reward accuracy (pseudo reward == verifier score).
    """
    valid = answers >= 0
    label, _, agreement = rewards.majority_vote(answers, valid)
    r = ((answers == label[:, None]) & valid & (label[:, None] >= 0)).astype(jnp.float32)
    diag = {
        "label_accuracy": (label == truth).astype(jnp.float32),
        "majority_ratio": agreement,
        "reward_accuracy": jnp.mean((r == scores)[:, :num_train].astype(jnp.float32), -1),
    }
    return r[:, :num_train], diag


REWARDS: harness.Registry[Callable] = harness.Registry("reward source")
REWARDS.add("verifier", verifier_reward)
REWARDS.add("majority_vote", majority_vote_reward)
SPLITS = ("train", "test")


# ---------------------------------------------------------------------------------------------
# State and batches
# ---------------------------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
    """Whole RL training state (a pytree of arrays).

    Attributes:
      params: trainable :class:`PolicyParams`.
      ref_lm: frozen reference LM variables (the SFT start).
      opt_state: optax state of ``params``.
      key: PRNG key.
      step: i32[] RL steps done.
    """

    params: PolicyParams
    ref_lm: Any
    opt_state: Any
    key: Array
    step: Array


class Groups(NamedTuple):
    """One generation batch, group-major (leaves [P, ...]).

    Attributes:
      prompt_index: i32[P] rows of the prompt split.
      responses: i32[P, G_t, R].
      rewards: f32[P, G_t] training rewards (verifier or pseudo-label, plus ``shaping``).
      scores: f32[P, G_t] verifier scores (ground truth; TTRL uses them only for metrics).
      label_accuracy, majority_ratio, reward_accuracy: f32[P] reward diagnostics.
      shaping: f32[P, G_t] DAPO overlong penalty included in ``rewards`` (<= 0; 0 when off).
    """

    prompt_index: Array
    responses: Array
    rewards: Array
    scores: Array
    label_accuracy: Array
    majority_ratio: Array
    reward_accuracy: Array
    shaping: Array


class Batch(NamedTuple):
    """Flattened training batch (B = P G_t rows, group-major) for the minibatch updates.

    Attributes:
      tokens: i32[B, Lp + R]; mask: f32[B, R] (zero for invalid groups); advantages, returns,
      old_logp, ref_logp, old_values: f32[B, R] (``old_*``: the rollout policy's, at the
      rollout temperature); rl_weight: f32[B] HPT alpha of the row's prompt; actor_weight: f32[B]
      0 during the critic warm-up, else 1; demo_tokens: i32[P, Lp + R]; demo_mask: f32[P, R];
      sft_weight: f32[P] HPT 1 - alpha.
    """

    tokens: Array
    mask: Array
    advantages: Array
    returns: Array
    old_logp: Array
    ref_logp: Array
    old_values: Array
    rl_weight: Array
    actor_weight: Array
    demo_tokens: Array
    demo_mask: Array
    sft_weight: Array


# ---------------------------------------------------------------------------------------------
# Config validation
# ---------------------------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises :class:`harness.ConfigError` (a ValueError) naming a bad field."""
    harness.check_choice(config, "task", sorted(tasks.TASKS))
    harness.check_choice(config, "rl.algo", sorted(ALGORITHMS))
    ssm_lm.validate({**dict(config.model), "vocab_size": tasks.VOCAB_SIZE}, "model")
    harness.check_choice(config, "rl.reward", sorted(REWARDS))
    harness.check_choice(config, "rl.prompt_split", SPLITS)
    harness.check_choice(config, "eval.split", SPLITS)
    harness.check_int(config, "seed", lo=0)
    harness.check_int(config, "sft.steps", lo=0)
    harness.check_int(config, "sft.batch_size", lo=1)
    harness.check_range(config, "sft.lr", lo=0.0, lo_inclusive=False)
    harness.check_range(config, "sft.demo_fraction", lo=0.0, hi=1.0, lo_inclusive=False)
    harness.check_range(config, "sft.until_maj", lo=0.0, hi=1.0)
    if config.sft.until_maj > 0:
        every = harness.check_int(config, "sft.check_every", lo=1)
        if config.sft.steps % every:
            raise harness.ConfigError(
                f"sft.steps={config.sft.steps} must be a multiple of sft.check_every={every}"
            )
        harness.check_int(config, "sft.check_prompts", lo=1)
        harness.check_int(config, "sft.check_samples", lo=1)
    harness.check_int(config, "rl.num_updates", lo=1)
    harness.check_int(config, "rl.prompts_per_step", lo=1)
    G = harness.check_int(config, "rl.group_size", lo=2)
    harness.check_int(config, "rl.train_group_size", lo=0, hi=G)
    harness.check_range(config, "rl.temperature", lo=0.0, lo_inclusive=False)
    harness.check_range(config, "rl.top_p", lo=0.0, hi=1.0, lo_inclusive=False)
    harness.check_choice(config, "rl.lr_schedule", sorted(LR_SCHEDULES))
    harness.check_int(config, "rl.lr_warmup_steps", lo=0)
    harness.check_range(config, "rl.kl_in_reward", lo=0.0)
    harness.check_choice(config, "rl.kl_in_reward_type", ["k1", "k2", "k3"])
    harness.check_int(config, "rl.overlong_buffer", lo=0)  # <= R, checked in make_setup
    harness.check_range(config, "rl.overlong_penalty", lo=0.0)
    harness.check_int(config, "rl.epochs", lo=1)
    M = harness.check_int(config, "rl.num_minibatches", lo=1)
    harness.check_range(config, "rl.lr", lo=0.0, lo_inclusive=False)
    harness.check_range(config, "rl.z_lr_scale", lo=0.0, lo_inclusive=False)
    harness.check_range(config, "rl.max_grad_norm", lo=0.0, lo_inclusive=False)
    harness.check_range(config, "rl.weight_decay", lo=0.0)
    harness.check_int(config, "rl.gen_factor", lo=1)
    harness.check_int(config, "rl.max_gen_batches", lo=1)
    if config.rl.prompts_per_step % M:
        raise harness.ConfigError(
            f"config.rl.prompts_per_step={config.rl.prompts_per_step} must be divisible by "
            f"config.rl.num_minibatches={M}"
        )
    harness.check_choice(config, "parallel.fsdp", (False, True))
    mesh = parallel.mesh_from_config(config)
    P = config.rl.prompts_per_step
    parallel.check_divisible("rl.prompts_per_step x rl.group_size", P * G, mesh)
    Gt = config.rl.train_group_size or G
    parallel.check_divisible(
        "rl.prompts_per_step / rl.num_minibatches x rl.train_group_size", P // M * Gt, mesh
    )
    harness.check_int(config, "eval.num_prompts", lo=1)
    harness.check_int(config, "eval.num_samples", lo=1)
    harness.check_range(config, "eval.temperature", lo=0.0)  # 0 = greedy
    harness.check_range(config, "eval.top_p", lo=0.0, hi=1.0, lo_inclusive=False)
    harness.check_int(config, "eval.log_prompts", lo=0)
    for i, t in enumerate(config.eval.extra_temperatures):
        if not t >= 0.0:
            raise harness.ConfigError(f"config.eval.extra_temperatures[{i}]={t} must be >= 0")
    spec = _spec(config)
    HPT_STRATEGIES.get(spec.hpt_strategy, "rl.algo_overrides.hpt_strategy")
    if config.rl.flowrl_weight:
        losses.flowrl_weight_overrides(config.rl.flowrl_weight, "rl.flowrl_weight")
        if spec.loss != losses.LossName.FLOWRL.value:
            raise harness.ConfigError(
                f"config.rl.flowrl_weight={config.rl.flowrl_weight!r} applies to FlowRL only, "
                f"but config.rl.algo={config.rl.algo!r} uses loss {spec.loss!r}; set it to ''"
            )
    if spec.sft_coef > 0 and config.rl.reward != "verifier":
        raise harness.ConfigError(
            f"config.rl.algo={config.rl.algo!r} mixes in SFT on demonstrations, which TTRL "
            "(config.rl.reward='majority_vote') does not have; choose a pure RL algorithm"
        )
    losses.default_loss_config(spec.loss, **_loss_overrides(config, spec))  # field checks


def _spec(config) -> AlgoSpec:
    spec = get_algorithm(config.rl.algo)
    over = dict(config.rl.get("algo_overrides", None) or {})
    if config.rl.get("entropy_coef", -1.0) >= 0:
        over["entropy_coef"] = float(config.rl.entropy_coef)
    return dataclasses.replace(spec, **over) if over else spec


def _loss_overrides(config, spec: AlgoSpec) -> dict[str, Any]:
    weight = config.rl.get("flowrl_weight", "")
    variant = losses.flowrl_weight_overrides(weight, "rl.flowrl_weight") if weight else {}
    return {**dict(spec.loss_overrides), **variant, **dict(config.rl.get("loss", {}))}


# ---------------------------------------------------------------------------------------------
# Setup: everything the RL functions below read, built once from a validated config
# ---------------------------------------------------------------------------------------------


class Setup(NamedTuple):
    """Static pieces of one run (close over it; never pass it through a JAX transformation).

    ``Lp`` prompt length, ``R`` response length, ``P`` prompts per step, ``G`` samples per prompt,
    ``Gt`` of them trained on, ``M`` minibatches, ``P_gen`` prompts per generation batch (DAPO
    generates ``gen_factor * P``), ``n_sft`` training problems with demonstrations in the SFT set.
    """

    config: Any
    task: tasks.Task
    policy: Policy
    spec: AlgoSpec
    loss_fn: Callable
    loss_cfg: Any
    adv_cfg: AdvantageConfig
    reward_fn: Callable
    prompt_split: Any
    eval_split: Any
    sft_opt: optax.GradientTransformation
    optimizer: optax.GradientTransformation
    Lp: int
    R: int
    P: int
    G: int
    Gt: int
    M: int
    temperature: float
    top_p: float
    P_gen: int
    n_sft: int
    mesh: Any = None  # jax.sharding.Mesh with a "data" axis; None: no constraints (one device)
    fsdp: bool = False


def rows(s: Setup, tree: Any) -> Any:
    """Inside jit: every leaf's leading (row) axis split over ``"data"`` where it divides."""
    return tree if s.mesh is None else parallel.shard_rows(tree, s.mesh)


def place_params(s: Setup, tree: Any) -> Any:
    """Inside jit: parameters (or their optimizer state) replicated, or FSDP-sharded."""
    if s.mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, parallel.param_shardings(tree, s.mesh, s.fsdp))


def make_rl_optimizer(config) -> optax.GradientTransformation:
    """Global-norm clip, then AdamW with the ``rl.lr_schedule`` schedule (``rl.lr_warmup_steps``
    linear warm-up) over all ``num_updates * epochs * num_minibatches`` optimizer steps; the log Z
    head learns at ``rl.z_lr_scale`` times the same schedule."""
    rl = config.rl
    total = rl.num_updates * rl.epochs * rl.num_minibatches
    schedule = LR_SCHEDULES.get(rl.get("lr_schedule", "constant"), "rl.lr_schedule")

    def make_opt(scale):
        lr = schedule(rl.lr * scale, rl.get("lr_warmup_steps", 0), total)
        return optax.adamw(lr, weight_decay=rl.weight_decay)

    return optax.chain(
        optax.clip_by_global_norm(rl.max_grad_norm),
        optax.multi_transform(
            {"main": make_opt(1.0), "z": make_opt(rl.z_lr_scale)},
            lambda p: PolicyParams(
                lm=jax.tree.map(lambda _: "main", p.lm),
                log_z=jax.tree.map(lambda _: "z", p.log_z),
                value=jax.tree.map(lambda _: "main", p.value),
            ),
        ),
    )


def make_setup(config, backend: Any = None) -> Setup:
    """Validates ``config`` and builds the task, policy, loss, optimizers and static sizes."""
    validate_config(config)
    task = tasks.make_task(config.task, **dict(config.get("task_kwargs", {})))
    policy = make_policy(
        {**dict(config.model), "vocab_size": tasks.VOCAB_SIZE},
        backend=backend,
        z_layers=config.policy.z_layers,
        z_stop_grad=config.policy.z_stop_grad,
        value_stop_grad=config.policy.value_stop_grad,
    )
    spec = _spec(config)
    if config.rl.overlong_buffer > task.response_len:
        raise harness.ConfigError(
            f"config.rl.overlong_buffer={config.rl.overlong_buffer} must be <= the task's "
            f"response length {task.response_len} (DAPO's L_buf <= L_max)"
        )
    need = task.prompt_len + task.response_len
    if config.model.max_len < need:
        raise harness.ConfigError(
            f"config.model.max_len={config.model.max_len} must be >= {need}, the task's prompt "
            f"plus response length (the decode cache holds both)"
        )
    splits = {"train": task.train, "test": task.test}
    P, G = config.rl.prompts_per_step, config.rl.group_size
    return Setup(
        config=config,
        task=task,
        policy=policy,
        spec=spec,
        loss_fn=losses.get_loss(spec.loss),
        loss_cfg=losses.default_loss_config(spec.loss, **_loss_overrides(config, spec)),
        adv_cfg=AdvantageConfig(),
        reward_fn=REWARDS.get(config.rl.reward),
        prompt_split=splits[config.rl.prompt_split],
        eval_split=splits[config.eval.split],
        sft_opt=optax.adam(config.sft.lr),
        optimizer=make_rl_optimizer(config),
        Lp=task.prompt_len,
        R=task.response_len,
        P=P,
        G=G,
        Gt=config.rl.train_group_size or G,
        M=config.rl.num_minibatches,
        temperature=float(config.rl.temperature),
        top_p=float(config.rl.top_p),
        P_gen=P * (config.rl.gen_factor if spec.dynamic_sampling else 1),
        n_sft=max(1, int(round(config.sft.demo_fraction * len(task.train)))),
        mesh=parallel.mesh_from_config(config),
        fsdp=bool(config.parallel.fsdp),
    )


# ---------------------------------------------------------------------------------------------
# SFT warm start and initial state
# ---------------------------------------------------------------------------------------------


class OptCarry(NamedTuple):
    """Parameters and their optax state, carried through the update scans."""

    params: Any
    opt_state: Any


def demo_batch(split, index: Array, key: Array) -> tuple[Array, Array]:
    """One demonstration per prompt: (tokens i32[B, Lp + R], response mask f32[B, R])."""
    demos = tasks.sample_demos(split, index, key)  # i32[B, R]
    prompts = jnp.asarray(split.prompts)[index]
    return jnp.concatenate([prompts, demos], 1), tasks.response_mask(demos)


def sft_nll(s: Setup, init_params: PolicyParams, lm, tokens: Array, mask: Array) -> Array:
    """Token-mean NLL of the demonstrations under the LM ``lm``."""
    fw = s.policy.forward(init_params._replace(lm=lm), tokens, s.Lp, 1.0)
    return agg_loss(-fw.logp, mask, "token-mean")


def sft_step(s: Setup, init_params: PolicyParams, carry: OptCarry, key: Array):
    """One Adam step on ``sft.batch_size`` demonstrations of the first ``n_sft`` problems."""
    key_idx, key_demo = jax.random.split(key)
    index = jax.random.randint(key_idx, (s.config.sft.batch_size,), 0, s.n_sft)
    tokens, mask = rows(s, demo_batch(s.task.train, index, key_demo))
    loss, grads = jax.value_and_grad(functools.partial(sft_nll, s, init_params))(
        carry.params, tokens, mask
    )
    updates, opt_state = s.sft_opt.update(grads, carry.opt_state, carry.params)
    new = OptCarry(optax.apply_updates(carry.params, updates), opt_state)
    return place_params(s, new), loss


class SftLog(NamedTuple):
    """What the SFT warm start did: losses f32[sft.steps] (NaN after an early stop), steps
    taken i32[], and the last stopping check's maj@m and pass@1 f32[] (NaN without checks)."""

    losses: Array
    steps: Array
    check_maj: Array
    check_pass1: Array


def sft_check(s: Setup, lm, key: Array) -> tuple[Array, Array]:
    """(maj@m, pass@1) f32[] of ``lm`` on the last ``sft.check_prompts`` training problems
    (outside the demonstrations when ``sft.demo_fraction`` < 1), m = ``sft.check_samples`` at
    the RL temperature: the statistic of the ``sft.until_maj`` stopping rule."""
    c, split = s.config.sft, s.task.train
    n = len(split)
    index = jnp.arange(max(0, n - c.check_prompts), n)
    got = sample_and_score(s, lm, key, split, index, c.check_samples, s.temperature, s.top_p)
    maj = majority_correct(got.answers, got.correct).astype(jnp.float32)
    return jnp.mean(maj), jnp.mean(got.correct.astype(jnp.float32))


def run_sft(s: Setup, key: Array) -> tuple[Any, SftLog]:
    """SFT warm start: (lm variables, :class:`SftLog`).

    ``sft.until_maj`` = 0: ``sft.steps`` Adam steps. Otherwise issue 15's "SFT until maj@8 is
    well above pass@1": chunks of ``sft.check_every`` steps until :func:`sft_check`'s maj@m
    reaches ``sft.until_maj``, at most ``sft.steps`` steps (a ``lax.while_loop``, so the start
    stays one jitted function). SFT on arithmetic jumps at a seed-dependent step (the
    ``arith_strong`` docstring), so a fixed budget gives starts from pre-jump to saturated; the
    rule stops every seed just past its own jump."""
    c = s.config.sft
    key_init, key_loop = jax.random.split(key)
    init_params = place_params(s, s.policy.init(key_init, s.Lp + s.R))
    carry = place_params(s, OptCarry(init_params.lm, s.sft_opt.init(init_params.lm)))
    step = functools.partial(sft_step, s, init_params)
    nan = jnp.full((), jnp.nan, jnp.float32)
    if c.until_maj <= 0:
        carry, losses = jax.lax.scan(step, carry, jax.random.split(key_loop, c.steps))
        return carry.params, SftLog(losses, jnp.int32(c.steps), nan, nan)

    every = c.check_every

    def chunk(state):
        i, carry, losses, _, _ = state
        key_steps, key_check = jax.random.split(jax.random.fold_in(key_loop, i))
        carry, chunk_losses = jax.lax.scan(step, carry, jax.random.split(key_steps, every))
        losses = jax.lax.dynamic_update_slice(losses, chunk_losses, (i * every,))
        maj, pass1 = sft_check(s, carry.params, key_check)
        return i + 1, carry, losses, maj, pass1

    def more(state):
        i, _, _, maj, _ = state
        return (i * every < c.steps) & ~(maj >= c.until_maj)

    losses = jnp.full((c.steps,), jnp.nan, jnp.float32)
    i, carry, losses, maj, pass1 = jax.lax.while_loop(
        more, chunk, (jnp.int32(0), carry, losses, nan, nan)
    )
    return carry.params, SftLog(losses, i * every, maj, pass1)


def init_from_lm(s: Setup, key: Array, lm) -> TrainState:
    """RL state from LM weights: fresh log Z and value heads, ``lm`` also frozen as pi_ref."""
    key_heads, key_state = jax.random.split(key)
    fresh = s.policy.init(key_heads, s.Lp + s.R)
    params = PolicyParams(lm=lm, log_z=fresh.log_z, value=fresh.value)
    state = TrainState(
        params=params,
        ref_lm=jax.tree.map(jnp.copy, lm),
        opt_state=s.optimizer.init(params),
        key=key_state,
        step=jnp.zeros((), jnp.int32),
    )
    return place_state(s, state)


def state_shardings(s: Setup, state: TrainState) -> TrainState:
    """Placement of every leaf (arrays or shapes): the policy (LM, log Z and value heads), the
    reference LM and the optimizer state like the policy (replicated, or FSDP with
    ``parallel.fsdp``); key and step replicated."""
    like_policy = functools.partial(parallel.param_shardings, mesh=s.mesh, fsdp=s.fsdp)
    return TrainState(
        params=like_policy(state.params),
        ref_lm=like_policy(state.ref_lm),
        opt_state=like_policy(state.opt_state),
        key=parallel.replicated(s.mesh),
        step=parallel.replicated(s.mesh),
    )


def place_state(s: Setup, state: TrainState) -> TrainState:
    """Inside jit: ``state`` constrained to :func:`state_shardings`."""
    if s.mesh is None:
        return state
    return jax.lax.with_sharding_constraint(state, state_shardings(s, state))


def put_state(s: Setup, state: TrainState) -> TrainState:
    """On the host: ``state`` moved to :func:`state_shardings` (a no-op when it is there
    already; a restored checkpoint lands on one device)."""
    if s.mesh is None:
        return state
    return jax.device_put(state, state_shardings(s, state))


def init_state(s: Setup, key: Array) -> TrainState:
    key_sft, key_rl = jax.random.split(key)
    lm, _ = run_sft(s, key_sft)
    return init_from_lm(s, key_rl, lm)


# ---------------------------------------------------------------------------------------------
# Rollouts and scoring
# ---------------------------------------------------------------------------------------------


class Collected(NamedTuple):
    """One step's groups: Groups (leaves [P, ...]), valid bool[P], num_batches i32[]."""

    groups: Groups
    valid: Array
    num_batches: Array


def generate(
    s: Setup, lm, key, index, num_samples=None, temperature=None, split=None, top_p=None
) -> Array:
    """Responses i32[len(index), num_samples, R] (defaults: G samples at the RL temperature and
    top-p from the prompt split; temperature 0 is greedy)."""
    num_samples = s.G if num_samples is None else num_samples
    temperature = s.temperature if temperature is None else temperature
    top_p = s.top_p if top_p is None else top_p
    split = s.prompt_split if split is None else split
    prompts = rows(s, jnp.repeat(jnp.asarray(split.prompts)[index], num_samples, axis=0))
    resp = rows(s, s.policy.generate(lm, prompts, key, s.R, temperature, top_p))
    return resp.reshape(index.shape[0], num_samples, s.R)


def score(s: Setup, index: Array, responses: Array, split=None) -> Groups:
    """Verifier scores and training rewards of responses i32[P, G, R] (first Gt kept)."""
    split = s.prompt_split if split is None else split
    Pn, Gn = responses.shape[:2]
    flat = rows(s, responses.reshape(Pn * Gn, s.R))
    probs = s.task.problems(split, jnp.repeat(index, Gn))
    sc = s.task.score(flat, probs).reshape(Pn, Gn)
    a = s.task.extract(flat, probs).reshape(Pn, Gn)
    truth = jnp.asarray(split.answers)[index]
    r, diag = s.reward_fn(a, sc, truth, s.Gt)
    diag = {"reward_accuracy": jnp.ones(Pn, jnp.float32), **diag}
    shaping = overlong_shaping(s, responses[:, : s.Gt])
    return Groups(
        prompt_index=index,
        responses=responses[:, : s.Gt],
        rewards=r + shaping,
        scores=sc[:, : s.Gt],
        label_accuracy=diag["label_accuracy"],
        majority_ratio=diag["majority_ratio"],
        reward_accuracy=diag["reward_accuracy"],
        shaping=shaping,
    )


def overlong_shaping(s: Setup, responses: Array) -> Array:
    """DAPO's soft overlong punishment f32[P, G] of responses i32[P, G, R] with L_max = R and
    L_buf = ``rl.overlong_buffer`` (0 = off), factor ``rl.overlong_penalty`` (FLOWRL.md §2.3)."""
    buffer = s.config.rl.overlong_buffer
    if buffer == 0:
        return jnp.zeros(responses.shape[:2], jnp.float32)
    lengths = jnp.sum(tasks.response_mask(responses.reshape(-1, s.R)), axis=-1)
    penalty = rewards.overlong_penalty(lengths, s.R, buffer, s.config.rl.overlong_penalty)
    return penalty.reshape(responses.shape[:2])


def gen_and_score(s: Setup, params: PolicyParams, key: Array, num_prompts: int) -> Groups:
    key_idx, key_gen = jax.random.split(key)
    index = jax.random.randint(key_idx, (num_prompts,), 0, len(s.prompt_split))
    return score(s, index, generate(s, params.lm, key_gen, index))


def collect(s: Setup, params: PolicyParams, key: Array) -> Collected:
    """P groups: one generation batch, or DAPO dynamic sampling (all-equal groups dropped,
    refilled from batches of ``gen_factor * P`` prompts, at most ``max_gen_batches``; DAPO: 3 and
    10). Groups are filtered on the verifier/pseudo reward without the overlong shaping (DAPO
    filters on ``acc``). Unfilled slots come back with ``valid == False``; the host loop raises
    :class:`UnfilledBatchError` on them (:func:`check_filled`)."""
    if not s.spec.dynamic_sampling:
        groups = gen_and_score(s, params, key, s.P)
        return Collected(groups, jnp.ones((s.P,), bool), jnp.ones((), jnp.int32))

    def gen(k):
        g = gen_and_score(s, params, k, s.P_gen)
        return (g, g.rewards), g.rewards - g.shaping

    out = sampling.dynamic_sample(gen, key, s.P, s.config.rl.max_gen_batches)
    return Collected(out.batch[0], out.valid, out.num_batches)


# ---------------------------------------------------------------------------------------------
# Batch preparation: old/ref log-probs, advantages, HPT switch, demonstrations
# ---------------------------------------------------------------------------------------------


def train_stats(
    groups: Groups, valid: Array, old, ref, mask: Array, seq_valid: Array, sft_weight: Array
) -> dict[str, Array]:
    """f32 train metrics of one batch (per-group means over the valid groups). ``old``, ``ref``:
    policy forward passes (logp, entropy, log_z) under pi_old and pi_ref."""
    n_valid = jnp.maximum(jnp.sum(valid), 1)
    vmean = lambda x: jnp.sum(x * valid) / n_valid  # noqa: E731 - per-group mean
    return {
        "train/sft_fraction": vmean(sft_weight),
        "train/reward": vmean(jnp.mean(groups.rewards, -1)),
        "train/accuracy": vmean(jnp.mean(groups.scores, -1)),
        "train/entropy": masked_mean(old.entropy, mask),
        "train/kl_ref": masked_mean(kl_estimate(old.logp, ref.logp, "k3"), mask),
        "train/response_len": jnp.sum(mask) / jnp.maximum(jnp.sum(seq_valid), 1.0),
        "train/valid_groups": jnp.mean(valid.astype(jnp.float32)),
        "train/label_accuracy": vmean(groups.label_accuracy),
        "train/majority_ratio": vmean(groups.majority_ratio),
        "train/reward_accuracy": vmean(groups.reward_accuracy),
        "train/log_z": jnp.mean(old.log_z),
        "train/overlong_penalty": vmean(jnp.mean(groups.shaping, -1)),
        "train/seq_logp": masked_mean(seq_sum(old.logp, mask), seq_valid),
    }


def prepare(s: Setup, params: PolicyParams, ref_lm, groups: Groups, valid: Array, key: Array):
    """(Batch, train metrics): old/ref log-probs, advantages, HPT switch and demonstrations.

    Old and reference log-probs are those of the temperature-T distribution the rollouts were
    sampled from (FLOWRL.md §1.1); ``old_logp`` comes from ``params`` (the rollout policy), never
    from the reference. With ``rl.kl_in_reward = c > 0`` the token rewards get -c KL_t(pi_old ||
    pi_ref) (verl ``apply_kl_penalty``), so outcome advantages see r - c sum_t KL_t."""
    B = s.P * s.Gt
    prompts = jnp.asarray(s.prompt_split.prompts)[groups.prompt_index]  # [P, Lp]
    resp = groups.responses.reshape(B, s.R)
    tokens = rows(s, jnp.concatenate([jnp.repeat(prompts, s.Gt, axis=0), resp], 1))
    seq_valid = jnp.repeat(valid, s.Gt).astype(jnp.float32)
    mask = tasks.response_mask(resp) * seq_valid[:, None]
    old = s.policy.forward(params, tokens, s.Lp, s.temperature)
    ref = s.policy.forward(params._replace(lm=ref_lm), tokens, s.Lp, s.temperature)
    token_rewards = outcome_to_token_rewards(groups.rewards.reshape(B), mask)
    kl_tok = kl_estimate(old.logp, ref.logp, s.config.rl.kl_in_reward_type) * mask
    token_rewards = token_rewards - s.config.rl.kl_in_reward * kl_tok
    adv = compute_advantages(
        s.spec.advantage,
        AdvantageInputs(
            token_rewards=token_rewards,
            mask=mask,
            group_ids=jnp.repeat(jnp.arange(s.P), s.Gt),
            values=old.values,
            seq_valid=seq_valid,
        ),
        s.adv_cfg,
    )
    num_correct = jnp.sum(groups.scores > 0, axis=-1)  # [P]
    alpha, beta = HPT_STRATEGIES.get(s.spec.hpt_strategy)(num_correct, s.spec.hpt_gate)
    alpha = alpha * valid
    beta = beta * valid
    demo_tokens, demo_mask = demo_batch(s.prompt_split, groups.prompt_index, key)
    batch = Batch(
        tokens=tokens,
        mask=mask,
        advantages=adv.advantages,
        returns=adv.returns,
        old_logp=old.logp,
        ref_logp=ref.logp,
        old_values=old.values,
        rl_weight=jnp.repeat(alpha, s.Gt),
        actor_weight=jnp.ones((B,), jnp.float32),
        demo_tokens=demo_tokens,
        demo_mask=demo_mask,
        sft_weight=beta,
    )
    stats = train_stats(groups, valid, old, ref, mask, seq_valid, beta)
    stats["train/kl_reward"] = jnp.sum(kl_tok) / jnp.maximum(jnp.sum(seq_valid), 1.0)
    return batch, stats


# ---------------------------------------------------------------------------------------------
# Objective and updates
# ---------------------------------------------------------------------------------------------


def objective(s: Setup, params: PolicyParams, mb: Batch) -> tuple[Array, dict[str, Array]]:
    """L_policy(inputs masked by alpha) + value_coef L_value - entropy_coef H
    + sft_coef L_SFT(demonstrations weighted by 1 - alpha); see the module docstring."""
    spec = s.spec
    fw = s.policy.forward(params, mb.tokens, s.Lp, s.temperature)
    mask = mb.mask * (mb.rl_weight > 0)[:, None]
    inputs = LossInputs(
        logp=fw.logp,
        mask=mask,
        advantages=mb.advantages * mb.rl_weight[:, None],
        old_logp=mb.old_logp,
        ref_logp=mb.ref_logp,
        log_z=fw.log_z,
    )
    loss_pg, m = s.loss_fn(inputs, s.loss_cfg)
    value_loss = losses.value_loss(fw.values, mb.old_values, mb.returns, mask, spec.value_clip)
    entropy = masked_mean(fw.entropy, mask)
    actor = loss_pg - spec.entropy_coef * entropy
    out = {f"loss/{k}": v for k, v in m.items()}
    out["loss/value"] = value_loss
    if spec.sft_coef > 0:  # HPT-style rows mix in SFT on demonstrations
        fd = s.policy.forward(params, mb.demo_tokens, s.Lp, s.temperature)
        sft_mask = mb.demo_mask * (mb.sft_weight > 0)[:, None]
        loss_sft = agg_loss(-mb.sft_weight[:, None] * fd.logp, sft_mask, "token-mean")
        actor = actor + spec.sft_coef * loss_sft
        out["loss/sft"] = loss_sft
    # Critic warm-up: every term but the value regression is off (actor_weight = 0).
    total = jnp.max(mb.actor_weight) * actor + spec.value_coef * value_loss
    out["loss/total"] = total
    return total, out


def split_minibatches(s: Setup, batch: Batch, key: Array) -> Batch:
    """Shuffles whole prompt groups and splits them into M minibatches (leaves [M, ...]);
    per-sequence fields have Gt rows per group, per-prompt (demonstration) fields one."""
    perm = jax.random.permutation(key, s.P)

    def per_group(x, rows_per_group):
        x = x.reshape(s.P, rows_per_group, *x.shape[1:])[perm]
        return x.reshape(s.M, (s.P // s.M) * rows_per_group, *x.shape[2:])

    seq = functools.partial(per_group, rows_per_group=s.Gt)
    one = functools.partial(per_group, rows_per_group=1)
    return Batch(
        tokens=seq(batch.tokens),
        mask=seq(batch.mask),
        advantages=seq(batch.advantages),
        returns=seq(batch.returns),
        old_logp=seq(batch.old_logp),
        ref_logp=seq(batch.ref_logp),
        old_values=seq(batch.old_values),
        rl_weight=seq(batch.rl_weight),
        actor_weight=seq(batch.actor_weight),
        demo_tokens=one(batch.demo_tokens),
        demo_mask=one(batch.demo_mask),
        sft_weight=one(batch.sft_weight),
    )


def minibatch_update(s: Setup, carry: OptCarry, mb: Batch) -> tuple[OptCarry, dict[str, Array]]:
    """One AdamW step of :func:`objective` on a minibatch."""
    grad_fn = jax.value_and_grad(functools.partial(objective, s), has_aux=True)
    (_, m), grads = grad_fn(carry.params, rows(s, mb))
    m["loss/grad_norm"] = optax.global_norm(grads)
    updates, opt_state = s.optimizer.update(grads, carry.opt_state, carry.params)
    new = OptCarry(optax.apply_updates(carry.params, updates), opt_state)
    return place_params(s, new), m


def epoch(s: Setup, batch: Batch, carry: OptCarry, key: Array):
    """One pass over the batch in M shuffled minibatches."""
    return jax.lax.scan(
        functools.partial(minibatch_update, s), carry, split_minibatches(s, batch, key)
    )


def learn(s: Setup, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Array]]:
    """``rl.epochs`` epochs of minibatch updates; metrics averaged over all of them. During the
    first ``critic_warmup`` steps only the value head learns."""
    actor_on = (state.step >= s.spec.critic_warmup).astype(jnp.float32)
    batch = batch._replace(actor_weight=batch.actor_weight * actor_on)
    key, key_epochs = jax.random.split(state.key)
    carry, m = jax.lax.scan(
        functools.partial(epoch, s, batch),
        OptCarry(state.params, state.opt_state),
        jax.random.split(key_epochs, s.config.rl.epochs),
    )
    state = state.replace(params=carry.params, opt_state=carry.opt_state, key=key)
    return state, jax.tree.map(jnp.mean, m)


def rl_step(s: Setup, state: TrainState) -> tuple[TrainState, dict[str, Array]]:
    """Collect, prepare, learn: one RL step."""
    state = place_state(s, state)
    key, key_collect, key_demo = jax.random.split(state.key, 3)
    got = collect(s, state.params, key_collect)
    batch, stats = prepare(s, state.params, state.ref_lm, got.groups, got.valid, key_demo)
    state, m = learn(s, state.replace(key=key), batch)
    stats.update(m)
    stats["train/gen_batches"] = got.num_batches.astype(jnp.float32)
    return place_state(s, state.replace(step=state.step + 1)), stats


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


class EvalSamples(NamedTuple):
    """Sampled eval responses i32[n, m, R], correct bool[n, m], answer ids i32[n, m]."""

    responses: Array
    correct: Array
    answers: Array


def sample_and_score(
    s: Setup, lm, key: Array, split, index: Array, num_samples: int, temperature, top_p
) -> EvalSamples:
    """``num_samples`` responses of ``lm`` to each prompt ``index`` i32[n] of ``split`` at
    ``temperature`` (0: greedy) and ``top_p``, scored by the verifier."""
    n = index.shape[0]
    resp = generate(s, lm, key, index, num_samples, temperature, split, top_p)
    flat = resp.reshape(n * num_samples, s.R)
    probs = s.task.problems(split, jnp.repeat(index, num_samples))
    correct = s.task.score(flat, probs).reshape(n, num_samples) > 0
    answers = s.task.extract(flat, probs).reshape(n, num_samples)
    return EvalSamples(resp, correct, answers)


def majority_correct(answers: Array, correct: Array) -> Array:
    """bool[P]: the majority answer of each prompt's samples (answers i32[P, m], ids < 0 do not
    vote) is a correct one (maj@m)."""
    label, _, _ = rewards.majority_vote(answers, answers >= 0)
    return jnp.any(correct & (answers == label[:, None]), axis=-1)


def eval_samples(s: Setup, params: PolicyParams, num_prompts: int, num_samples: int, temperature):
    """:func:`sample_and_score` on the first ``num_prompts`` eval prompts at ``eval.top_p``. The
    key is fixed, so every evaluation (and every algorithm) uses the same sampling noise."""
    key = jax.random.PRNGKey(s.config.eval.seed)
    index = jnp.arange(num_prompts)
    return sample_and_score(
        s, params.lm, key, s.eval_split, index, num_samples, temperature, s.config.eval.top_p
    )


def temperature_tag(t: float) -> str:
    """Metric suffix of an extra eval temperature: ``greedy`` or ``T0.6``."""
    return "greedy" if t == 0 else f"T{t:g}"


def evaluate(s: Setup, params: PolicyParams) -> dict[str, Array]:
    """pass@k (k up to n), maj@n, distinct correct answers and their share of all solutions,
    response length, on the first ``eval.num_prompts`` prompts of the eval split at
    ``eval.temperature``; plus pass@1 (and maj@n when sampled) at each of
    ``eval.extra_temperatures`` (0 = greedy, one sample), as ``eval/pass@1_greedy``,
    ``eval/pass@1_T0.6``..."""
    config, split = s.config, s.eval_split
    n_eval = min(config.eval.num_prompts, len(split))
    n_samples = config.eval.num_samples
    eval_index = jnp.arange(n_eval)
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n_samples} | {n_samples})
    n_main = 1 if config.eval.temperature == 0 else n_samples
    resp, correct, answers = eval_samples(s, params, n_eval, n_main, config.eval.temperature)
    correct = jnp.tile(correct, (1, n_samples // n_main))  # greedy: n identical samples
    answers = jnp.tile(answers, (1, n_samples // n_main))
    flat = resp.reshape(-1, s.R)
    out = {f"eval/pass@{k}": jnp.mean(metrics.pass_at_k_from_correct(correct, k)) for k in ks}
    for t in config.eval.extra_temperatures:
        n_t = 1 if t == 0 else n_samples
        extra = eval_samples(s, params, n_eval, n_t, t)
        out[f"eval/pass@1_{temperature_tag(t)}"] = jnp.mean(extra.correct)
        if n_t > 1:
            maj_t = majority_correct(extra.answers, extra.correct)
            out[f"eval/maj@{n_t}_{temperature_tag(t)}"] = jnp.mean(maj_t.astype(jnp.float32))
    maj_ok = majority_correct(answers, correct)
    out[f"eval/maj@{n_samples}"] = jnp.mean(maj_ok.astype(jnp.float32))
    distinct = distinct_correct(answers, correct)
    num_solutions = jnp.asarray(split.num_solutions)[eval_index]
    out["eval/distinct_correct"] = jnp.mean(distinct)
    out["eval/solution_coverage"] = jnp.mean(distinct / num_solutions)
    out["eval/response_len"] = jnp.mean(jnp.sum(tasks.response_mask(flat), -1))
    return out


# ---------------------------------------------------------------------------------------------
# Builder: binds the functions above to one Setup
# ---------------------------------------------------------------------------------------------


class Trainer(NamedTuple):
    """The pieces ``make_train`` composes (exposed for tests and the benchmark), each a
    module-level function of this file bound to one :class:`Setup`."""

    config: Any
    task: tasks.Task
    policy: Policy
    spec: AlgoSpec
    sft: Callable  # key -> (lm variables, SftLog)
    init_from_lm: Callable  # (key, lm variables) -> TrainState
    init: Callable  # key -> TrainState (SFT then RL init)
    generate: Callable  # (lm params, key, prompt index i32[P]) -> responses i32[P, G, R]
    score: Callable  # (prompt index, responses) -> Groups
    collect: Callable  # (params, key) -> Collected
    prepare: Callable  # (state params, ref, Groups, valid, key) -> (Batch, metrics)
    learn: Callable  # (state, Batch) -> (state, metrics)
    rl_step: Callable  # state -> (state, metrics), jitted
    evaluate: Callable  # params -> metrics, jitted
    objective: Callable  # (params, Batch) -> (loss, metrics)
    eval_samples: Callable  # (params, n prompts, m samples, temperature) -> EvalSamples
    put_state: Callable  # state -> state on the mesh (host side, before rl_step)


def build(config, backend: Any = None) -> Trainer:
    """Binds the RL functions to the :class:`Setup` of a validated config.

    Args:
      config: the experiment config (see ``experiments/configs/flowrl.py``).
      backend: LM module with ``make_model``/``generate`` (default :mod:`ssm.lm`).
    """
    s = make_setup(config, backend)
    bind = lambda fn: functools.partial(fn, s)  # noqa: E731
    return Trainer(
        config=config,
        task=s.task,
        policy=s.policy,
        spec=s.spec,
        sft=jax.jit(bind(run_sft)),
        init_from_lm=jax.jit(bind(init_from_lm)),
        init=jax.jit(bind(init_state)),
        generate=bind(generate),
        score=bind(score),
        collect=bind(collect),
        prepare=bind(prepare),
        learn=bind(learn),
        rl_step=jax.jit(bind(rl_step)),
        evaluate=jax.jit(bind(evaluate)),
        objective=bind(objective),
        eval_samples=bind(eval_samples),
        put_state=bind(put_state),
    )


def distinct_correct(answers: Array, correct: Array) -> Array:
    """f32[P]: number of distinct answer ids among the correct samples of each prompt."""
    n = answers.shape[-1]
    same = answers[:, :, None] == answers[:, None, :]
    earlier = jnp.tril(jnp.ones((n, n), bool), k=-1)[None]  # j < i
    dup = jnp.any(same & earlier & correct[:, None, :], axis=-1)
    return jnp.sum(correct & ~dup, axis=-1).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def make_train(config, backend: Any = None) -> Callable[[Array], tuple[TrainState, dict]]:
    """``train(key) -> (final TrainState, metrics stacked over RL steps)``; pure and jit-able
    (SFT warm start then ``rl.num_updates`` RL steps in one ``lax.scan``)."""
    trainer = build(config, backend)

    def train(key):
        state = trainer.init(key)
        return jax.lax.scan(lambda s, _: trainer.rl_step(s), state, None, config.rl.num_updates)

    return train


def _without_seed(config) -> dict:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in d.items() if k not in ("seed", "progress")}


def _sft_cache_path(config) -> str | None:
    cache_dir = config.sft.get("cache_dir", "")
    if not cache_dir:
        return None
    ignored = {"cache_dir"}
    if config.sft.get("until_maj", 0.0) <= 0:  # the stopping rule's fields do not act
        ignored |= {"until_maj", "check_every", "check_prompts", "check_samples"}
    relevant = {
        "task": config.task,
        "task_kwargs": dict(config.get("task_kwargs", {})),
        "model": dict(config.model),
        "sft": {k: v for k, v in dict(config.sft).items() if k not in ignored},
        "seed": config.seed,
    }
    digest = hashlib.sha1(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()
    return os.path.join(cache_dir, f"sft_{config.task}_{config.model.layer}_{digest[:12]}.msgpack")


def sft_start(trainer: Trainer, key: Array, config=None) -> tuple[Any, dict]:
    """SFT weights for ``key`` (from ``sft.cache_dir`` when present), and SFT info.

    ``config`` (default ``trainer.config``) names the cache file; it must be the run's own
    config, whose seed produced ``key``."""
    path = _sft_cache_path(trainer.config if config is None else config)
    template = jax.eval_shape(lambda k: trainer.sft(k)[0], key)
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            like = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
            lm = flax.serialization.from_bytes(like, f.read())
        info = {}
        if os.path.exists(path + ".json"):  # the SFT log of the run that wrote the cache
            with open(path + ".json") as f:
                info = json.load(f)
        return jax.tree.map(jnp.asarray, lm), {**info, "sft_cached": 1.0}
    t0 = time.time()
    lm, log = trainer.sft(key)
    losses = np.asarray(log.losses)[: int(log.steps)]
    info = {
        "sft_loss_first": float(losses[0]) if losses.size else float("nan"),
        "sft_loss_last": float(losses[-1]) if losses.size else float("nan"),
        "sft_steps": float(log.steps),
        "sft_check_maj": float(log.check_maj),
        "sft_check_pass1": float(log.check_pass1),
        "sft_seconds": time.time() - t0,
        "sft_cached": 0.0,
    }
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, path + ".json")  # before the weights: a cache hit finds both
        with open(tmp, "wb") as f:
            f.write(flax.serialization.to_bytes(jax.device_get(lm)))
        os.replace(tmp, path)
    return lm, info


def start_eval(trainer: Trainer, params: PolicyParams, sft_info: dict, workdir: str) -> dict:
    """Evaluation of the SFT start, written once to ``workdir/start_eval.json`` (with the SFT
    info) and read back from there on a resumed run."""
    start_path = os.path.join(workdir, "start_eval.json")
    if not os.path.exists(start_path):
        start = {k: float(v) for k, v in trainer.evaluate(params).items()}
        with open(start_path, "w") as f:
            json.dump({**start, **sft_info}, f, indent=2, sort_keys=True)
    with open(start_path) as f:
        return json.load(f)


def tokens_per_step(trainer: Trainer) -> int:
    """Response tokens generated per RL step (DAPO generates ``gen_factor`` times more)."""
    rl = trainer.config.rl
    gen_factor = rl.gen_factor if trainer.spec.dynamic_sampling else 1
    return rl.prompts_per_step * rl.group_size * trainer.task.response_len * gen_factor


class UnfilledBatchError(RuntimeError):
    """DAPO dynamic sampling could not fill the train batch within its generation budget."""


def check_filled(trainer: Trainer, m: dict) -> None:
    """Raises :class:`UnfilledBatchError` when dynamic sampling left train slots empty (DAPO
    errors out there too) unless ``rl.allow_unfilled`` masks them instead."""
    rl = trainer.config.rl
    if trainer.spec.dynamic_sampling and not rl.allow_unfilled and m["train/valid_groups"] < 1:
        raise UnfilledBatchError(
            f"dynamic sampling filled {float(m['train/valid_groups']):.0%} of "
            f"rl.prompts_per_step={rl.prompts_per_step} groups after rl.max_gen_batches="
            f"{rl.max_gen_batches} batches of rl.gen_factor={rl.gen_factor} x prompts (too few "
            "groups with mixed rewards); raise those, start from a stronger SFT policy, or set "
            "rl.allow_unfilled=True to mask the empty slots"
        )


def timed_rl_step(trainer: Trainer, num_tokens: int, state: TrainState):
    """One jitted RL step on the host, with its wall time and throughput added to the metrics;
    raises :class:`UnfilledBatchError` on an unfilled dynamic-sampling batch."""
    t0 = time.perf_counter()
    state, m = trainer.rl_step(trainer.put_state(state))
    m = jax.device_get(m)
    dt = time.perf_counter() - t0
    check_filled(trainer, m)
    return state, {**m, "perf/step_s": dt, "perf/tokens_per_s": num_tokens / dt}


def log_rollouts(trainer: Trainer, params: PolicyParams, workdir: str, step: int) -> None:
    """Rollout inspection: appends ``eval.num_samples`` sampled completions of each of the first
    ``eval.log_prompts`` eval prompts (text, reward, answer id) to ``workdir/rollouts.jsonl``,
    and a histogram of the per-prompt mean reward to TensorBoard (``workdir/tb_rollouts``)."""
    ev = trainer.config.eval
    n = min(ev.log_prompts, len(trainer.task.test if ev.split == "test" else trainer.task.train))
    if n == 0:
        return
    m = 1 if ev.temperature == 0 else ev.num_samples
    got = jax.device_get(trainer.eval_samples(params, n, m, ev.temperature))
    split = trainer.task.test if ev.split == "test" else trainer.task.train
    with open(os.path.join(workdir, "rollouts.jsonl"), "a") as f:
        for i in range(n):
            prompt = tasks.decode(np.asarray(split.prompts[i]))
            for j in range(m):
                row = {
                    "step": step,
                    "prompt_index": i,
                    "prompt": prompt,
                    "completion": tasks.decode(got.responses[i, j]),
                    "reward": float(got.correct[i, j]),
                    "answer": int(got.answers[i, j]),
                }
                f.write(json.dumps(row) + "\n")
    writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tb_rollouts"))
    writer.add_histogram("eval/group_mean_reward", np.mean(got.correct, axis=-1), step)
    writer.close()


def evaluate_and_log(trainer: Trainer, workdir: str, state: TrainState) -> dict:
    """The ``evaluate`` hook of the run loop: :func:`evaluate` metrics plus rollout logs."""
    out = trainer.evaluate(state.params)
    log_rollouts(trainer, state.params, workdir, int(state.step))
    return out


def train_and_evaluate(
    config, workdir: str, backend: Any = None, trainer: Trainer | None = None
) -> dict:
    """Validates ``config``, warm-starts with SFT, then runs the RL loop through
    :func:`harness.run_experiment` (metrics.jsonl, checkpoints, resume, plots).
    The SFT start's evaluation is written to ``workdir/start_eval.json`` and the summary.

    ``trainer``: a :func:`build` result for a config that differs from ``config`` at most in
    ``seed`` (the sweep reuses compiled functions across seeds this way).
    """
    if trainer is None:
        trainer = build(config, backend)
    else:
        validate_config(config)
        if _without_seed(trainer.config) != _without_seed(config):
            raise ValueError("trainer was built for a config that differs beyond `seed`")
    harness.claim_workdir(config, workdir)  # before the SFT start writes start_eval.json
    key = jax.random.PRNGKey(config.seed)
    key_sft, key_rl = jax.random.split(key)
    lm, sft_info = sft_start(trainer, key_sft, config)
    os.makedirs(workdir, exist_ok=True)

    def init(_):
        return trainer.init_from_lm(key_rl, lm)

    start = start_eval(trainer, init(None).params, sft_info, workdir)
    update = functools.partial(timed_rl_step, trainer, tokens_per_step(trainer))

    summary = harness.run_experiment(
        config,
        workdir,
        init=init,
        update=update,
        num_updates=config.rl.num_updates,
        seed=config.seed,
        checkpoint_every=config.checkpoint_every,
        evaluate=functools.partial(evaluate_and_log, trainer, workdir),
        eval_every=config.eval.every,
        plots={
            "accuracy.png": harness.Plot(
                ["train/accuracy", "eval/pass@1", f"eval/maj@{config.eval.num_samples}"],
                title=f"{config.rl.algo} on {config.task}: accuracy",
                ylabel="fraction correct",
            ),
            "diversity.png": harness.Plot(
                ["eval/distinct_correct", "train/entropy"],
                title=f"{config.rl.algo} on {config.task}: diversity",
                ylabel="distinct correct answers / prompt; entropy (nats/token)",
            ),
            "kl.png": harness.Plot(
                ["train/kl_ref"], title="KL to the reference policy", ylabel="KL (nats/token)"
            ),
        },
        desc=f"flowrl:{config.task}:{config.rl.algo}",
        headline=["eval/pass@1", "train/accuracy", "train/kl_ref"],
        x_label="RL update",
        progress=config.get("progress", True),
    )
    summary["start_eval"] = start
    return summary
