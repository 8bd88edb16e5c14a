"""Pallas selective-scan kernel: interpret mode vs "ref" on CPU, and the CUDA lowering check.

Pattern of jax-ml/jax ``tests/pallas/gpu_ops_test.py`` (STYLE.md §1): the same comparisons run on
hardware (``gpu`` marker, skipped without a GPU) and in interpret mode on the CPU. The export
test runs the Pallas -> Triton lowering for ``platforms=["cuda"]`` from this CPU machine
(SSM.md §5.3), so a GPU-breaking change is caught without a GPU. Interpret mode is slow: shapes
are tiny.
"""

from __future__ import annotations

import functools

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
    forward,
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
        *args_of(inputs), delta_softplus=True, interpret=True, block_d=2
    )
    y_r, last_r = forward("ref", True)(*args_of(inputs))
    assert_close("y", y, y_r, *TOL[jnp.float32])
    assert_close("last_state", last, last_r, *TOL[jnp.float32])


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
