"""Next sweep proposed by experiments.hypotheses (widest relative CI x novelty among the top 5: h019b1075).

    python -m experiments.flowrl --config results/hypotheses/flowrl_next_sweep.py:<cell> --workdir DIR
cells: cell0_seed3, cell0_seed4, cell0_seed5, cell1_seed3, cell1_seed4, cell1_seed5
"""

import importlib
import json

# cell name -> [experiment module, preset, {dotted field: value}]
CELLS = json.loads(
    """
{
 "cell0_seed3": [
  "flowrl",
  "cpu",
  {
   "rl.algo": "hpt",
   "seed": 3
  }
 ],
 "cell0_seed4": [
  "flowrl",
  "cpu",
  {
   "rl.algo": "hpt",
   "seed": 4
  }
 ],
 "cell0_seed5": [
  "flowrl",
  "cpu",
  {
   "rl.algo": "hpt",
   "seed": 5
  }
 ],
 "cell1_seed3": [
  "flowrl",
  "cpu",
  {
   "rl.algo": "ppo",
   "seed": 3
  }
 ],
 "cell1_seed4": [
  "flowrl",
  "cpu",
  {
   "rl.algo": "ppo",
   "seed": 4
  }
 ],
 "cell1_seed5": [
  "flowrl",
  "cpu",
  {
   "rl.algo": "ppo",
   "seed": 5
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
