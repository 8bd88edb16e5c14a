"""Install script for the adarl / ssm / flowrl research codebase.

Version bounds are the ranges this repository was tested with (see README, "Tested with").

* JAX is held below 0.11: the selective-scan Pallas kernel (``ssm/pallas_scan.py``) lowers
  through the Pallas Triton backend, which JAX deprecates from 0.11 on (the kernels pass
  Triton ``CompilerParams`` explicitly and use only APIs documented for 0.11, but have not run
  on 0.11; see docs_proposals/i16-scan.md). JAX 0.10 removed
  ``jax.device_put_replicated``, which brax 0.14's training agents still call; we never call
  brax's trainers on the library path, and ``benchmarks/sac.py`` carries a small shim for it.
* MuJoCo / MJX / Playground are tested at mujoco 4.0, mujoco-mjx 3.17 and playground 0.2;
  gymnasium 1.4.0 supplies the Gym MuJoCo XML of the ``*_gym`` tasks (``adarl/gym_tasks.py``);
  the ``test`` extra adds imageio so that the tests can run ``gymnasium.make("Hopper-v5")``.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.10,<0.11",
    "jaxlib>=0.10,<0.11",
    "flax>=0.12,<0.13",
    "optax>=0.2.8,<0.3",
    "chex>=0.1.90,<0.2",
    "brax>=0.14,<0.15",
    "mujoco>=3.3,<5",
    "mujoco-mjx>=3.3,<4",
    "gymnasium>=1.4,<2",  # its MuJoCo v5 XML (tested at 1.4.0); no gymnasium[mujoco] extra
    "playground>=0.2,<0.3",
    "orbax-checkpoint>=0.12,<0.13",
    "ml-collections>=1.1,<2",
    "absl-py>=2.1",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "tensorboardX>=2.6",
    "numpy>=1.26",
    "scipy>=1.12",
    "evosax>=0.2,<0.4",
    # hypotheses/ (issue 20): tables, tests, relation graph
    "pandas>=2.2,<4",
    "statsmodels>=0.14,<0.16",
    "networkx>=3.2,<4",
    # opera/ (issue 19): BM25 and a flat inner-product vector index
    "rank-bm25>=0.2.2,<0.3",
    "faiss-cpu>=1.8,<2",
]

EXTRAS = {
    # imageio: gymnasium.make("Hopper-v5") imports it (gymnasium[mujoco]); the *_gym fidelity
    # tests step Gymnasium's env beside ours.
    "test": ["pytest>=8", "ruff>=0.6", "imageio>=2.14"],
    "notebooks": ["jupyter", "jupytext>=1.16", "ipywidgets"],
    # CUDA 12 wheels of jaxlib, matched to the JAX bound above.
    "gpu": ["jax[cuda12]>=0.10,<0.11"],
}

setup(
    name="adarl-ssm-flowrl",
    version="0.1.0",
    description="AdaRL (adaptive low-rank robust RL), selective-scan SSMs and FlowRL in JAX",
    python_requires=">=3.10",
    packages=find_packages(
        include=[
            "harness*",
            "adarl*",
            "ssm*",
            "flowrl*",
            "hypotheses*",
            "opera*",
            "vla*",
            "experiments*",
            "benchmarks*",
        ]
    ),
    package_data={"adarl": ["assets/*.xml"], "hypotheses": ["prior.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
