"""adarl.loaders: one policy loader per registered algorithm; registries independent of imports."""

import json
import subprocess
import sys

import pytest

from adarl import loaders, rnac, train


def test_every_registered_algorithm_has_a_loader():
    assert set(loaders.LOADERS) == set(train.ALGOS) | set(rnac.ALGOS)
    assert loaders.LOADERS.get("adarl") is loaders.LOADERS.get("sac")
    assert loaders.LOADERS.get("rnac_ds") is rnac.load_policies


def test_unknown_algo_or_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory"):
        loaders.load_run(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"algo": "dqn"}))
    with pytest.raises(ValueError, match="registered"):
        loaders.load_run(str(tmp_path))


def test_windtunnel_sampler_is_registered_without_importing_the_windtunnel():
    code = (
        "import sys; from adarl import dynamics; "
        "assert 'windtunnel' in dynamics.SAMPLERS.names(); "
        "assert 'adarl.windtunnel' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
