"""The LM trainer on 4 emulated CPU devices equals one device (issue 23): one update with the
batch split over "data" (parameters replicated), and with FSDP (parameters and AdamW state split
over "data"); a batch or mesh the devices cannot hold is a ConfigError before anything compiles.

One subprocess does every comparison: XLA_FLAGS must be set before JAX starts, and the rest of
the suite runs on one device.
"""

import os
import textwrap

from tests import devices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent(
    """
    import logging, tempfile
    import jax, numpy as np
    import harness
    from experiments.configs import ssm as configs
    from ssm import train

    assert jax.device_count() == 4, jax.devices()

    def config(**parallel):
        c = configs.get_config("smoke")
        c.train.batch_size = 8
        c.train.steps_per_update = 2
        c.parallel.update(parallel)
        return c

    def one_update(c):
        train.validate_config(c)
        task = train.make_task(c)
        model = train.make_model(c, task)
        opt = train.make_optimizer(c)
        mesh = harness.parallel.mesh_from_config(c)
        fsdp = c.parallel.fsdp
        state = train.make_init(model, opt, mesh, fsdp)(jax.random.PRNGKey(0))
        update = train.make_update(model, task, opt, 8, 2, mesh, fsdp)
        new, metrics = update(state)
        hlo = update.jitted.lower(state).as_text()
        return state, new, jax.device_get(metrics), hlo

    _, ref, m_ref, _ = one_update(config(mesh_shape=(1,)))
    assert len(jax.tree.leaves(ref.params)[0].sharding.device_set) == 1
    for fsdp in (False, True):
        start, new, m, hlo = one_update(config(mesh_shape=(4,), fsdp=fsdp))
        # each step's batch (inputs, targets, mask: [8, T]) is split over "data"
        assert hlo.count('<@mesh, [{"data"}, {}]> : tensor<8x') == 3, hlo[-3000:]
        for k in m_ref:
            np.testing.assert_allclose(m[k], m_ref[k], rtol=1e-5, err_msg=k)
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        for tree in (start.params, new.params, new.opt_state):
            leaves = jax.tree.leaves(tree)
            assert all(len(x.sharding.device_set) == 4 for x in leaves)
            split = [x for x in leaves if "data" in x.sharding.spec]
            if fsdp:
                # every leaf with a dimension divisible by 4 is split on its largest such one
                assert split and all(x.addressable_shards[0].data.size * 4 == x.size
                                     for x in split), [x.sharding.spec for x in leaves]
                assert len(split) == sum(any(d % 4 == 0 for d in x.shape) for x in leaves)
            else:
                assert not split and all(x.sharding.is_fully_replicated for x in leaves)
        print("fsdp", fsdp, "ok", {k: float(m[k]) for k in m})

    compiles = []
    class Count(logging.Handler):
        def emit(self, record):
            if "Compiling" in record.getMessage():
                compiles.append(record.getMessage())
    logging.getLogger("jax").addHandler(Count())
    jax.config.update("jax_log_compiles", True)
    for bad, text in [
        (dict(mesh_shape=(4,)), "config.train.batch_size=6 cannot be split over the 4 devices"),
        (dict(mesh_shape=(8,)), "needs 8 devices; 4 exist"),
        (dict(mesh_shape=(4,), axis_names=("seed",)), "must hold 'data'"),
    ]:
        c = config(**bad)
        c.train.batch_size = 6
        workdir = tempfile.mkdtemp()
        try:
            train.train_and_evaluate(c, workdir)
        except harness.ConfigError as err:
            assert text in str(err), str(err)
        else:
            raise AssertionError(f"{bad}: expected ConfigError")
        assert not os.path.exists(os.path.join(workdir, "checkpoints"))
    assert not compiles, compiles
    print("OK")
    """
)


def test_lm_update_on_4_devices_equals_one_device():
    out = devices.run_python(["-c", "import os\n" + SCRIPT], devices=4, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout, out.stdout[-2000:]
