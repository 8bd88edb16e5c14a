"""Configs for ``python -m experiments.ssm`` (synthetic tasks, SSM.md §8).

Presets (``--config experiments/configs/ssm.py:<preset>``):

* ``smoke``: seconds on CPU (run by the tests).
* ``cpu``: selective copying with a small Mamba, a few minutes on CPU.
* ``selective_copying`` (Mamba) / ``selective_copying_s4d`` / ``selective_copying_s4``: the Mamba
  paper's Table 1 task (§4.1.1) at CPU scale: L = 64 noise-region length, 8 data tokens, vocab 16,
  2 layers, d_model 64, batch 32, lr 1e-3, 2000 steps. Paper: L = 4096, 16 tokens, 400K steps, lr 1e-4, batch 64 (GPU).
* ``induction`` (Mamba) / ``induction_transformer``: induction heads (§4.1.2, Table 3), vocab 16,
  2 layers, d_model 64, Adam lr 1e-3 (paper's best for Mamba), batch 8, data regenerated every
  step, trained at L = 64 (CPU scale; paper 256) and evaluated at 4x and 16x (256, 1024), 4000
  steps (paper: 204 800).
  ``induction_l256``: the same at the paper's training length 256, evaluated at 1024 and 4096.
* ``induction_hybrid`` / ``mqar_hybrid``: Mamba with attention at layer 1 (``attn_layer_idx``),
  beside ``induction`` / ``induction_transformer`` and ``mqar`` / ``mqar_transformer``.
* ``mqar``, ``listops`` (S4D), ``listops_mamba``, ``listops_transformer``: small CPU versions;
  ListOps accuracy is measured on a held-out test pool.

``--config.model.layer=mamba|mamba2|s4d|s4|transformer`` swaps the model with everything else
equal; ``--config.model.scan_method`` picks the selective-scan back-end.

Issue 24, the seed table (``python -m experiments.ssm_table``; sized for one GPU, ~30-90 s a run
with compile, ``model.scan_method="chunked"``: on a GPU the sequential ``"ref"`` scan is one
while-loop iteration per token; the chunked scan is also the fastest forward+backward on a CPU at
L = 1024, README "Selective scan"; the ``ind256_*``, ``mqar_*`` and ``listops128_*`` rows use
``"ref"``, the fastest on a CPU at L <= 256 (2-2.4x faster than "chunked"), and were measured
there; ``benchmarks/gpu_ssm_table.sh`` sets ``SCAN``).
Everything not named is ``base()``: 2 layers, d_model 64,
vocab 16, AdamW, no weight decay, 100 warm-up steps, constant lr.

* ``sc256_<model>`` for mamba, mamba2, s4d, s4, transformer: selective copying with 16 data tokens
  among 256 noise positions (T = 288; paper: 16 among 4096), batch 32, lr 1e-3, **4000 steps**
  (paper: 400K at lr 1e-4, batch 64); S4/S4D with d_state 64.
* ``ind256_<model>`` for mamba (lr 1e-3), mamba2 (1e-3), transformer (RoPE, lr 2e-4: the paper's
  best for attention), hybrid (Mamba + RoPE attention at layer 1, 1e-3): induction heads trained at
  L = 256, batch 8, **6000 steps** (paper: 204 800), evaluated at 1024, 4096 (4x, 16x) and, for
  the two attention-free models, 16384 (64x), on 128 sequences per length (attention at 16384
  would need a 34 GB score tensor per batch of 8; the paper's attention runs OOM beyond 2^14).
* ``mqar_kv8_<model>`` (L = 128, 8 pairs) and ``mqar_kv16_<model>`` (L = 256, 16 pairs), vocab 64,
  for mamba and transformer: Zoology's (128, 8) and (256, 16) settings at vocab 64 (paper 8192),
  batch 64, lr 1e-3, **3000 steps**.
* ``listops128_<model>`` for s4d, mamba, transformer: ListOps up to 128 tokens, 8192 training
  trees, evaluated on the 1024 held-out trees (``Task.sample_eval``; 16 batches of 64 drawn
  from them), batch 64, lr 1e-3, **3000 steps**.
"""

from __future__ import annotations

import ml_collections

import harness
from harness import parallel


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.progress = True  # tqdm bar

    c.model = ml_collections.ConfigDict()  # fields of ssm.lm.LMConfig (vocab_size from the task)
    c.model.vocab_size = 16  # overwritten with the task's vocabulary
    c.model.d_model = 64
    c.model.n_layers = 2
    c.model.layer = "mamba"  # ssm.lm.layer_names()
    c.model.max_len = 1024  # decode cache / S4 l_max (training sets it to the longest eval length)
    c.model.tie_embeddings = True
    c.model.scan_method = "ref"  # ssm.scan.methods(); "ref" is the fastest on CPU (SSM.md §5.6)
    c.model.chunk_size = 64
    c.model.d_state = 16  # Mamba default; S4/S4D use 64 in the presets below
    c.model.d_conv = 4
    c.model.expand = 2
    c.model.dt_rank = 0  # 0 -> ceil(d_model / 16)
    c.model.headdim = 32  # mamba2
    c.model.ngroups = 1
    c.model.ssd_impl = "chunked"
    c.model.s4d_init = "lin"
    c.model.s4d_disc = "zoh"
    c.model.n_heads = 4  # transformer
    c.model.mlp_ratio = 4
    c.model.norm_eps = 1e-5
    c.model.attn_layer_idx = ()  # hybrid: Transformer (attention) mixers at these layer indices
    c.model.d_intermediate = 0  # > 0: gated MLP block after every mixer
    c.model.dtype = "float32"  # compute dtype ("bfloat16": mixed precision, params f32)
    c.model.linear_init = "torch"  # mamba/mamba2 in_proj/x_proj init ("torch" = upstream)
    c.model.conv_bias = True

    c.task = ml_collections.ConfigDict()
    c.task.name = "selective_copying"  # ssm.tasks.names()
    c.task.seq_len = 256  # the task's length parameter (see ssm.tasks)
    c.task.kwargs = ml_collections.ConfigDict({"vocab_size": 16, "num_tokens": 8})

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64
    c.train.lr = 1e-3
    c.train.weight_decay = 0.0  # paper: no weight decay on the synthetic tasks
    c.train.warmup_steps = 100
    c.train.grad_clip = 1.0
    c.train.num_updates = 40  # harness updates (log / checkpoint unit)
    c.train.steps_per_update = 50  # gradient steps per update
    c.train.checkpoint_every = 5
    c.train.eval_every = 5  # updates; 0 = only at the end

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 64
    c.eval.num_batches = 4
    c.eval.lengths = ()  # extra task lengths to evaluate (length generalisation)

    # Mesh (all devices, data parallel: train.batch_size is split over "data"); fsdp=True also
    # shards parameters and AdamW state over "data" (harness.parallel.fsdp_shardings).
    c.parallel = parallel.default_config()
    return c


def smoke() -> ml_collections.ConfigDict:
    c = base()
    c.progress = False
    c.model.d_model = 16
    c.model.n_layers = 1
    c.model.d_state = 4
    c.task.seq_len = 12
    c.task.kwargs.num_tokens = 3
    c.train.batch_size = 4
    c.train.num_updates = 3
    c.train.steps_per_update = 2
    c.train.checkpoint_every = 2
    c.train.eval_every = 2
    c.train.warmup_steps = 1
    c.eval.batch_size = 4
    c.eval.num_batches = 1
    c.eval.lengths = (20,)
    return c


def cpu() -> ml_collections.ConfigDict:
    c = base()
    c.task.seq_len = 64
    c.task.kwargs.num_tokens = 4
    c.train.batch_size = 32
    c.train.num_updates = 20
    return c


def _s4_like(c: ml_collections.ConfigDict, layer: str) -> ml_collections.ConfigDict:
    c.model.layer = layer
    c.model.d_state = 64  # S4/S4D default state size
    return c


def selective_copying() -> ml_collections.ConfigDict:
    c = base()
    c.task.seq_len = 64  # CPU scale: 64 noise positions + 8 data tokens + 8 markers = 80 tokens
    c.task.kwargs.num_tokens = 8
    c.train.batch_size = 32
    c.train.num_updates = 40
    c.train.steps_per_update = 50  # 2000 steps
    return c


def selective_copying_s4d() -> ml_collections.ConfigDict:
    return _s4_like(selective_copying(), "s4d")


def selective_copying_s4() -> ml_collections.ConfigDict:
    return _s4_like(selective_copying(), "s4")


def induction() -> ml_collections.ConfigDict:
    c = base()
    c.task.name = "induction_heads"
    c.task.seq_len = 64  # CPU scale (paper: 256)
    c.task.kwargs = ml_collections.ConfigDict({"vocab_size": 16})
    c.train.batch_size = 8  # paper App. E.1
    c.train.lr = 1e-3
    c.train.num_updates = 40
    c.train.steps_per_update = 100  # 4000 steps (paper: 204 800)
    c.eval.batch_size = 32
    c.eval.num_batches = 4
    c.eval.lengths = (256, 1024)  # 4x and 16x
    return c


def quickstart() -> ml_collections.ConfigDict:
    """README's first command: a visible learning curve in well under a minute on a CPU.

    Induction heads at L = 32 with a small Mamba (d_model 32): the token accuracy stays at
    chance (1/15, ``ssm.tasks.Baseline``) for ~400 steps, then jumps to ~100%, also at 4x the training length.
    """
    c = induction()
    c.model.d_model = 32
    c.task.seq_len = 32
    c.train.batch_size = 16
    c.train.num_updates = 16
    c.train.steps_per_update = 50  # 800 steps
    c.train.eval_every = 2
    c.train.checkpoint_every = 8
    c.eval.lengths = (128,)
    return c


def induction_l256() -> ml_collections.ConfigDict:
    """Induction heads at the paper's training length 256, evaluated at 4x and 16x."""
    c = induction()
    c.task.seq_len = 256
    c.eval.lengths = (1024, 4096)
    return c


def induction_transformer() -> ml_collections.ConfigDict:
    c = induction()
    c.model.layer = "transformer"
    c.train.lr = 2e-4  # paper's best for the non-Mamba models
    return c


def mqar() -> ml_collections.ConfigDict:
    c = base()
    c.task.name = "mqar"
    c.task.seq_len = 64
    c.task.kwargs = ml_collections.ConfigDict({"vocab_size": 64, "num_kv_pairs": 4})
    return c


def _hybrid(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Mamba at layer 0, attention (+ MLP) at layer 1: the smallest Jamba-style hybrid."""
    c.model.layer = "mamba"
    c.model.attn_layer_idx = (1,)
    return c


def induction_hybrid() -> ml_collections.ConfigDict:
    return _hybrid(induction())


def mqar_transformer() -> ml_collections.ConfigDict:
    c = mqar()
    c.model.layer = "transformer"
    return c


def mqar_hybrid() -> ml_collections.ConfigDict:
    return _hybrid(mqar())


def listops() -> ml_collections.ConfigDict:
    c = base()
    c.task.name = "listops"
    c.task.seq_len = 128
    c.task.kwargs = ml_collections.ConfigDict(
        {"min_len": 16, "max_depth": 10, "max_args": 5, "pool_size": 8192, "seed": 0}
    )
    c.model.layer = "s4d"
    c.model.d_state = 64
    return c


def listops_mamba() -> ml_collections.ConfigDict:
    c = listops()
    c.model.layer = "mamba"
    c.model.d_state = 16
    return c


def listops_transformer() -> ml_collections.ConfigDict:
    c = listops()
    c.model.layer = "transformer"
    return c


# ---------------------------------------------------------------------------------------------
# Issue 24: the seed table (experiments/ssm_table.py). One preset per (task, model) so that a row
# is reproduced by ``--config ...:<preset> --config.seed=<k>`` alone.
# ---------------------------------------------------------------------------------------------


def _table(
    c: ml_collections.ConfigDict, layer: str, steps: int, evals: int, scan_method: str = "chunked"
):
    """``layer`` (or "hybrid"), ``steps`` gradient steps in updates of 100, ``evals`` evaluations,
    the selective-scan back-end ``scan_method`` (all are equal to float tolerance, SSM.md §5)."""
    if layer == "hybrid":
        c = _hybrid(c)
    else:
        c.model.layer = layer
    if layer in ("s4", "s4d"):
        c.model.d_state = 64  # S4/S4D default state size
    c.model.scan_method = scan_method
    c.train.steps_per_update = 100
    c.train.num_updates = steps // 100
    c.train.eval_every = c.train.num_updates // evals
    c.train.checkpoint_every = c.train.num_updates // 2
    return c


def _sc256(layer: str) -> ml_collections.ConfigDict:
    c = base()
    c.task.seq_len = 256  # noise positions; T = 256 + 2 * 16 = 288
    c.task.kwargs.num_tokens = 16  # paper: 16 data tokens
    c.train.batch_size = 32
    c.train.lr = 1e-3
    c.eval.batch_size = 64
    c.eval.num_batches = 4
    return _table(c, layer, steps=4000, evals=8)


def _ind256(layer: str, lr: float) -> ml_collections.ConfigDict:
    c = induction()  # vocab 16, batch 8 (paper App. E.1)
    c.task.seq_len = 256  # the paper's training length
    c.train.lr = lr
    # 128 held-out sequences per length; attention in batches of 8 (its f32 score tensor at
    # 4096 is 2.1 GB per batch of 8), the SSMs in 4 batches of 32 (fewer launches on a GPU).
    attention = layer in ("transformer", "hybrid")
    c.eval.batch_size, c.eval.num_batches = (8, 16) if attention else (32, 4)
    c.eval.lengths = (1024, 4096) if attention else (1024, 4096, 16384)
    # Measured on the 2-core CPU (Mamba, batch 8, L = 256, forward + backward): "ref" 148 ms a
    # step, "chunked" 300 ms, "associative" 243 ms; three evaluations, because one at 16384 costs
    # about a minute there (the curves use train/token_acc, on fresh sequences every step).
    return _table(c, layer, steps=6000, evals=3, scan_method="ref")


def _mqar(layer: str, kv: int, seq_len: int) -> ml_collections.ConfigDict:
    c = mqar()
    c.task.seq_len = seq_len
    c.task.kwargs.num_kv_pairs = kv
    c.train.batch_size = 64
    c.train.lr = 1e-3
    # "ref": measured on the 2-core CPU (Mamba, 8 pairs, batch 64, L = 128, forward + backward)
    # 450 ms a step against 1100 ms "chunked" and 720 ms "associative".
    return _table(c, layer, steps=3000, evals=6, scan_method="ref")


def _listops128(layer: str) -> ml_collections.ConfigDict:
    c = listops()
    c.model.d_state = 16
    c.task.kwargs.test_size = 1024  # held-out trees (Task.sample_eval)
    c.train.batch_size = 64
    c.eval.batch_size = 64
    c.eval.num_batches = 16
    return _table(c, layer, steps=3000, evals=6, scan_method="ref")  # as _mqar: the CPU's fastest


TABLE_PRESETS = {
    **{
        f"sc256_{m}": (lambda m=m: _sc256(m))
        for m in ("mamba", "mamba2", "s4d", "s4", "transformer")
    },
    "ind256_mamba": lambda: _ind256("mamba", 1e-3),
    "ind256_mamba2": lambda: _ind256("mamba2", 1e-3),
    "ind256_transformer": lambda: _ind256("transformer", 2e-4),
    "ind256_hybrid": lambda: _ind256("hybrid", 1e-3),
    **{f"mqar_kv8_{m}": (lambda m=m: _mqar(m, 8, 128)) for m in ("mamba", "transformer")},
    **{f"mqar_kv16_{m}": (lambda m=m: _mqar(m, 16, 256)) for m in ("mamba", "transformer")},
    **{f"listops128_{m}": (lambda m=m: _listops128(m)) for m in ("s4d", "mamba", "transformer")},
}


PRESETS = {
    "smoke": smoke,
    "cpu": cpu,
    "selective_copying": selective_copying,
    "selective_copying_s4d": selective_copying_s4d,
    "selective_copying_s4": selective_copying_s4,
    "induction": induction,
    "quickstart": quickstart,
    "induction_l256": induction_l256,
    "induction_transformer": induction_transformer,
    "induction_hybrid": induction_hybrid,
    "mqar": mqar,
    "mqar_transformer": mqar_transformer,
    "mqar_hybrid": mqar_hybrid,
    "listops": listops,
    "listops_mamba": listops_mamba,
    "listops_transformer": listops_transformer,
    **TABLE_PRESETS,
}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return harness.select_preset(PRESETS, preset)
