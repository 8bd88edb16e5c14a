"""adarl.running_stats: the one normaliser of SAC/AdaRL and PPO/RNAC."""

import jax.numpy as jnp
import numpy as np

from adarl import running_stats as rs


def test_batched_updates_match_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, (50, 3)).astype(np.float32)
    stats = rs.init((3,))
    for chunk in np.split(x, 5):
        stats = rs.update(stats, jnp.asarray(chunk))
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.m2 / stats.count, x.var(0), rtol=1e-4)
    np.testing.assert_allclose(rs.std(stats), x.std(0), rtol=1e-4)
    z = np.asarray(rs.normalize(stats, jnp.asarray(x)))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-4)


def test_rule_identity_until_two_samples_variance_floor_and_clip():
    x = jnp.asarray([[50.0, -0.5]])
    one = rs.update(rs.init((2,)), x)
    # One sample: the input passes through (clipped to ±10).
    np.testing.assert_allclose(rs.normalize(one, x), [[10.0, -0.5]])
    # A constant feature has variance 0: the std is floored at sqrt(1e-6), not divided by 0.
    const = rs.update(rs.init(()), jnp.full((4,), 2.0))
    np.testing.assert_allclose(rs.std(const), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(rs.normalize(const, jnp.asarray(2.0005)), 0.5, rtol=1e-3)
    np.testing.assert_allclose(rs.normalize(const, jnp.asarray(3.0)), 10.0)
