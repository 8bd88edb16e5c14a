"""The data-parallel helper on 4 emulated CPU devices (run in a subprocess: XLA_FLAGS must be
set before JAX starts, and the rest of the suite runs on one device)."""

import textwrap

from tests import devices

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from harness import parallel

    assert jax.device_count() == 4, jax.devices()
    mesh = parallel.make_mesh()
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (16, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    params = jnp.zeros(3)
    opt = optax.adam(0.1)

    def step(p, s, x, y):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((x @ p - y) ** 2))(p)
        u, s = opt.update(g, s)
        return optax.apply_updates(p, u), s, loss

    jstep = jax.jit(step)
    p1, s1, l1 = jstep(params, opt.init(params), x, y)          # one device
    xs, ys = parallel.shard_batch((x, y), mesh)
    pr = parallel.replicate(params, mesh)
    assert len(xs.sharding.device_set) == 4
    assert xs.addressable_shards[0].data.shape == (4, 3)
    p4, s4, l4 = jstep(pr, parallel.replicate(opt.init(params), mesh), xs, ys)
    np.testing.assert_allclose(p4, p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l4, l1, rtol=1e-5)
    assert p4.sharding.is_fully_replicated
    try:
        parallel.shard_batch(jnp.zeros((6, 2)), mesh)
    except ValueError as e:
        assert "divisible by 4" in str(e)
    else:
        raise AssertionError("expected ValueError")
    print("OK")
    """
)


def test_data_parallel_matches_single_device():
    out = devices.run_python(["-c", SCRIPT], devices=4, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout
