"""FSDP placement rule (harness.parallel.fsdp_spec / fsdp_shardings) and the one-device check of
trainers that are not sharded; pure functions, so one device suffices."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

import harness
from experiments.configs import opera as opera_configs
from experiments.configs import vla as vla_configs
from harness import parallel


@pytest.mark.parametrize(
    ("shape", "spec"),
    [
        ((16, 64), P(None, "data")),  # the largest divisible axis
        ((64, 16), P("data", None)),
        ((8, 8), P("data", None)),  # a tie: the first
        ((12, 10), P("data", None)),  # 12 is the only axis divisible by 4
        ((10, 6), P()),  # none divisible: replicated
        ((4,), P("data")),
        ((2,), P()),  # smaller than the axis
        ((), P()),  # scalars (step counters)
        ((3, 8, 40), P(None, None, "data")),
    ],
)
def test_fsdp_spec_splits_the_largest_divisible_axis(shape, spec):
    assert parallel.fsdp_spec(shape, 4) == spec


def test_fsdp_spec_on_one_device_replicates_everything():
    assert parallel.fsdp_spec((16, 64), 1) == P()


def test_fsdp_shardings_maps_a_tree_of_arrays_and_shapes():
    mesh = parallel.make_mesh(1, parallel.DATA_AXIS)
    tree = {"w": jnp.zeros((4, 8)), "b": jax.ShapeDtypeStruct((8,), jnp.float32), "n": 3}
    out = parallel.fsdp_shardings(tree, mesh)
    assert jax.tree.structure(out) == jax.tree.structure(tree)
    assert all(s.mesh == mesh and s.spec == P() for s in jax.tree.leaves(out))
    assert parallel.param_shardings(tree, mesh, fsdp=False)["w"].spec == P()


@pytest.mark.parametrize("module", [opera_configs, vla_configs])
def test_unsharded_trainers_accept_one_device_and_reject_fsdp(module):
    config = module.get_config("smoke")
    parallel.check_one_device(config, "X")  # the presets' mesh: one device
    config.parallel.fsdp = True
    with pytest.raises(harness.ConfigError, match=r"the X trainer runs on one device"):
        parallel.check_one_device(config, "X")
    config.parallel.fsdp = False
    config.parallel.mesh_shape = (len(jax.devices()) + 1,)
    with pytest.raises(harness.ConfigError, match="config.parallel.mesh_shape"):
        parallel.check_one_device(config, "X")


def test_opera_and_vla_validators_reject_a_sharded_mesh():
    from opera import train as opera_train  # imported here: MJX and BM25 are slow imports
    from vla import train as vla_train

    for module, validate, name in [
        (opera_configs, opera_train.validate, "OPERA"),
        (vla_configs, vla_train.validate_config, "VLA"),
    ]:
        config = module.get_config("smoke")
        validate(config)
        config.parallel.fsdp = True
        with pytest.raises(harness.ConfigError, match=f"the {name} trainer runs on one device"):
            validate(config)
