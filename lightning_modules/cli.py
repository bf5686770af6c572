"""`specialize train`: train a network (`model.arch`, VGG16 by default) on one or more tasks from a YAML config with
`key=value` overrides; `specialize import`: a trained network's weights from elsewhere as a specialize checkpoint."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.cluster_job import ClusterJob
    from lightning_modules.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` and `import` subcommands."""
    register_import(subparsers)
    parser = subparsers.add_parser(
        "train",
        help="train a single- or multi-task network of any model.arch (Lightning; DDP over devices and nodes)",
        description="Train from a YAML config; a run directory that already holds a checkpoint is continued.",
    )
    parser.add_argument("--config", help="YAML training config, e.g. configs/tiny_face_object.yaml")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. trainer.epochs=5 data.dir=data/synth tasks=[face,object]",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest checkpoint, with its saved config",
    )
    parser.add_argument(
        "--print-config",
        nargs="?",
        const="",
        metavar="KEY",
        help="print the resolved config as YAML (or the value of one dotted KEY, or run_dir) and exit without training",
    )
    parser.set_defaults(run=run_train, job=train_job)


def register_import(subparsers: argparse._SubParsersAction) -> None:
    """Add the `import` subcommand."""
    from lightning_modules.architectures import ARCHITECTURES
    from lightning_modules.config import HEADS

    parser = subparsers.add_parser(
        "import",
        help="make a specialize checkpoint from trained weights (a torchvision-layout state dict) and class names",
        description="Read a state dict in torchvision's layout (.pth/.pt read as data only, or .safetensors) of one "
        "of the registry's architectures, and the class names of each task in output order; write a checkpoint "
        "that every analysis accepts. A tensor that does not fit is named in one line.",
    )
    parser.add_argument("--weights", required=True, help="the state dict: .pth, .pt or .safetensors")
    parser.add_argument("--arch", required=True, help=f"one of {', '.join(ARCHITECTURES)}")
    parser.add_argument(
        "--classes",
        action="append",
        default=[],
        metavar="TASK=FILE",
        help="a task and a file of its class names, one a line, in output order; repeat per task, tasks in output "
        "order",
    )
    parser.add_argument("--out", required=True, help="the checkpoint to write (.ckpt)")
    parser.add_argument("--width", type=float, help="the network's width (default: from its first conv, 64 x width)")
    parser.add_argument(
        "--heads", default="shared", help=f"{' or '.join(HEADS)}: how the output layer was trained (default: shared)"
    )
    parser.add_argument(
        "--resolution", type=int, default=224, help="input size the network was trained at (default: %(default)s)"
    )
    parser.set_defaults(run=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Write the checkpoint and say what it holds."""
    from common.typed_config import check_choice
    from lightning_modules.architectures import ARCHITECTURES
    from lightning_modules.config import HEADS

    check_choice("arch", args.arch, ARCHITECTURES)
    check_choice("heads", args.heads, HEADS)
    from lightning_modules.import_weights import import_weights

    out = import_weights(args.weights, args.arch, args.classes, args.out, args.width, args.heads, args.resolution)
    print(f"imported {args.arch} from {args.weights} -> {out}")
    return 0


def resolved_config(args: argparse.Namespace) -> TrainConfig:
    """The config the command trains: the file with its overrides, or a run directory's saved config."""
    from common.errors import UserError
    from lightning_modules.config import load_config, read_run_config

    if args.resume:
        if args.config:
            raise UserError("pass either --config or --resume RUN_DIR, not both; a resumed run keeps its saved config")
        return resumed_config(read_run_config(args.resume), args.resume, args.overrides)
    if args.config:
        return load_config(args.config, args.overrides)
    raise UserError("no config given; pass --config configs/<name>.yaml or --resume RUN_DIR")


def train_job(args: argparse.Namespace) -> ClusterJob:
    """A training job: processes over devices and nodes (Lightning DDP), each with its loader workers and itself as
    CPUs; a job of an array trains its seed into `<run name>-seed<N>`."""
    from common.cluster_job import ClusterJob
    from common.layout import SEED_SUFFIX

    config = resolved_config(args)
    return ClusterJob(
        data_dir=config.data.dir,
        data_setting="data.dir=",
        seed_settings=("seed=", f"output.run_name={config.run_dir.name}{SEED_SUFFIX}"),
        process_settings=("trainer.devices=", "trainer.num_nodes="),
        cpus_per_task=config.data.num_workers + 1,
    )


def run_train(args: argparse.Namespace) -> int:
    """Resolve the config (file + overrides, or a run directory's saved config) and train."""
    from lightning_modules.preemption import REQUEUE_EXIT_CODE, Preempted
    from lightning_modules.train import train

    config = resolved_config(args)
    if args.print_config is not None:
        print_config(config, args.print_config)
        return 0
    try:
        run_dir = train(config)
    except Preempted as stop:
        print(f"specialize train: {stop}", file=sys.stderr)
        return REQUEUE_EXIT_CODE
    print(f"run directory: {run_dir}")
    return 0


def resumed_config(saved: TrainConfig, run_dir: str, overrides: list[str]) -> TrainConfig:
    """A run directory's saved config, placed at that directory, with `overrides` applied (e.g. more epochs)."""
    from pathlib import Path

    from common.typed_config import apply_override
    from lightning_modules.config import config_from_dict

    data = saved.to_dict()
    run_path = Path(run_dir)
    data["output"].update(root=str(run_path.parent), run_name=run_path.name)
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data)


def print_config(config: TrainConfig, key: str) -> None:
    """Print the resolved config as YAML, or the value of one dotted key (or `run_dir`): a string as its bytes
    (so that cluster/launch.sh reads paths in any encoding), anything else as JSON."""
    import json
    import os

    import yaml

    from common.errors import UserError
    from common.output_dir import flatten

    if not key:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return
    values = {**flatten(config.to_dict()), "run_dir": str(config.run_dir)}
    if key not in values:
        raise UserError(f"--print-config {key}: no such config key; give a dotted key such as data.dir or run_dir")
    value = values[key]
    if isinstance(value, str):
        sys.stdout.flush()
        sys.stdout.buffer.write(os.fsencode(value) + b"\n")
    else:
        print(json.dumps(value))
