"""Pallas selective-scan kernel: interpret mode vs "ref" on CPU, and the CUDA lowering check.

Pattern of jax-ml/jax ``tests/pallas/gpu_ops_test.py`` (STYLE.md §1): the same comparisons run on
hardware (``gpu`` marker, skipped without a GPU) and in interpret mode on the CPU. The export
test runs the Pallas -> Triton lowering for ``platforms=["cuda"]`` from this CPU machine
(SSM.md §5.3), so a GPU-breaking change is caught without a GPU. Interpret mode is slow: shapes
are tiny.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from ssm import pallas_scan, scan
from tests.ssm.test_scan import (
    ARG_NAMES,
    TOL,
    args_of,
    assert_close,
    check_against_ref,
    cotangents,
    forward,
    grad_tol,
    make_inputs,
)

# (batch, length, d_inner, d_state, groups, dtype, with_D, with_z, with_bias, softplus).
# d_state 3 and 5 are not powers of two: the kernel zero-pads N, which must be exact.
INTERPRET_CASES = {
    "f32-all-options-N3": (2, 13, 8, 3, 1, jnp.float32, True, True, True, True),
    "f32-bare-grouped-batch1": (1, 9, 8, 4, 2, jnp.float32, False, False, False, False),
    "bf16-all-options-grouped-N5": (2, 11, 8, 5, 2, jnp.bfloat16, True, True, True, True),
}


@pytest.mark.parametrize("case", list(INTERPRET_CASES))
def test_interpret_matches_ref_outputs_state_and_gradients(case):
    batch, length, d_inner, d_state, groups, dtype, wD, wz, wb, sp = INTERPRET_CASES[case]
    inputs = make_inputs(length, batch, length, d_inner, d_state, groups, dtype, wD, wz, wb)
    # Registry-level interpret=None means interpret mode on the CPU backend.
    check_against_ref("pallas", inputs, sp, dtype, chunk_size=4)


def test_interpret_small_blocks_cover_all_channel_programs():
    """block_d = 2 gives a (batch, 4) grid over d_inner = 8 with two groups; every program's
    channels and its group of B/C must line up with the reference."""
    inputs = make_inputs(1, 2, 7, 8, 4, groups=2)
    y, last = pallas_scan.selective_scan_pallas(
        *args_of(inputs),
        delta_softplus=True,
        interpret=True,
        config=pallas_scan.KernelConfig(block_d=2, chunk=None, unroll=1),
    )
    y_r, last_r = forward("ref", True)(*args_of(inputs))
    assert_close("y", y, y_r, *TOL[jnp.float32])
    assert_close("last_state", last, last_r, *TOL[jnp.float32])


# (batch, length, d_inner, d_state, groups, dtype, KernelConfig): several chunks per row with a
# padded last chunk (odd L), an unroll that does not divide L, one chunk, grouped B/C.
CHUNK_CASES = {
    "f32-L13-T4-u2-bd4": (2, 13, 8, 3, 1, jnp.float32, pallas_scan.KernelConfig(4, 4, 2)),
    "bf16-L11-T8-u4-grouped": (2, 11, 8, 5, 2, jnp.bfloat16, pallas_scan.KernelConfig(2, 8, 4)),
    "f32-L9-one-chunk-u3-grouped": (
        1,
        9,
        8,
        4,
        2,
        jnp.float32,
        pallas_scan.KernelConfig(8, None, 3),
    ),
}


@functools.cache
def _chunked_fwd(config):
    kernel = functools.partial(
        pallas_scan.selective_scan_pallas_fwd, delta_softplus=True, interpret=True, config=config
    )
    ref = functools.partial(
        scan.selective_scan, delta_softplus=True, return_last_state=True, method="ref"
    )
    return jax.jit(kernel), jax.jit(ref)


@pytest.mark.parametrize("case", list(CHUNK_CASES))
def test_chunk_parallel_forward_matches_ref(case):
    """The two-pass chunk-parallel forward (state pass, chunk-carry scan, output pass) equals
    "ref" with an initial state, packed documents (a boundary inside and one at a chunk edge)
    and some softplus inputs > 20."""
    batch, length, d_inner, d_state, groups, dtype, config = CHUNK_CASES[case]
    inputs = make_inputs(5, batch, length, d_inner, d_state, groups, dtype)
    inputs["delta"] = inputs["delta"].at[:, ::3, ::2].add(25.0)  # softplus(x) = x branch
    rng = np.random.default_rng(3)
    h0 = jnp.asarray(rng.standard_normal((batch, d_inner, d_state)), jnp.float32)
    seq_idx = jnp.asarray(np.cumsum(rng.random((batch, length)) < 0.25, axis=1), jnp.int32)
    seq_idx = seq_idx.at[:, 4:].add(1)
    kernel, ref = _chunked_fwd(config)
    for kw in ({}, {"initial_state": h0, "seq_idx": seq_idx}):
        y, last = kernel(*args_of(inputs), **kw)
        y_r, last_r = ref(*args_of(inputs), **kw)
        assert y.dtype == dtype and y.shape == (batch, length, d_inner)
        assert_close("y", y, y_r, *TOL[dtype])
        assert_close("last_state", last, last_r, *TOL[dtype])


# (batch, length, d_inner, d_state, groups, dtype, with_z, backward, bwd KernelConfig): several
# backward chunks with a padded last one, grouped B/C with N padded, no gate, and the XLA path.
BWD_CASES = {
    "f32-L13-T4-bd4-gated": (2, 13, 8, 3, 1, jnp.float32, True, "pallas", (4, 4)),
    "bf16-L11-T4-bd2-grouped-N5": (2, 11, 8, 5, 2, jnp.bfloat16, True, "pallas", (2, 4)),
    "f32-L9-T8-no-z-grouped": (1, 9, 8, 4, 2, jnp.float32, False, "pallas", (8, 8)),
    "f32-L13-xla-backward": (2, 13, 8, 3, 1, jnp.float32, True, "xla", (4, 4)),
}


@functools.cache
def _grads(method, backward=None, bwd=None):
    """Jitted (y, last, grads of every input and of the initial state) for a random cotangent
    contraction, with ``seq_idx`` passed through."""

    def loss(args, h0, seq_idx, gy, gh):
        if method == "ref":
            y, last = scan.selective_scan(
                *args,
                delta_softplus=True,
                return_last_state=True,
                initial_state=h0,
                seq_idx=seq_idx,
            )
        else:
            y, last = pallas_scan.selective_scan_pallas(
                *args,
                delta_softplus=True,
                interpret=True,
                initial_state=h0,
                seq_idx=seq_idx,
                config=pallas_scan.KernelConfig(block_d=4, chunk=4, unroll=2),
                backward=backward,
                bwd_config=pallas_scan.KernelConfig(block_d=bwd[0], chunk=bwd[1], unroll=1),
            )
        return jnp.sum(y.astype(jnp.float32) * gy) + jnp.sum(last * gh), (y, last)

    def run(args, h0, seq_idx, gy, gh):
        (_, out), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(args, h0, seq_idx, gy, gh)
        return out, grads

    return jax.jit(run)


@pytest.mark.parametrize("case", list(BWD_CASES))
def test_backward_kernels_match_ref_gradients(case):
    """The fused backward (state pass, chunk adjoints, gradient kernel) vs "ref": the gradient
    of every input and of the initial state, with packed documents (one boundary on a chunk
    edge) and softplus inputs > 20; and the XLA reference backward the same way."""
    batch, length, d_inner, d_state, groups, dtype, wz, backward, bwd = BWD_CASES[case]
    inputs = make_inputs(7, batch, length, d_inner, d_state, groups, dtype, with_z=wz)
    inputs["delta"] = inputs["delta"].at[:, ::3, ::2].add(25.0)
    args = args_of(inputs)
    rng = np.random.default_rng(4)
    h0 = jnp.asarray(rng.standard_normal((batch, d_inner, d_state)), jnp.float32)
    seq_idx = jnp.asarray(np.cumsum(rng.random((batch, length)) < 0.2, axis=1), jnp.int32)
    seq_idx = seq_idx.at[:, 4:].add(1)
    gy, gh = cotangents(inputs)
    (y, last), (grads, dh0) = _grads("pallas", backward, bwd)(args, h0, seq_idx, gy, gh)
    (y_r, last_r), (grads_r, dh0_r) = _grads("ref")(args, h0, seq_idx, gy, gh)
    assert_close("y", y, y_r, *TOL[dtype])
    assert_close("last_state", last, last_r, *TOL[dtype])
    assert_close("dinitial_state", dh0, dh0_r, *grad_tol("A", dtype, wz))
    for name, g, g_r in zip(ARG_NAMES, grads, grads_r, strict=True):
        if inputs[name] is None:
            assert g is None, name
            continue
        assert g.dtype == inputs[name].dtype and g.shape == inputs[name].shape, name
        assert_close(f"d{name}", g, g_r, *grad_tol(name, dtype, wz))


def test_pick_config_uses_the_table_then_fills_the_gpu():
    mamba = pallas_scan.pick_config(8, 2048, 1536, 16)
    assert mamba == pallas_scan.TUNING[(8, 2048, 1536, 16)] and mamba.chunk == 256
    # Batch 1, long L, few channels: the largest chunk that gives TARGET_PROGRAMS programs.
    cfg = pallas_scan.pick_config(1, 8000, 1024, 16)
    programs = lambda chunk: (1024 // cfg.block_d) * -(-8000 // chunk)
    assert cfg.chunk == 256
    assert programs(cfg.chunk) >= pallas_scan.TARGET_PROGRAMS > programs(2 * cfg.chunk)
    assert pallas_scan.pick_config(1, 8000, 64, 16).chunk == 64  # the smallest chunk
    # Enough (batch, channel) programs already, or a short sequence: one pass.
    assert pallas_scan.pick_config(64, 4096, 1024, 16).chunk is None
    assert pallas_scan.pick_config(1, 40, 8, 4).chunk is None


def test_block_size_is_power_of_two_dividing_channels_and_groups():
    assert pallas_scan._pow2_block(1536, 1536, 16) == 16
    assert pallas_scan._pow2_block(1536, 1536, 1024) == 512
    assert pallas_scan._pow2_block(24, 24, 16) == 8
    assert pallas_scan._pow2_block(12, 6, 16) == 2  # two groups of 6 channels
    assert pallas_scan._pow2_block(7, 7, 16) == 1
    assert pallas_scan._next_pow2(5) == 8 and pallas_scan._next_pow2(16) == 16


def _specs(batch, length, d_inner, d_state, groups, dtype):
    sds = jax.ShapeDtypeStruct
    act = sds((batch, length, d_inner), dtype)
    bc = sds((batch, length, d_state) if groups == 1 else (batch, length, groups, d_state), dtype)
    w = sds((d_inner,), jnp.float32)
    return {
        "u": act,
        "delta": act,
        "A": sds((d_inner, d_state), jnp.float32),
        "B": bc,
        "C": bc,
        "D": w,
        "z": act,
        "delta_bias": w,
    }


def _export_cuda(fn, specs):
    return export.export(
        jax.jit(fn),
        platforms=["cuda"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(*specs)


_TRITON_CALL = re.compile(
    r"@__gpu\$xla\.gpu\.triton\(.*?grid_x = (\d+) : i32, grid_y = (\d+) : i32, "
    r'grid_z = (\d+) : i32, ir = "((?:[^"\\]|\\.)*)", name = "(\w+)", '
    r"num_stages = (\d+) : i32, num_warps = (\d+) : i32"
)


def _unescape_mlir_bytes(s: str) -> bytes:
    """The MLIR string literal of a custom call's ``ir`` attribute -> its raw bytes."""
    out, i = bytearray(), 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1] in '\\"':
            out.append(ord(s[i + 1]))
            i += 2
        elif s[i] == "\\":
            out.append(int(s[i + 1 : i + 3], 16))
            i += 3
        else:
            out += s[i].encode()
            i += 1
    return bytes(out)


def triton_kernels(mlir_text: str) -> dict[str, dict]:
    """Every Triton custom call of an exported module: name -> grid, num_warps and the kernel's
    Triton IR (the serialized ``tt`` module parsed back to text with jaxlib's Triton dialect)."""
    # jaxlib internals, imported only here so that a JAX without them fails this test alone.
    from jax._src.lib import triton as jaxlib_triton
    from jax._src.lib.mlir import ir

    kernels = {}
    for m in _TRITON_CALL.finditer(mlir_text):
        with ir.Context() as ctx:
            jaxlib_triton.dialect.register_dialect(ctx)
            ctx.allow_unregistered_dialects = True
            ttir = str(ir.Module.parse(_unescape_mlir_bytes(m.group(4))))
        kernels[m.group(5)] = {
            "grid": tuple(int(m.group(k)) for k in (1, 2, 3)),
            "num_warps": int(m.group(7)),
            "ttir": ttir,
        }
    return kernels


def test_triton_ir_of_both_forward_kernels_at_the_mamba_shape():
    """Beyond "a Triton call exists": at B=8, L=2048, D=1536, N=16 bf16 the TUNING entry (block_d
    16, chunk 256, unroll 4, 1 warp) must give the chunk-state and output kernels the grid
    (8, 96, 8); each kernel's Triton IR has one rolled time loop (``scf.for``) whose body holds
    ``unroll`` hand-unrolled steps (one ``exp2`` each, plus the decay's ``exp2`` in the state
    kernel) and reads the chunk index from program axis z."""
    specs = _specs(8, 2048, 1536, 16, 1, jnp.bfloat16)
    cfg = pallas_scan.TUNING[(8, 2048, 1536, 16)]

    def fwd(*args):
        return scan.selective_scan(
            *args, delta_softplus=True, return_last_state=True, method="pallas", interpret=False
        )

    kernels = triton_kernels(_export_cuda(fwd, [specs[n] for n in ARG_NAMES]).mlir_module())
    assert set(kernels) == {"selective_scan_chunk_states", "selective_scan_fwd"}
    for name, extra_exp2 in (("selective_scan_chunk_states", 1), ("selective_scan_fwd", 0)):
        k = kernels[name]
        assert k["grid"] == (8, 1536 // cfg.block_d, 2048 // cfg.chunk), name
        assert k["num_warps"] == cfg.num_warps
        assert k["ttir"].count("scf.for") == 1, name
        assert k["ttir"].count('"__nv_exp2f"') == cfg.unroll + extra_exp2, name
        assert "tt.get_program_id z" in k["ttir"], name


def test_triton_ir_of_the_backward_kernels_at_the_mamba_shape():
    """The gradient at B=8, L=2048, D=1536, N=16 bf16 lowers to the three backward kernels on
    the grid (8, D/bd, L/T) of BWD_CONFIG: the state pass and the chunk-adjoint pass keep one
    rolled time loop; the gradient kernel is unrolled over its T steps (no loop) with one exp2
    per step and per step five row stores (du, ddelta, dz, dB, dC) plus the three partial sums;
    no forward kernel is left (y is not needed for the gradient)."""
    specs = _specs(8, 2048, 1536, 16, 1, jnp.bfloat16)
    cfg = pallas_scan.BWD_CONFIG

    def loss(*args):
        y, last = scan.selective_scan(
            *args, delta_softplus=True, return_last_state=True, method="pallas", interpret=False
        )
        return jnp.sum(y.astype(jnp.float32)) + jnp.sum(last)

    grad = jax.grad(loss, argnums=tuple(range(len(ARG_NAMES))))
    kernels = triton_kernels(_export_cuda(grad, [specs[n] for n in ARG_NAMES]).mlir_module())
    names = {
        "selective_scan_chunk_states",
        "selective_scan_bwd_chunk_adjoints",
        "selective_scan_bwd",
    }
    assert set(kernels) == names
    for name in names:
        assert kernels[name]["grid"] == (8, 1536 // cfg.block_d, 2048 // cfg.chunk), name
        assert kernels[name]["num_warps"] == cfg.num_warps, name
    assert kernels["selective_scan_bwd_chunk_adjoints"]["ttir"].count("scf.for") == 1
    bwd = kernels["selective_scan_bwd"]["ttir"]
    assert bwd.count("scf.for") == 0
    assert bwd.count('"__nv_exp2f"') == cfg.chunk
    assert bwd.count("tt.store") == 5 * cfg.chunk + 3


# (batch, length, d_inner, d_state, groups, dtype, gated): a non-power-of-two length, grouped
# B/C with a non-power-of-two d_state, and the Mamba training shape (SSM.md §6 worked example).
EXPORT_CASES = {
    "f32-L200-gated": (2, 200, 64, 16, 1, jnp.float32, True),
    "bf16-grouped-N5": (2, 100, 64, 5, 2, jnp.bfloat16, True),
    "bf16-mamba-B8-L2048-D1536": (8, 2048, 1536, 16, 1, jnp.bfloat16, False),
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_lowers_for_cuda_with_triton(case):
    """Forward and gradient export for CUDA; the kernel must be a Triton custom call (JAX 0.10.2
    otherwise picks Mosaic GPU, which cannot hold this kernel; SSM.md §5.3)."""
    batch, length, d_inner, d_state, groups, dtype, gated = EXPORT_CASES[case]
    specs = _specs(batch, length, d_inner, d_state, groups, dtype)
    names = [n for n in ARG_NAMES if gated or n != "z"]

    def fwd(*args):
        kw = dict(zip(names, args, strict=True))
        return scan.selective_scan(
            **kw, delta_softplus=True, return_last_state=True, method="pallas", interpret=False
        )

    def loss(*args):
        y, last = fwd(*args)
        return jnp.sum(y.astype(jnp.float32)) + jnp.sum(last)

    arg_specs = [specs[n] for n in names]
    exported = _export_cuda(fwd, arg_specs)
    assert exported.platforms == ("cuda",)
    text = exported.mlir_module()
    assert "__gpu$xla.gpu.triton" in text and "selective_scan_fwd" in text
    exported_grad = _export_cuda(jax.grad(loss, argnums=tuple(range(len(names)))), arg_specs)
    assert len(exported_grad.out_avals) == len(names)
    assert "selective_scan_bwd" in exported_grad.mlir_module()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_gpu_kernel_matches_ref(dtype):
    """On hardware (no interpret): outputs, state and gradients vs "ref" at a Mamba-like shape."""
    if jax.default_backend() != "gpu":
        pytest.skip("needs a GPU")
    inputs = make_inputs(0, 2, 1000, 256, 16, 1, dtype)
    check_against_ref("pallas", inputs, True, dtype, chunk_size=64)


@functools.cache
def _vmapped(method):
    return jax.jit(
        jax.vmap(functools.partial(scan.selective_scan, method=method, return_last_state=True))
    )


def test_interpret_vmaps_over_a_leading_axis():
    """vmap adds a grid axis to the pallas_call; compare each slice to "ref"."""
    inputs = make_inputs(4, 1, 6, 8, 4)
    args = [inputs[n] for n in ("u", "delta", "A", "B", "C")]
    stacked = [jnp.stack([a, -a if i != 2 else a]) for i, a in enumerate(args)]
    y, last = _vmapped("pallas")(*stacked)
    y_r, last_r = _vmapped("ref")(*stacked)
    np.testing.assert_allclose(y, y_r, *TOL[jnp.float32])
    np.testing.assert_allclose(last, last_r, *TOL[jnp.float32])
