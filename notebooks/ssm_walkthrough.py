# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %%
# Set-up on Colab (skip it in a clone where `pip install -e .` has run). Point REPO_URL at a
# git URL of this repository (your fork), or WHEEL at a wheel built with
# `pip wheel --no-deps -w dist .` and uploaded to the session; GPU=True installs the CUDA
# build of jaxlib (Colab GPU runtime) instead of the CPU one.
REPO_URL = ""  # e.g. "https://github.com/<you>/adarl-ssm-flowrl.git"
WHEEL = ""  # e.g. "/content/adarl_ssm_flowrl-0.1.0-py3-none-any.whl"
GPU = False
if REPO_URL or WHEEL:
    import subprocess
    import sys

    extra = "[gpu]" if GPU else ""
    target = f"{WHEEL}{extra}" if WHEEL else f"adarl-ssm-flowrl{extra} @ git+{REPO_URL}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", target], check=True)

# %% [markdown]
# # `ssm` walkthrough: selective scans, tasks, a tiny LM and S4D
#
# This notebook tours the `ssm` package on inputs small enough for a laptop CPU (about a minute):
#
# 1. the selective scan of Mamba (arXiv 2312.00752, Alg. 2) computed by four interchangeable
#    back-ends, which must agree;
# 2. the *selective copying* task of Mamba §4.1.1, generated in code;
# 3. a two-layer Mamba language model: a parallel forward pass and cached `generate`;
# 4. S4D (arXiv 2206.11893): the convolution mode equals the recurrent mode, and what its kernel
#    looks like.
#
# **Colab:** set `REPO_URL` (or `WHEEL`, and `GPU`) in the first cell and run it, or open this
# notebook from a clone (`notebooks/ssm_walkthrough.ipynb`). The notebook is generated from
# `notebooks/ssm_walkthrough.py` by jupytext; edit the `.py` and regenerate.

# %%
import os
import pathlib
import shutil
import sys

# Without a GPU, tell JAX so it skips probing for accelerators; with one, leave JAX's choice.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Use the clone's packages even when `pip install -e .` has not been run (or the kernel has not
# been restarted since): put the repository root (the folder holding setup.py) on the path.
_root = next(
    (p for p in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents] if (p / "setup.py").exists()),
    None,
)
if _root is not None and str(_root) not in sys.path:
    sys.path.insert(0, str(_root))

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from ssm import lm, s4d, scan, tasks

print("JAX", jax.__version__, "on", jax.default_backend())
T0 = time.perf_counter()

# %% [markdown]
# ## 1. One selective scan, four back-ends
#
# `ssm.scan.selective_scan(u, delta, A, B, C, D, z, delta_bias, ..., method=...)` computes, in
# float32,
#
# $$h_t = \exp(\Delta_t A)\, h_{t-1} + \Delta_t B_t u_t, \qquad
#   y_t = \langle C_t, h_t\rangle + D u_t, \qquad y_t \leftarrow y_t\, \mathrm{silu}(z_t),$$
#
# with $\Delta_t = \mathrm{softplus}(\Delta_t + \Delta_{bias})$. The back-ends are registered by
# name:
#
# * `"ref"`: a plain `lax.scan` over time, the executable specification;
# * `"associative"`: `lax.associative_scan` of the linear recurrence (parallel in time);
# * `"chunked"`: a scan over chunks carrying $h$, associative inside each chunk;
# * `"pallas"`: the fused Pallas kernel; on a CPU it runs in *interpret* mode.
#
# Shapes: `u, delta, z: [batch, length, d_inner]`, `A: [d_inner, d_state]`,
# `B, C: [batch, length, d_state]`, `D, delta_bias: [d_inner]`.

# %%
print("registered back-ends:", scan.methods())

batch, length, d_inner, d_state = 2, 24, 8, 4
k_u, k_dt, k_a, k_b, k_c, k_d, k_z, k_bias = jax.random.split(jax.random.PRNGKey(0), 8)
inputs = dict(
    u=jax.random.normal(k_u, (batch, length, d_inner)),
    delta=0.5 * jax.random.uniform(k_dt, (batch, length, d_inner)),
    A=-0.5 * jax.random.uniform(k_a, (d_inner, d_state)),  # negative: a stable recurrence
    B=jax.random.normal(k_b, (batch, length, d_state)),
    C=jax.random.normal(k_c, (batch, length, d_state)),
    D=jax.random.normal(k_d, (d_inner,)),
    z=jax.random.normal(k_z, (batch, length, d_inner)),
    delta_bias=0.5 * jax.random.uniform(k_bias, (d_inner,)),
)

outputs = {}
for method in ("ref", "associative", "chunked", "pallas"):
    extra = {"interpret": True} if method == "pallas" else {}
    y, last = scan.selective_scan(
        **inputs,
        delta_softplus=True,
        return_last_state=True,
        method=method,
        chunk_size=8,
        **extra,
    )
    outputs[method] = (np.asarray(y), np.asarray(last))

y_ref, h_ref = outputs["ref"]
print(f"{'method':>12} | max |y - y_ref| | max |h_L - h_L,ref|")
for method, (y, last) in outputs.items():
    print(f"{method:>12} | {np.abs(y - y_ref).max():15.2e} | {np.abs(last - h_ref).max():.2e}")

# %% [markdown]
# All four agree to float32 rounding (the tests in `tests/ssm/test_scan.py` also compare the
# gradients of every input). The reference is sequential in the length; the others trade memory
# for parallelism (`associative` holds `f32[b, L, D, N]`, `chunked` only one chunk of it).

# %% [markdown]
# ## 2. The selective copying task
#
# `ssm.tasks.make("selective_copying", vocab_size=A, seq_len=L, num_tokens=M)` scatters `M` data
# tokens (ids `1..A-2`) among `L + M` noise tokens (id 0), then appends `M` markers (id `A-1`).
# At the i-th marker the model must output the i-th data token: it has to *select* what to
# remember, which a time-invariant convolution cannot do by position alone. A `Batch` holds
# `inputs`, `targets` (int32[B, T]) and `mask` (1 where a prediction is scored).

# %%
task = tasks.make("selective_copying", vocab_size=8, seq_len=16, num_tokens=4)
batch_ = task.sample(jax.random.PRNGKey(1), batch_size=2)
print("registered tasks:", tasks.names())
print("sequence length T = L + 2M =", batch_.inputs.shape[1])
for name in ("inputs", "targets", "mask"):
    print(f"{name:>8}:", np.asarray(getattr(batch_, name)[0]).astype(int))

# %%
fig, ax = plt.subplots(figsize=(9, 1.6))
ax.imshow(np.asarray(batch_.inputs), cmap="tab10", vmin=0, vmax=9, aspect="auto")
for b in range(2):
    for t, tok in enumerate(np.asarray(batch_.inputs[b])):
        ax.text(t, b, str(tok), ha="center", va="center", fontsize=8, color="white")
ax.set_yticks([0, 1], ["seq 0", "seq 1"])
ax.set_xlabel("position (0 = noise, 7 = marker)")
ax.set_title("selective copying: copy the scattered data tokens at the markers")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. A tiny Mamba language model
#
# `ssm.lm.make_model(LMConfig(...))` builds a causal LM (embedding, `n_layers` pre-norm residual
# mixer blocks, tied head) over any registered mixer. `model.apply(params, tokens)` returns
# `(logits f32[B, L, V], hidden f32[B, L, D])`. `lm.generate` feeds the prompt through the
# recurrent `step` of every layer (the cache rides in a `lax.scan`), so each new token costs
# O(1) for an SSM. Untrained, its samples are noise; the point here is the interface, and that
# the task's loss and metrics plug in directly.

# %%
cfg = lm.LMConfig(
    vocab_size=task.vocab_size, d_model=16, n_layers=2, layer="mamba", d_state=4, chunk_size=8
)
model = lm.make_model(cfg)
params = lm.init_params(model, jax.random.PRNGKey(2))
n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
print("layers:", lm.layer_names(), "| this model:", cfg.layer, f"({n_params} parameters)")

logits, hidden = jax.jit(model.apply)(params, batch_.inputs)
print("logits", logits.shape, "hidden", hidden.shape)
loss = float(tasks.loss_fn(logits, batch_))
print(f"task loss (untrained): {loss:.3f}; uniform guessing: log V = {np.log(task.vocab_size):.3f}")
print("task accuracy:", {k: float(v) for k, v in tasks.accuracy(logits, batch_).items()})

prompt = batch_.inputs[:, :6]
out = lm.generate(model, params, prompt, jax.random.PRNGKey(3), max_new_tokens=8, temperature=0.0)
print("prompt + 8 greedy tokens:\n", np.asarray(out))

# %% [markdown]
# Greedy decoding through the recurrent caches gives exactly what re-running the parallel model
# on the growing prefix gives (a causal model's logit at position t ignores later tokens):

# %%
full = jax.jit(lambda p, t: model.apply(p, t)[0])
seq = np.asarray(out).copy()
for t in range(prompt.shape[1], seq.shape[1]):
    seq[:, t] = np.argmax(np.asarray(full(params, jnp.asarray(seq))[:, t - 1]), axis=-1)
print("cached generate == parallel re-run:", bool(np.array_equal(seq, np.asarray(out))))

# %% [markdown]
# ## 4. S4D: one layer, two modes
#
# An S4D layer holds H diagonal SSMs with N/2 complex modes each (one of every conjugate pair).
# Discretised by zero-order hold, channel h has the convolution kernel (S4D eq. 7)
#
# $$K_{h,\ell} = 2\,\mathrm{Re}\sum_n C'_{h,n}\, \bar A_{h,n}^{\,\ell}, \qquad
#   \bar A = e^{\Delta A},\quad C' = C\,(e^{\Delta A} - 1)/A,$$
#
# so the layer can run as an FFT convolution over the whole sequence (training) or as the
# recurrence $x_t = \bar A x_{t-1} + u_t$, $y_t = 2\,\mathrm{Re}(C' x_t) + D u_t$ (decoding). Both
# modes must give the same outputs.

# %%
H, N, L = 4, 16, 64
layer = s4d.S4DLayer(d_model=H, d_state=N, a_init="lin")
u = jax.random.normal(jax.random.PRNGKey(4), (1, L, H))
s4d_params = jax.jit(layer.init)(jax.random.PRNGKey(5), u)


@jax.jit
def both_modes(p, u):
    y_conv = layer.apply(p, u)

    def body(cache, u_t):
        y_t, cache = layer.apply(p, u_t, cache, method=layer.step)
        return cache, y_t

    _, y_rec = jax.lax.scan(body, s4d.init_s4d_cache(u.shape[0], H, N), jnp.moveaxis(u, 1, 0))
    return y_conv, jnp.moveaxis(y_rec, 0, 1)


y_conv, y_rec = both_modes(s4d_params, u)
print("max |conv - recurrent| =", float(jnp.abs(y_conv - y_rec).max()))
print("max |y|                =", float(jnp.abs(y_conv).max()))

# %% [markdown]
# The kernel itself (`S4DKernel.kernel(L)`, f32[H, L]) shows what each channel remembers: with
# S4D-Lin initialisation, $A_n = -\tfrac12 + i\pi n$, the modes are damped oscillations at
# increasing frequencies, and the per-channel step size $\Delta$ (log-uniform in
# [0.001, 0.1]) sets the time scale. Below: the kernels of the layer above and, for contrast, of
# S4D-Inv and S4D-Real (Mamba's initialisation, no oscillation).

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharex=True)
L_plot = 256
for ax, init in zip(axes, ("lin", "inv", "real"), strict=True):
    kern = s4d.S4DKernel(d_model=H, d_state=N, a_init=init)
    kp = kern.init(jax.random.PRNGKey(5), L_plot, method=kern.kernel)
    K = np.asarray(kern.apply(kp, L_plot, method=kern.kernel))
    dt = np.exp(np.asarray(kp["params"]["log_dt"]))
    for h in range(H):
        ax.plot(K[h], lw=1, label=f"h={h}, Δ={dt[h]:.3f}")
    ax.set_title(f"S4D-{init.capitalize()} kernel $K_h[\\ell]$")
    ax.set_xlabel("lag $\\ell$")
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %%
print(f"notebook ran in {time.perf_counter() - T0:.1f} s")
