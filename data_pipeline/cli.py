"""`specialize data synth` (the embedded synthetic image folders), `specialize data build` (folders -> FFCV) and
`specialize data behaviour` (synthetic behavioural RDMs for RSA)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from common.errors import UserError
from common.wandb_runs import add_wandb_arguments
from data_pipeline.beton import WRITE_MODES, ImageEncoding
from data_pipeline.build import BuildSettings, ImageCounts
from data_pipeline.sources import SPLIT_MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command and its subcommands."""
    data = subparsers.add_parser("data", help="synthetic data and building FFCV data directories")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    _register_synth(commands)
    _register_build(commands)
    _register_behaviour(commands)


def _register_synth(commands: argparse._SubParsersAction) -> None:
    from data_pipeline.synth import SynthSettings

    defaults = SynthSettings()
    parser = commands.add_parser("synth", help="draw the synthetic face/object/food/car image folders")
    parser.add_argument("--out", required=True, help="output folder: OUT/<task>/{train,test,heldout}/<class>/<n>.jpg")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--classes-per-task", type=int, default=defaults.classes_per_task)
    parser.add_argument("--train-per-class", type=int, default=defaults.train_per_class)
    parser.add_argument(
        "--test-per-class", type=int, default=defaults.test_per_class, help="also the images per held-out class"
    )
    parser.add_argument("--heldout-classes", type=int, default=defaults.heldout_classes)
    parser.add_argument("--size", type=int, default=defaults.size, help="image side in pixels")
    tasks = ",".join(defaults.tasks)
    parser.add_argument("--tasks", default=tasks, help=f"comma-separated, from {tasks}")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.set_defaults(run=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Handler of `specialize data synth`."""
    from data_pipeline.synth import SynthSettings, generate

    settings = SynthSettings(
        seed=args.seed,
        tasks=tuple(t for t in args.tasks.split(",") if t),
        classes_per_task=args.classes_per_task,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        heldout_classes=args.heldout_classes,
        size=args.size,
    )
    generate(args.out, settings, args.workers)
    print(
        f"synth {args.out}: {len(settings.tasks)} tasks x {settings.classes_per_task} classes "
        f"({settings.train_per_class} train + {settings.test_per_class} test each) + "
        f"{settings.heldout_classes} held-out classes, {settings.size} px"
    )
    return 0


def _register_build(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("build", help="image folders of several tasks -> FFCV .beton files, pools, manifest")
    parser.add_argument(
        "--task",
        action="append",
        required=True,
        metavar="NAME=ROOT",
        help="a task and its image root (class folders, train/test folders, Food-101, or a CSV of "
        "path,class[,split]), repeatable; order = label order in pools (face first)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="the data directory to write (a rerun resumes it; one holding another build is refused)",
    )
    parser.add_argument(
        "--classes", action="append", metavar="[TASK=]N", help="number of classes per task (seeded choice; default all)"
    )
    parser.add_argument(
        "--class-list",
        action="append",
        metavar="[TASK=]FILE",
        help="text file of class names, one per line, in label order (e.g. another build's "
        "<task>/classes.txt); --exclude drops classes from it",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="[TASK=]FILE",
        help="text file of class names to leave out (e.g. object=configs/exclusions/"
        "imagenet_food_like.txt for the food and car pairs)",
    )
    defaults = BuildSettings()
    counts = defaults.counts
    parser.add_argument(
        "--train-per-class",
        dest="train",
        type=int,
        default=counts.train,
        help="at most this many train images per class (default: all left after test and validation)",
    )
    parser.add_argument(
        "--val-per-class",
        dest="val",
        type=int,
        default=counts.val,
        help="validation images per class, set aside from its training images; training watches "
        "them, never the test split (default: %(default)s)",
    )
    parser.add_argument(
        "--test-per-class",
        dest="test",
        type=int,
        default=counts.test,
        help="test images per class, from the root's own test split or drawn (default: %(default)s)",
    )
    parser.add_argument(
        "--heldout-classes",
        type=int,
        default=defaults.heldout_classes,
        help="classes per task kept out of training, for decoding (default: %(default)s)",
    )
    parser.add_argument(
        "--heldout-per-class",
        dest="heldout",
        type=int,
        default=counts.heldout,
        help="images per held-out class (default: all)",
    )
    parser.add_argument(
        "--split",
        default=defaults.split,
        help=f"{', '.join(SPLIT_MODES)}: the train/test split: the root's own (premade), seeded (re-splits a root's "
        "own split, e.g. Food-101's to 900/100 with --test-per-class 100), or premade when present "
        "(default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of class choice, split and file order")
    parser.add_argument(
        "--balance",
        action="store_true",
        help="trim all tasks to the same total number of train images (build one directory per pair)",
    )
    parser.add_argument(
        "--one-class",
        action="append",
        default=[],
        metavar="TASK",
        help="also build TASK1: TASK's images with all its classes merged into one (the "
        "faces-as-one-class control), and a pool with it in TASK's place; repeatable",
    )
    encoding = defaults.encoding
    parser.add_argument(
        "--max-resolution",
        type=int,
        default=encoding.max_resolution,
        help="longest image side stored (0 = keep; default: %(default)s)",
    )
    parser.add_argument("--jpeg-quality", type=int, default=encoding.jpeg_quality, help="(default: %(default)s)")
    parser.add_argument(
        "--write-mode",
        default=encoding.write_mode,
        help=f"{', '.join(WRITE_MODES)}: FFCV image storage: raw pixels, JPEG, or a proportion of each "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--compress-probability",
        type=float,
        default=encoding.compress_probability,
        help="JPEG share for --write-mode proportion (default: %(default)s)",
    )
    parser.add_argument(
        "--pool",
        action="append",
        metavar="T1+T2[+...]",
        help="pooled multi-task files to write, repeatable (default: one pool of all tasks in order)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    add_wandb_arguments(parser)
    parser.set_defaults(run=run_build)


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """Split NAME=VALUE; UserError when it is not of that form."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise UserError(f"{option} expects NAME=VALUE, got {text!r}")
    return name, value


def per_task_option(values: list[str] | None, tasks: list[str], option: str, convert: Callable = str):
    """[TASK=]VALUE options: None, one value for every task, or a task -> value mapping."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return _convert(values[0], option, convert)
    return {
        name: _convert(value, option, convert)
        for name, value in (parse_assignment(v, option) for v in values)
        if _known(name, tasks, option)
    }


def _known(task: str, tasks: list[str], option: str) -> bool:
    if task not in tasks:
        raise UserError(f"{option} names task {task!r}, which is not among --task ({', '.join(tasks)})")
    return True


def _convert(value: str, option: str, convert: Callable):
    try:
        return convert(value)
    except ValueError:
        raise UserError(f"{option} got {value!r}, which is not a valid value") from None


def run_build(args: argparse.Namespace) -> int:
    """Handler of `specialize data build`."""
    from data_pipeline.build import build_dataset, summary_line

    roots = dict(parse_assignment(text, "--task") for text in args.task)
    if len(roots) != len(args.task):
        raise UserError("a task is given twice in --task; name each task once")
    names = list(roots)
    settings = BuildSettings(
        classes=per_task_option(args.classes, names, "--classes", int),
        class_lists=per_task_option(args.class_list, names, "--class-list"),
        exclude=per_task_option(args.exclude, names, "--exclude"),
        counts=ImageCounts(test=args.test, val=args.val, train=args.train, heldout=args.heldout),
        heldout_classes=args.heldout_classes,
        split=args.split,
        seed=args.seed,
        balance=args.balance,
        one_class=tuple(args.one_class),
        encoding=ImageEncoding(
            write_mode=args.write_mode,
            max_resolution=args.max_resolution or None,
            jpeg_quality=args.jpeg_quality,
            compress_probability=args.compress_probability,
        ),
        pools=tuple(args.pool) if args.pool else None,
    )
    manifest = build_dataset(roots, args.out, settings, args.workers)
    print(summary_line(manifest, args.out))
    return 0


def _register_behaviour(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "behaviour",
        help="synthetic behavioural RDMs for RSA: participants = a planted RDM plus noise",
        description="Write a behaviour directory (stimuli.txt + one <participant>.npy RDM each) for the images of a "
        "stimulus list: each participant's RDM is the planted RDM (z-scored) plus Gaussian noise. Its "
        "stimuli.txt also serves as `specialize rsa --stimuli`.",
    )
    parser.add_argument("--stimuli", required=True, help="text file listing the stimulus images, one path per line")
    parser.add_argument("--out", required=True, help="the behaviour directory to write")
    parser.add_argument(
        "--plant",
        default="classes",
        metavar="classes|RDM_FILE",
        help="the planted RDM: 'classes' (0 within an image folder, 1 between) or an N x N .npy/.csv "
        "in the list's order, e.g. rdms/<network>/<layer>.npy of `specialize rsa` "
        "(default: %(default)s)",
    )
    from data_pipeline.synth_behaviour import BehaviourSettings

    defaults = BehaviourSettings()
    parser.add_argument(
        "--participants", type=int, default=defaults.participants, help="(default: %(default)s, the paper's face group)"
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=defaults.noise,
        help="noise sd relative to the planted RDM's sd (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.set_defaults(run=run_behaviour)


def run_behaviour(args: argparse.Namespace) -> int:
    """Handler of `specialize data behaviour`."""
    from data_pipeline.synth_behaviour import BehaviourSettings, generate_behaviour

    settings = BehaviourSettings(participants=args.participants, noise=args.noise, seed=args.seed)
    out = generate_behaviour(args.out, args.stimuli, None if args.plant == "classes" else args.plant, settings)
    print(f"behaviour {out}: {args.participants} participants; use --stimuli {out / 'stimuli.txt'} --behaviour {out}")
    return 0
