"""`specialize data build`: image folders of several tasks -> FFCV .beton files per task and split, pools, manifest.

Steps: check the output folder (a folder that holds another build is refused); discover each root's source format
(sources.py); draw held-out and training classes (count, list file, exclusions; seeded) among the classes with enough
readable images, decoding the files of each class considered once, in parallel (images.py), so that the counts
asked for are the counts given or the build stops with a clear error; split each class into train/val/test (the
test images from the root's pre-made split or a seeded one, the validation images from the class's training images)
and cap training images per class; optionally balance tasks by total train images; add one-class variants (the
faces-as-one-class control); write per-task and pooled .beton files (beton.py; resumable, atomic); write
manifest.json and config.json.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from common.errors import UserError
from common.io import atomic_path, read_json, read_state_json
from common.output_dir import check_output_path
from common.pools import fork_pool
from common.stage import StageDir
from common.typed_config import check_at_least, check_choice
from common.wandb_runs import StageLog, data_artifact
from data_pipeline.beton import STATE_FILE, ImageEncoding, Item, write_all
from data_pipeline.images import check_image
from data_pipeline.label_space import LabelSpace
from data_pipeline.sources import SPLIT_MODES, SourceTree, discover, readable

T = TypeVar("T")
PerTask = T | Mapping[str, T]
TASK_SPLITS = ("train", "val", "test")  # a task's splits over its training classes; held-out classes apart
POOL_SPLITS = TASK_SPLITS
ONE_CLASS_SUFFIX = "1"  # --one-class face adds the task face1


@dataclass(frozen=True)
class ImageCounts:
    """Images per class a build asks for. Test and validation counts are exact (a class that cannot give them is
    not drawn); training images are all the rest, or at most `train`; held-out classes give `heldout` images each
    (None: all their readable images)."""

    test: int = 50
    val: int = 10
    train: int | None = None
    heldout: int | None = None

    def __post_init__(self) -> None:
        for key in ("test", "val", "train", "heldout"):
            check_at_least(key, getattr(self, key), 1)

    def training_shortfall(self, readable_by_split: Mapping[str, int], premade: bool) -> str | None:
        """Why a class with these readable images per split cannot be a training class, or None when it can."""
        if premade:
            test, train = readable_by_split.get("test", 0), readable_by_split.get("train", 0)
            if test < self.test:
                return f"{test} readable test images, {self.test} needed (--test-per-class)"
            if train < self.val + 1:
                return f"{train} readable training images, {self.val + 1} needed (--val-per-class + 1)"
            return None
        total, needed = sum(readable_by_split.values()), self.test + self.val + 1
        return (
            None
            if total >= needed
            else f"{total} readable images, {needed} needed (--test-per-class + --val-per-class + 1 for training)"
        )

    def heldout_shortfall(self, readable_by_split: Mapping[str, int]) -> str | None:
        """Why a class with these readable images cannot be a held-out class, or None when it can."""
        total, needed = sum(readable_by_split.values()), self.heldout or 1
        return None if total >= needed else f"{total} readable images, {needed} needed (--heldout-per-class)"


@dataclass(frozen=True)
class BuildSettings:
    """What a build draws and writes from its roots (a value per task, or one for every task, where it says
    PerTask). Every setting changes what is built."""

    classes: int | dict[str, int] | None = None  # classes per task, a seeded choice (default: all)
    class_lists: str | dict[str, str] | None = None  # text files of class names in label order
    exclude: str | dict[str, str] | None = None  # text files of class names to leave out
    counts: ImageCounts = field(default_factory=ImageCounts)
    heldout_classes: int = 0  # classes per task kept out of training, for decoding
    split: str = "auto"  # the root's own train/test split (premade), a seeded one, or premade when present
    seed: int = 0  # of class choice, split and file order
    balance: bool = False  # trim all tasks to the same total number of train images
    one_class: tuple[str, ...] = ()  # tasks also built with all their classes merged into one
    encoding: ImageEncoding = field(default_factory=ImageEncoding)
    pools: tuple[str, ...] | None = None  # pooled multi-task files, "face+object" (default: one of all tasks)

    def __post_init__(self) -> None:
        check_choice("split", self.split, SPLIT_MODES)
        check_at_least("heldout_classes", self.heldout_classes, 0)


@dataclass
class TaskPlan:
    """Everything decided for one task before writing: classes, held-out classes and the items of each split.
    A one-class variant (`merged_from` its task) holds that task's images with every label 0."""

    name: str
    tree: SourceTree
    split_mode: str
    classes: list[str]
    heldout_classes: list[str]
    splits: dict[str, list[Item]]
    merged_from: str | None = None


@dataclass
class ClassChoice:
    """The classes drawn for one task, and the classes considered but passed over (name -> reason)."""

    classes: list[str]
    heldout: list[str]
    passed_over: dict[str, str] = field(default_factory=dict)


class FileChecker:
    """Decodes candidate files on demand, each once (in parallel over `workers` processes), and remembers which are
    usable, which are skipped (with the reason) and which were converted (with a note)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.valid: set[str] = set()
        self.skipped: list[dict[str, str]] = []
        self.converted: list[dict[str, str]] = []
        self._checked: set[str] = set()

    def check(self, paths: Iterable[str]) -> None:
        """Decode the files among `paths` not checked yet."""
        todo = sorted(set(paths) - self._checked)
        if not todo:
            return
        self._checked.update(todo)
        checks = tqdm(self._decode(todo), total=len(todo), desc="checking images", unit="img", disable=None)
        for path, reason, note in checks:
            if reason is not None:
                self.skipped.append({"path": readable(path), "reason": reason})
                continue
            self.valid.add(path)
            if note is not None:
                self.converted.append({"path": readable(path), "conversion": note})

    def _decode(self, paths: list[str]) -> Iterator[tuple[str, str | None, str | None]]:
        if self.workers == 1 or len(paths) == 1:
            yield from map(check_image, paths)
            return
        with fork_pool(min(self.workers, len(paths))) as pool:
            yield from pool.imap(check_image, paths, chunksize=32)

    def readable_counts(self, files: Mapping[str, list[str]]) -> dict[str, int]:
        """Readable files per split of one class (decoding them first if needed)."""
        self.check(path for paths in files.values() for path in paths)
        return {split: sum(path in self.valid for path in paths) for split, paths in files.items()}


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A random generator for (seed, names...), stable across runs."""
    return np.random.default_rng([seed, *(zlib.crc32(key.encode("utf-8", "surrogateescape")) for key in keys)])


def _for_task(value: PerTask[T], task: str) -> T | None:
    """A per-task option: the mapping's entry for `task`, or the single value given for every task."""
    return value.get(task) if isinstance(value, Mapping) else value


def read_name_list(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line; blank lines and '#' comments ignored."""
    try:
        lines = Path(path).read_text(errors="backslashreplace").splitlines()
    except OSError as error:
        raise UserError(f"cannot read class list {path} ({error.strerror}); give an existing text file") from None
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def draw_classes(
    order: Sequence[str],
    count: int | None,
    shortfall: Callable[[str], str | None],
    prefetch: Callable[[Sequence[str]], None],
) -> tuple[list[str], dict[str, str]]:
    """The first `count` classes of `order` (all when None) that `shortfall` accepts, and the reasons of those passed
    over on the way. Classes are examined in batches (`prefetch` decodes a batch's files in one parallel pass), as
    many as are still needed, so the result is the same as examining them one by one."""
    chosen: list[str] = []
    passed_over: dict[str, str] = {}
    position = 0
    while position < len(order) and (count is None or len(chosen) < count):
        batch = order[position : len(order) if count is None else position + count - len(chosen)]
        position += len(batch)
        prefetch(batch)
        for name in batch:
            reason = shortfall(name)
            if reason is None:
                chosen.append(name)
            else:
                passed_over[name] = reason
    return chosen, passed_over


def _shuffled(names: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Names (sorted first, so the order depends on the seed only) in a seeded random order."""
    ordered = sorted(names)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def select_classes(
    task: str,
    tree: SourceTree,
    checker: FileChecker,
    *,
    count: int | None,
    class_list: str | None,
    exclude: str | None,
    heldout: int,
    counts: ImageCounts,
    split_mode: str,
    seed: int,
) -> ClassChoice:
    """Training classes (in label order) and held-out classes of one task: seeded draws among the classes with enough
    readable images, never overlapping; UserError when fewer classes than asked for qualify."""
    excluded = set(read_name_list(exclude)) if exclude else set()
    candidates = [name for name in tree.classes if name not in excluded]
    listed = read_name_list(class_list) if class_list else []
    missing = [name for name in listed if name not in tree.classes]
    if missing:
        raise UserError(
            f"task {task}: {len(missing)} class(es) in {class_list} are not in {tree.root} "
            f"(first: {missing[0]}); fix the list"
        )
    passed_over = {name: f"excluded by {exclude}" for name in listed if name in excluded}
    listed = [name for name in listed if name not in excluded]

    def prefetch(names: Sequence[str]) -> None:
        checker.check(path for name in names for paths in tree.class_files(name).values() for path in paths)

    def training_shortfall(name: str) -> str | None:
        return counts.training_shortfall(checker.readable_counts(tree.class_files(name)), split_mode == "premade")

    pool = [name for name in (tree.heldout_pool or candidates) if name not in excluded and name not in listed]
    _check_class_counts(task, tree, count, heldout, len(candidates), len(pool))
    heldout_classes, passed_heldout = draw_classes(
        _shuffled(pool, _rng(seed, task, "heldout")),
        heldout,
        lambda name: counts.heldout_shortfall(checker.readable_counts(tree.class_files(name))),
        prefetch,
    )
    passed_over.update(passed_heldout)
    if len(heldout_classes) < heldout:
        raise UserError(
            f"task {task}: asked for {heldout} held-out classes but only {len(heldout_classes)} of the "
            f"{len(pool)} classes left for them have enough readable images; lower --heldout-classes "
            "or --heldout-per-class"
        )
    if class_list:
        return ClassChoice(
            _listed_classes(task, class_list, listed, prefetch, training_shortfall),
            sorted(heldout_classes),
            passed_over,
        )
    remaining = [name for name in candidates if name not in heldout_classes]
    order = sorted(remaining) if count is None else _shuffled(remaining, _rng(seed, task, "classes"))
    classes, passed = draw_classes(order, count, training_shortfall, prefetch)
    passed_over.update(passed)
    if not classes or (count is not None and len(classes) < count):
        example = next(iter(passed.items()), ("", "none left"))
        raise UserError(
            f"task {task}: asked for {count or 'all'} classes but {len(classes)} of the {len(remaining)} "
            f"classes besides the {heldout} held out have enough readable images (e.g. {example[0]}: "
            f"{example[1]}); lower --classes, --test-per-class or --val-per-class"
        )
    return ClassChoice(sorted(classes), sorted(heldout_classes), passed_over)


def _listed_classes(
    task: str,
    class_list: str,
    listed: list[str],
    prefetch: Callable[[Sequence[str]], None],
    shortfall: Callable[[str], str | None],
) -> list[str]:
    """The classes of a list file (less exclusions), in its order; UserError when one cannot give the images asked
    for."""
    if not listed:
        raise UserError(f"task {task}: every class of {class_list} is excluded; fix the list or the exclusions")
    prefetch(listed)
    short = next(((name, reason) for name in listed if (reason := shortfall(name))), None)
    if short:
        raise UserError(
            f"task {task}: class {short[0]} of {class_list} has {short[1]}; drop it from the list "
            "or lower --test-per-class or --val-per-class"
        )
    return listed


def _check_class_counts(
    task: str, tree: SourceTree, count: int | None, heldout: int, candidates: int, pool: int
) -> None:
    """UserError, before any image is decoded, when the root has fewer classes than asked for."""
    if heldout > pool:
        raise UserError(
            f"task {task}: asked for {heldout} held-out classes but only {pool} classes are left for them; "
            "lower --heldout-classes"
        )
    usable = candidates - (0 if tree.heldout_pool else heldout)
    if count is not None and count > usable:
        raise UserError(
            f"task {task}: asked for {count} classes but {tree.root} has {usable} usable classes besides "
            f"the {heldout} held out; lower --classes or --heldout-classes"
        )


def _readable_shuffled(
    files: Mapping[str, list[str]], valid: set[str], rng: np.random.Generator, *splits: str
) -> list[str]:
    """The usable files of the given splits (all when none given), in a seeded random order."""
    paths = sorted(path for split in (splits or files) for path in files.get(split, []) if path in valid)
    return [paths[i] for i in rng.permutation(len(paths))]


def split_class(
    files: Mapping[str, list[str]], valid: set[str], rng: np.random.Generator, split_mode: str, counts: ImageCounts
) -> dict[str, list[str]]:
    """A class's train, val and test files: `counts.test` test images (from the pre-made test split, or drawn), then
    `counts.val` validation images drawn from the training images, the rest (at most `counts.train`) for training."""
    if split_mode == "premade":
        train = _readable_shuffled(files, valid, rng, "train")
        test = _readable_shuffled(files, valid, rng, "test")[: counts.test]
    else:
        pooled = _readable_shuffled(files, valid, rng)
        test, train = pooled[: counts.test], pooled[counts.test :]
    val, train = train[: counts.val], train[counts.val :]
    return {"train": sorted(train[: counts.train]), "val": sorted(val), "test": sorted(test)}


def _resolve_split_mode(task: str, tree: SourceTree, split: str) -> str:
    """'premade' or 'seed' for this root, given the user's choice (auto picks premade when the root has one)."""
    if split == "premade" and not tree.premade_split:
        raise UserError(
            f"task {task}: {tree.root} has no pre-made train/test split (format {tree.format}); "
            "use --split seed or auto"
        )
    if split == "auto":
        return "premade" if tree.premade_split else "seed"
    return split


def plan_task(
    task: str,
    tree: SourceTree,
    choice: ClassChoice,
    valid: set[str],
    *,
    split_mode: str,
    seed: int,
    counts: ImageCounts,
) -> TaskPlan:
    """Split each chosen class and label the items (local labels: the class's index in the sorted class list)."""
    by_class = {
        name: split_class(tree.class_files(name), valid, _rng(seed, task, name), split_mode, counts)
        for name in choice.classes
    }
    heldout_files = {
        name: sorted(_readable_shuffled(tree.class_files(name), valid, _rng(seed, task, name))[: counts.heldout])
        for name in choice.heldout
    }
    splits = {
        split: [Item(path, label) for label, files in enumerate(by_class.values()) for path in files[split]]
        for split in TASK_SPLITS
    }
    splits["heldout"] = [Item(path, label) for label, files in enumerate(heldout_files.values()) for path in files]
    return TaskPlan(task, tree, split_mode, list(by_class), list(heldout_files), splits)


def one_class_plan(plan: TaskPlan) -> TaskPlan:
    """The one-class variant of a task (METHOD's faces-as-one-class control): the same train/val/test images, all
    with label 0 in a single class named after the task; no held-out classes."""
    splits = {split: [Item(item.path, 0) for item in plan.splits[split]] for split in TASK_SPLITS}
    return TaskPlan(
        plan.name + ONE_CLASS_SUFFIX,
        plan.tree,
        plan.split_mode,
        [plan.name],
        [],
        {**splits, "heldout": []},
        merged_from=plan.name,
    )


def balance_train(plans: Sequence[TaskPlan]) -> None:
    """Trim every task's train split to the smallest task's total, taking images round-robin over classes."""
    target = min(len(plan.splits["train"]) for plan in plans)
    for plan in plans:
        rank_in_class = Counter()
        ranked = []
        for item in plan.splits["train"]:
            ranked.append((rank_in_class[item.label], item.label, item))
            rank_in_class[item.label] += 1
        kept = sorted(ranked, key=lambda entry: entry[:2])[:target]
        plan.splits["train"] = sorted((item for _, _, item in kept), key=lambda item: (item.label, item.path))


def _shuffle_items(items: Sequence[Item], seed: int, *keys: str) -> list[Item]:
    """Items in a seeded random order (so pages of a .beton mix classes, which QUASI_RANDOM loading needs)."""
    return [items[i] for i in _rng(seed, *keys).permutation(len(items))]


def pool_items(plans: Mapping[str, TaskPlan], tasks: Sequence[str], split: str) -> list[Item]:
    """Items of several tasks with labels moved into the LabelSpace's global label space (tasks in this order)."""
    label_space = LabelSpace.from_classes({task: plans[task].classes for task in tasks})
    return [
        Item(item.path, item.label + label_space.offset(task)) for task in tasks for item in plans[task].splits[split]
    ]


def _counts(plan: TaskPlan) -> dict:
    """Image counts of a task: totals per split and per class."""
    counts: dict = {split: len(items) for split, items in plan.splits.items()}
    names = {"train": plan.classes, "val": plan.classes, "test": plan.classes, "heldout": plan.heldout_classes}
    counts["per_class"] = {
        split: dict(zip(names[split], np.bincount([i.label for i in items], minlength=len(names[split])).tolist()))
        for split, items in plan.splits.items()
    }
    return counts


def one_class_name(task: str) -> str:
    """The name of a task's one-class variant (`--one-class face` adds `face1`)."""
    return task + ONE_CLASS_SUFFIX


def _default_pools(tasks: Sequence[str], one_class: Sequence[str]) -> list[tuple[str, ...]]:
    """One pool of all tasks in the order given, and one more per one-class variant in place of its task
    (none for a single task)."""
    if len(tasks) < 2:
        return []
    return [tuple(tasks)] + [tuple(one_class_name(t) if t == base else t for t in tasks) for base in one_class]


def _parse_pools(
    pools: Sequence[str | Sequence[str]] | None, tasks: Sequence[str], one_class: Sequence[str]
) -> list[tuple[str, ...]]:
    """Pools as task tuples (default: `_default_pools`); UserError for unknown tasks or a task with its own variant."""
    if pools is None:
        return _default_pools(tasks, one_class)
    known = [*tasks, *map(one_class_name, one_class)]
    parsed = [tuple(p.split("+")) if isinstance(p, str) else tuple(p) for p in pools]
    for pool in parsed:
        unknown = [task for task in pool if task not in known]
        doubled = [task for task in one_class if task in pool and one_class_name(task) in pool]
        if unknown or doubled or len(pool) < 2 or len(set(pool)) != len(pool):
            raise UserError(
                f"pool {'+'.join(pool)} must name two or more different tasks among {', '.join(known)}, "
                "not a task together with its one-class variant"
            )
    return parsed


def _validate(tasks: Mapping[str, str | os.PathLike], one_class: Sequence[str], workers: int | None) -> None:
    """Reject task names and option combinations that cannot work, before any work starts."""
    if not tasks:
        raise UserError("no tasks given; pass --task NAME=ROOT (e.g. --task face=/data/vggface2)")
    bad_names = [name for name in tasks if not name or "+" in name or "/" in name or name.startswith("pool_")]
    if bad_names:
        raise UserError(f"bad task name {bad_names[0]!r}; use a plain word such as face or object")
    for task in one_class:
        if task not in tasks or one_class_name(task) in tasks:
            raise UserError(
                f"--one-class {task}: name a task given with --task whose name plus "
                f"{ONE_CLASS_SUFFIX!r} is not a task too"
            )
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}; leave it out to use every core")


def build_dataset(
    tasks: Mapping[str, str | os.PathLike],
    out: str | os.PathLike,
    settings: BuildSettings = BuildSettings(),
    workers: int | None = None,
) -> dict:
    """Build a data directory (see the module docstring) from ordered task -> root; returns the manifest. A finished
    build whose .beton files are intact is returned as it is; damaged files are written again."""
    _validate(tasks, settings.one_class, workers)
    pool_specs = _parse_pools(settings.pools, list(tasks), settings.one_class)
    parameters = {
        "tasks": {task: str(root) for task, root in tasks.items()},
        **asdict(settings),
        "one_class": list(settings.one_class),
        "pools": ["+".join(p) for p in pool_specs],
    }
    stage = build_stage(out, parameters)
    if stage.finished and intact(stage.path, read_json(stage.manifest_path)):
        return read_json(stage.manifest_path)
    workers = workers or os.cpu_count() or 1
    trees = {task: discover(root) for task, root in tasks.items()}
    split_modes = {task: _resolve_split_mode(task, tree, settings.split) for task, tree in trees.items()}
    checker = FileChecker(workers)
    counts, seed = settings.counts, settings.seed
    choices = {
        task: select_classes(
            task,
            tree,
            checker,
            count=_for_task(settings.classes, task),
            class_list=_for_task(settings.class_lists, task),
            exclude=_for_task(settings.exclude, task),
            heldout=settings.heldout_classes,
            counts=counts,
            split_mode=split_modes[task],
            seed=seed,
        )
        for task, tree in trees.items()
    }
    plans = {
        task: plan_task(
            task, trees[task], choices[task], checker.valid, split_mode=split_modes[task], seed=seed, counts=counts
        )
        for task in tasks
    }
    if settings.balance:
        balance_train(list(plans.values()))
    plans.update({one_class_name(task): one_class_plan(plans[task]) for task in settings.one_class})
    out = stage.start({**parameters, "workers": workers})
    hashes = write_all(out, _outputs(plans, pool_specs, seed), settings.encoding, workers)
    write_class_lists(out, plans)
    skipped = (
        [entry for tree in trees.values() for entry in tree.skipped]
        + checker.skipped
        + [
            {"path": readable(trees[task].root), "class": readable(name), "reason": f"class passed over: {reason}"}
            for task, choice in choices.items()
            for name, reason in choice.passed_over.items()
        ]
    )
    return stage.finish(
        "data",
        StageLog(makes=[data_artifact(out)]),
        seed=seed,
        tasks=_task_entries(plans),
        pools=_pool_entries(plans, pool_specs),
        skipped=skipped,
        converted=checker.converted,
        parameters={**parameters, "workers": workers},
        hashes=hashes,
    )


def build_stage(out: str | os.PathLike, parameters: Mapping) -> StageDir:
    """The build's stage directory, checked before any work and creating nothing: a file in its way, other files,
    or a build from other inputs is refused (resuming the same build is fine)."""
    path = check_output_path(out)
    stage = StageDir(
        path,
        "data build",
        parameters,
        "build into a new --out, or delete that folder first to rebuild it from these inputs",
    )
    if path.is_dir() and stage.recorded() is None and any(path.iterdir()):
        raise UserError(f"--out {path} holds other files but no data build; choose a new or empty --out")
    return stage.check()


def intact(out: Path, manifest: Mapping) -> bool:
    """Whether every .beton of a finished build is still there at the size and hash its build recorded."""
    state = read_state_json(out / STATE_FILE)
    return isinstance(state, dict) and all(
        isinstance(state.get(relative), dict)
        and state[relative].get("sha256") == sha256
        and (out / relative).is_file()
        and (out / relative).stat().st_size == state[relative].get("size")
        for relative, sha256 in manifest["hashes"].items()
    )


def write_class_lists(out: Path, plans: Mapping[str, TaskPlan]) -> None:
    """OUT/<task>/classes.txt: a task's classes in label order, one per line (a --class-list for another build)."""
    for task, plan in plans.items():
        with atomic_path(out / task / "classes.txt") as tmp:
            tmp.write_text("".join(f"{name}\n" for name in plan.classes))


def _outputs(plans: Mapping[str, TaskPlan], pool_specs: Sequence[tuple[str, ...]], seed: int) -> dict[str, list[Item]]:
    """Relative .beton path -> items, for every task split and pool split; train files in seeded random order."""
    outputs: dict[str, list[Item]] = {}
    for task, plan in plans.items():
        for split, items in plan.splits.items():
            if items:
                outputs[f"{task}/{split}.beton"] = (
                    _shuffle_items(items, seed, task, "order") if split == "train" else items
                )
    for pool in pool_specs:
        name = "+".join(pool)
        outputs[f"pool_{name}/train.beton"] = _shuffle_items(pool_items(plans, pool, "train"), seed, name, "order")
        for split in POOL_SPLITS[1:]:
            outputs[f"pool_{name}/{split}.beton"] = pool_items(plans, pool, split)
    return outputs


def _task_entries(plans: Mapping[str, TaskPlan]) -> dict[str, dict]:
    """The manifest's per-task section."""
    return {
        task: {
            "root": readable(plan.tree.root),
            "format": plan.tree.format,
            "split": plan.split_mode,
            "merged_from": plan.merged_from,
            "classes": plan.classes,
            "heldout_classes": plan.heldout_classes,
            "counts": _counts(plan),
            "files": {split: f"{task}/{split}.beton" for split, items in plan.splits.items() if items},
        }
        for task, plan in plans.items()
    }


def _pool_entries(plans: Mapping[str, TaskPlan], pool_specs: Sequence[tuple[str, ...]]) -> dict[str, dict]:
    """The manifest's pool section: tasks in label order, their label space, files and counts."""
    entries = {}
    for pool in pool_specs:
        name = "+".join(pool)
        label_space = LabelSpace.from_classes({task: plans[task].classes for task in pool})
        entries[name] = {
            "tasks": list(pool),
            "label_space": label_space.to_dict(),
            "files": {split: f"pool_{name}/{split}.beton" for split in POOL_SPLITS},
            "counts": {split: sum(len(plans[task].splits[split]) for task in pool) for split in POOL_SPLITS},
        }
    return entries


def summary_line(manifest: Mapping, out: str | os.PathLike) -> str:
    """One line: what was built where, and how many files were skipped (by reason) or converted."""
    tasks = ", ".join(
        f"{task} {len(entry['classes'])} classes ({entry['counts']['train']} train/"
        f"{entry['counts']['val']} val/{entry['counts']['test']} test/{entry['counts']['heldout']} heldout)"
        for task, entry in manifest["tasks"].items()
    )
    pools = "".join(
        f"; pool {name} ({entry['counts']['train']} train/{entry['counts']['val']} val/{entry['counts']['test']} test)"
        for name, entry in manifest["pools"].items()
    )
    reasons = Counter(entry["reason"].split(" (")[0].split(":")[0] for entry in manifest["skipped"])
    skipped = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    return (
        f"built {readable(out)}: {tasks}{pools}; skipped {len(manifest['skipped'])}"
        f"{f' ({skipped})' if skipped else ''}; "
        f"converted {len(manifest['converted'])}"
    )
