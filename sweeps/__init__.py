"""Lesion sweeps: what a lesion is, the exact fast engine, the Ray-distributed sweep and filter rankings.

- `lesions`: a lesion (a filter's output map zeroed after its ReLU) as forward hooks;
- `engine`: the fast, exact sweep of every filter (`lesion_sweep`), built on `layer_split`, `memory_plan`,
  `stimuli` and `devices`; `reference`: the naive definition it is held to;
- `distributed`: the sweep of a trained checkpoint fanned out over Ray (`run_sweep`), resumable;
- `ranking`: one-shot and greedy filter rankings; `settings`: the sweep's settings and defaults; `cli`: `specialize
  lesion`.
"""
