"""Next sweep proposed by experiments.hypotheses (widest relative CI x novelty among the top 5: h181a1531).

    python -m experiments.flowrl --config results/hypotheses/flowrl-harness_run_next_sweep.py:<cell> --workdir DIR
cells: cell0_seed5, cell0_seed6, cell0_seed7, cell1_seed5, cell1_seed6, cell1_seed7
"""

import importlib
import json

# cell name -> [experiment module, preset, {dotted field: value}]
CELLS = json.loads(
    """
{
 "cell0_seed5": [
  "flowrl",
  "arith_strong",
  {
   "progress": false,
   "rl.algo": "grpo",
   "rl.lr": 0.0001,
   "sft.cache_dir": "/work/runs/flowrl/lr/sft_cache",
   "task": "arithmetic",
   "seed": 5
  }
 ],
 "cell0_seed6": [
  "flowrl",
  "arith_strong",
  {
   "progress": false,
   "rl.algo": "grpo",
   "rl.lr": 0.0001,
   "sft.cache_dir": "/work/runs/flowrl/lr/sft_cache",
   "task": "arithmetic",
   "seed": 6
  }
 ],
 "cell0_seed7": [
  "flowrl",
  "arith_strong",
  {
   "progress": false,
   "rl.algo": "grpo",
   "rl.lr": 0.0001,
   "sft.cache_dir": "/work/runs/flowrl/lr/sft_cache",
   "task": "arithmetic",
   "seed": 7
  }
 ],
 "cell1_seed5": [
  "flowrl",
  "arith_strong",
  {
   "progress": false,
   "rl.algo": "ppo",
   "rl.lr": 0.0001,
   "sft.cache_dir": "/work/runs/flowrl/lr/sft_cache",
   "task": "arithmetic",
   "seed": 5
  }
 ],
 "cell1_seed6": [
  "flowrl",
  "arith_strong",
  {
   "progress": false,
   "rl.algo": "ppo",
   "rl.lr": 0.0001,
   "sft.cache_dir": "/work/runs/flowrl/lr/sft_cache",
   "task": "arithmetic",
   "seed": 6
  }
 ],
 "cell1_seed7": [
  "flowrl",
  "arith_strong",
  {
   "progress": false,
   "rl.algo": "ppo",
   "rl.lr": 0.0001,
   "sft.cache_dir": "/work/runs/flowrl/lr/sft_cache",
   "task": "arithmetic",
   "seed": 7
  }
 ]
}
"""
)


def get_config(cell):
    module, preset, overrides = CELLS[cell]
    c = importlib.import_module("experiments.configs." + module).get_config(preset)
    for dotted, value in overrides.items():
        *path, leaf = dotted.split(".")
        node = c
        for part in path:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"config field {dotted!r} does not exist in {module}:{preset}")
        node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value
    return c
