"""Lesion sweeps and evaluations: what a lesion is, the exact fast engines, the Ray-distributed sweep and rankings.

- `lesions`: a lesion (a filter's output map zeroed after its ReLU) as forward hooks;
- `engine`: the fast, exact sweep of every filter (`lesion_sweep`; per class: `class_lesion_sweep`, whose table
  `class_totals` ranks any grouping of the classes), built on `layer_split`, `memory_plan`, `stimuli` and `devices`;
- `evaluation`: every image's answers under many lesions (layers, tasks, fractions, control partitions) from one
  pass of the intact network per batch (`evaluate_lesions`); `cost_model`: multiply-adds of the passes;
- `reference`: the naive definitions both engines are held to;
- `distributed`: the sweep of a trained checkpoint fanned out over Ray (`run_sweep`), resumable;
- `ranking`: one-shot and greedy filter rankings; `settings`: the sweep's settings and defaults; `cli`: `specialize
  lesion`.
"""
