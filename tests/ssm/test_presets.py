"""Size presets reproduce the published Mamba / Mamba-2 shapes: parameter counts from an
independent closed-form count, and close to the names' nominal sizes."""

import math

import pytest

from ssm import lm

V = 50280  # 50277 padded to a multiple of 8


def _mamba_count(d, n_layers, N=16, expand=2, d_conv=4):
    di, R = expand * d, math.ceil(d / 16)
    layer = (d * 2 * di + di * d_conv + di + di * (R + 2 * N) + R * di + di + di * N + di
             + di * d + d)  # fmt: skip
    return V * d + n_layers * layer + d


def _mamba2_count(d, n_layers, N=128, expand=2, headdim=64, d_conv=4):
    di = expand * d
    h, conv_dim = di // headdim, di + 2 * N
    layer = d * (2 * di + 2 * N + h) + conv_dim * (d_conv + 1) + 3 * h + di + di * d + d
    return V * d + n_layers * layer + d


NOMINAL = {"130m": 130e6, "370m": 370e6, "790m": 790e6, "780m": 780e6, "1.4b": 1.4e9,
           "1.3b": 1.3e9, "2.8b": 2.8e9, "2.7b": 2.7e9}  # fmt: skip
FAST = ["mamba-130m", "mamba2-130m"]
SLOW = [n for n in lm.SIZE_PRESETS.names() if n not in FAST]


def _check(name):
    cfg = lm.preset(name)
    fn = _mamba_count if cfg.layer == "mamba" else _mamba2_count
    want = fn(cfg.d_model, cfg.n_layers)
    got = lm.count_params(cfg)
    assert got == want
    assert abs(got / NOMINAL[name.split("-")[1]] - 1) < 0.06, got


@pytest.mark.parametrize("name", FAST)
def test_small_presets_match_the_published_count(name):
    _check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_all_presets_match_the_published_count(name):
    _check(name)


def test_mamba_130m_is_129m_parameters():
    # 24 x 3,771,648 per block + 50280 x 768 tied embedding + final norm
    assert _mamba_count(768, 24) == 129_135_360


def test_preset_overrides_and_unknown_name():
    assert lm.preset("mamba-130m", dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValueError, match="mamba-130m"):
        lm.preset("mamba-7b")
