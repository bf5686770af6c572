"""The Python API: the functions behind the `specialize` commands, from one module (worked example: docs/API.md).

Each function is the command's own code: it writes the same stage directory (config.json, results, manifest.json
last), resumes after a kill and returns a finished stage's results without redoing them. Settings are frozen
dataclasses whose defaults are the commands' defaults.

    generate_synthetic(out, SynthSettings(...))                      `specialize data synth`
    build_dataset({task: root}, out, BuildSettings(...))             `specialize data build`
    load_config(path, overrides) -> TrainConfig; train(config)       `specialize train` -> the run directory
    load_model(checkpoint) -> LoadedModel                            a trained network, its config and label space
    run_sweep(checkpoint, data_dir, out, SweepSettings(...))         `specialize lesion` -> SweepResult
    run_segregation(sweep_dir, out, data_dir, SegregationSettings(...))   `specialize segregation` -> summary
    extract_activations, run_decoding, run_rsa, run_visualize        `specialize activations`, `decode`, `rsa`,
                                                                     `visualize` (networks as Network(name, ckpt))
    load_study(path), run_study(study)                               `specialize study`
    write_report(root)                                               `specialize report`

W&B: inside `logging_to(WandbTarget(project, ...))` every stage logs its run, with lineage (`common.wandb_runs`);
a training run logs where its config's `wandb` section says.
"""

from __future__ import annotations

from analysis.report.build import write_report
from analysis.representations.activations import Network, extract_activations
from analysis.representations.decoding import run_decoding
from analysis.representations.rsa import run_rsa
from analysis.representations.settings import ActivationSettings, DecodingSettings, RSASettings, VisualizeSettings
from analysis.representations.visualize import run_visualize
from analysis.segregation.run import run_segregation
from analysis.segregation.settings import SegregationSettings
from common.errors import SettingError, UserError
from common.ray_runner import Resources
from common.wandb_runs import WandbTarget, logging_to
from data_pipeline.build import BuildSettings, ImageCounts, build_dataset
from data_pipeline.data_dir import DataDir
from data_pipeline.synth import SynthSettings
from data_pipeline.synth import generate as generate_synthetic
from lightning_modules.checkpoint import LoadedModel, load_model
from lightning_modules.config import TrainConfig, load_config
from lightning_modules.train import train
from specialize.study import run_study
from specialize.study_config import StudyConfig, load_study
from sweeps.distributed import SweepResult, run_sweep
from sweeps.settings import SweepSettings

__all__ = [
    "ActivationSettings",
    "BuildSettings",
    "DataDir",
    "DecodingSettings",
    "ImageCounts",
    "LoadedModel",
    "Network",
    "RSASettings",
    "Resources",
    "SegregationSettings",
    "SettingError",
    "StudyConfig",
    "SweepResult",
    "SweepSettings",
    "SynthSettings",
    "TrainConfig",
    "UserError",
    "VisualizeSettings",
    "WandbTarget",
    "build_dataset",
    "extract_activations",
    "generate_synthetic",
    "load_config",
    "load_model",
    "load_study",
    "logging_to",
    "run_decoding",
    "run_rsa",
    "run_segregation",
    "run_study",
    "run_sweep",
    "run_visualize",
    "train",
    "write_report",
]
