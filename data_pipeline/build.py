"""`specialize data build`: image folders of several tasks -> FFCV .beton files per task and split, pools, manifest.

Steps: discover each root's source format (sources.py); choose training and held-out classes (count, list file,
exclusions; seeded); decode every candidate file once in parallel to find bad ones (images.py); split each
class into train/test (pre-made or seeded) and cap images per class; optionally balance tasks by total train
images; write per-task and pooled .beton files (beton.py; resumable, atomic); write manifest.json and config.json.
"""

from __future__ import annotations

import multiprocessing
import os
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from data_pipeline.beton import WRITE_MODES, ImageEncoding, Item, write_all
from data_pipeline.images import check_image
from data_pipeline.sources import SPLIT_MODES, SourceTree, discover
from data_pipeline.label_space import LabelSpace
from common.errors import UserError
from common.io import write_json
from common.manifest import write_manifest

T = TypeVar("T")
PerTask = T | Mapping[str, T]


@dataclass
class TaskPlan:
    """Everything decided for one task before writing: classes, held-out classes and the items of each split."""

    name: str
    tree: SourceTree
    split_mode: str
    classes: list[str]
    heldout_classes: list[str]
    splits: dict[str, list[Item]]


@dataclass
class FileCheck:
    """Results of decoding every candidate file once: which are usable, skipped (with reason) or converted."""

    valid: set[str]
    skipped: list[dict[str, str]]
    converted: list[dict[str, str]]


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A random generator for (seed, names...), stable across runs."""
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])


def _for_task(value: PerTask[T], task: str) -> T | None:
    """A per-task option: the mapping's entry for `task`, or the single value given for every task."""
    return value.get(task) if isinstance(value, Mapping) else value


def read_name_list(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line; blank lines and '#' comments ignored."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise UserError(f"cannot read class list {path} ({error.strerror}); give an existing text file") from None
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def select_classes(task: str, tree: SourceTree, *, count: int | None, class_list: str | None, exclude: str | None,
                   heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """Training classes (in label order) and held-out classes of one task (seeded draws, never overlapping)."""
    excluded = set(read_name_list(exclude)) if exclude else set()
    candidates = [name for name in tree.classes if name not in excluded]
    listed = read_name_list(class_list) if class_list else []
    missing = [name for name in listed if name not in candidates]
    if missing:
        raise UserError(f"task {task}: {len(missing)} class(es) in {class_list} are not in {tree.root} or are excluded "
                        f"(first: {missing[0]}); fix the list")
    pool = [name for name in (tree.heldout_pool or candidates) if name not in excluded and name not in listed]
    if heldout > len(pool):
        raise UserError(f"task {task}: asked for {heldout} held-out classes but only {len(pool)} classes are left "
                        "for them; lower --heldout-classes")
    heldout_classes = sorted(_rng(seed, task, "heldout").choice(pool, heldout, replace=False).tolist()) if heldout else []
    if listed:
        return listed, heldout_classes
    remaining = [name for name in candidates if name not in heldout_classes]
    if count is None:
        return remaining, heldout_classes
    if count > len(remaining):
        raise UserError(f"task {task}: asked for {count} classes but {tree.root} has {len(remaining)} usable classes "
                        f"besides the {heldout} held out; lower --classes or --heldout-classes")
    return sorted(_rng(seed, task, "classes").choice(remaining, count, replace=False).tolist()), heldout_classes


def _class_files(tree: SourceTree, name: str) -> dict[str, list[str]]:
    """A class's files by pre-made split (or 'all'), whether it is a training or a held-out class."""
    return tree.classes.get(name) or {"all": tree.heldout_pool[name]}


def check_files(paths: Sequence[str], workers: int) -> FileCheck:
    """Decode every file once, in parallel, and sort them into usable, skipped (reason) and converted (note)."""
    result = FileCheck(set(), [], [])
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        checks = pool.imap(check_image, paths, chunksize=32)
        for path, reason, note in tqdm(checks, total=len(paths), desc="checking images", unit="img"):
            if reason is not None:
                result.skipped.append({"path": path, "reason": reason})
                continue
            result.valid.add(path)
            if note is not None:
                result.converted.append({"path": path, "conversion": note})
    return result


def _shuffled(paths: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Paths in a seeded random order."""
    return [paths[i] for i in rng.permutation(len(paths))]


def split_class(files: Mapping[str, list[str]], valid: set[str], rng: np.random.Generator, split_mode: str,
                train_per_class: int | None, test_per_class: int) -> dict[str, list[str]]:
    """A class's train and test files: pre-made split capped per class, or a seeded split (test at most half)."""
    def usable(*splits: str) -> list[str]:
        return _shuffled(sorted(p for split in splits for p in files.get(split, []) if p in valid), rng)

    if split_mode == "premade":
        train, test = usable("train"), usable("test")[:test_per_class]
    else:
        pooled = usable(*files)
        n_test = min(test_per_class, len(pooled) // 2)
        train, test = pooled[n_test:], pooled[:n_test]
    return {"train": sorted(train[:train_per_class]), "test": sorted(test)}


def _resolve_split_mode(task: str, tree: SourceTree, split: str) -> str:
    """'premade' or 'seed' for this root, given the user's choice (auto picks premade when the root has one)."""
    if split == "premade" and not tree.premade_split:
        raise UserError(f"task {task}: {tree.root} has no pre-made train/test split (format {tree.format}); "
                        "use --split seed or auto")
    if split == "auto":
        return "premade" if tree.premade_split else "seed"
    return split


def plan_task(task: str, tree: SourceTree, classes: list[str], heldout_classes: list[str], check: FileCheck, *,
              split_mode: str, seed: int, train_per_class: int | None, test_per_class: int,
              heldout_per_class: int | None) -> TaskPlan:
    """Split each class, drop classes left without readable images, and label items (local labels)."""
    by_class = {name: split_class(_class_files(tree, name), check.valid, _rng(seed, task, name), split_mode,
                                  train_per_class, test_per_class) for name in classes}
    for name in [name for name, files in by_class.items() if not files["train"]]:
        check.skipped.append({"path": str(tree.root / name), "reason": "class has no readable training images"})
        del by_class[name]
    heldout_files = {name: split_class(_class_files(tree, name), check.valid, _rng(seed, task, name), "seed",
                                       heldout_per_class, 0)["train"] for name in heldout_classes}
    heldout_files = {name: files for name, files in heldout_files.items() if files}
    splits = {split_name: [Item(path, label) for label, files in enumerate(by_class.values()) for path in files[split_name]]
              for split_name in ("train", "test")}
    splits["heldout"] = [Item(path, label) for label, files in enumerate(heldout_files.values()) for path in files]
    return TaskPlan(task, tree, split_mode, list(by_class), list(heldout_files), splits)


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
    return [Item(item.path, item.label + label_space.offset(task)) for task in tasks for item in plans[task].splits[split]]


def _counts(plan: TaskPlan) -> dict:
    """Image counts of a task: totals per split and per class."""
    counts: dict = {split: len(items) for split, items in plan.splits.items()}
    names = {"train": plan.classes, "test": plan.classes, "heldout": plan.heldout_classes}
    counts["per_class"] = {split: dict(zip(names[split], np.bincount([i.label for i in items], minlength=len(names[split])).tolist()))
                           for split, items in plan.splits.items()}
    return counts


def _parse_pools(pools: Sequence[str | Sequence[str]] | None, tasks: Sequence[str]) -> list[tuple[str, ...]]:
    """Pools as task tuples; default one pool of all tasks in the order given (none for a single task)."""
    if pools is None:
        return [tuple(tasks)] if len(tasks) > 1 else []
    parsed = [tuple(p.split("+")) if isinstance(p, str) else tuple(p) for p in pools]
    for pool in parsed:
        unknown = [task for task in pool if task not in tasks]
        if unknown or len(pool) < 2 or len(set(pool)) != len(pool):
            raise UserError(f"pool {'+'.join(pool)} must name two or more different tasks among {', '.join(tasks)}")
    return parsed


def _validate(tasks: Mapping[str, str | os.PathLike], split: str, encoding: ImageEncoding, test_per_class: int,
              workers: int | None) -> None:
    """Reject option values that cannot work, before any work starts."""
    if not tasks:
        raise UserError("no tasks given; pass --task NAME=ROOT (e.g. --task face=/data/vggface2)")
    bad_names = [name for name in tasks if not name or "+" in name or "/" in name or name.startswith("pool_")]
    if bad_names:
        raise UserError(f"bad task name {bad_names[0]!r}; use a plain word such as face or object")
    if split not in SPLIT_MODES:
        raise UserError(f"--split must be one of {', '.join(SPLIT_MODES)}")
    if encoding.write_mode not in WRITE_MODES:
        raise UserError(f"--write-mode must be one of {', '.join(WRITE_MODES)}")
    if not 1 <= encoding.jpeg_quality <= 100 or test_per_class < 1:
        raise UserError("--jpeg-quality must be in 1..100 and --test-per-class at least 1")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}; leave it out to use every core")


def build_dataset(tasks: Mapping[str, str | os.PathLike], out: str | os.PathLike, *,
                  classes: PerTask[int | None] = None, class_lists: PerTask[str | None] = None,
                  exclude: PerTask[str | None] = None, train_per_class: int | None = None, test_per_class: int = 50,
                  heldout_classes: int = 0, heldout_per_class: int | None = None, split: str = "auto", seed: int = 0,
                  balance: bool = False, encoding: ImageEncoding = ImageEncoding(),
                  pools: Sequence[str | Sequence[str]] | None = None, workers: int | None = None) -> dict:
    """Build a data directory (see the module docstring) from ordered task -> root; returns the manifest."""
    _validate(tasks, split, encoding, test_per_class, workers)
    pool_specs = _parse_pools(pools, list(tasks))
    workers = workers or os.cpu_count() or 1
    out = Path(out)
    trees = {task: discover(root) for task, root in tasks.items()}
    split_modes = {task: _resolve_split_mode(task, tree, split) for task, tree in trees.items()}
    chosen = {task: select_classes(task, tree, count=_for_task(classes, task), class_list=_for_task(class_lists, task),
                                   exclude=_for_task(exclude, task), heldout=heldout_classes, seed=seed)
              for task, tree in trees.items()}
    candidates = sorted({path for task, (train_names, heldout_names) in chosen.items()
                         for name in train_names + heldout_names
                         for paths in _class_files(trees[task], name).values() for path in paths})
    check = check_files(candidates, workers)
    for tree in trees.values():
        check.skipped.extend({"path": folder, "reason": "empty class folder"} for folder in tree.empty_folders)
    plans = {task: plan_task(task, trees[task], *chosen[task], check, split_mode=split_modes[task], seed=seed,
                             train_per_class=train_per_class, test_per_class=test_per_class,
                             heldout_per_class=heldout_per_class) for task in tasks}
    if balance:
        balance_train(list(plans.values()))
    outputs = _outputs(plans, pool_specs, seed)
    hashes = write_all(out, outputs, encoding, workers)
    parameters = {"tasks": {task: str(root) for task, root in tasks.items()}, "classes": classes,
                  "class_lists": class_lists, "exclude": exclude, "train_per_class": train_per_class,
                  "test_per_class": test_per_class, "heldout_classes": heldout_classes,
                  "heldout_per_class": heldout_per_class, "split": split, "seed": seed, "balance": balance,
                  "encoding": asdict(encoding), "pools": ["+".join(p) for p in pool_specs], "workers": workers}
    write_json(out / "config.json", parameters)
    return write_manifest(out / "manifest.json", "data", seed=seed, tasks=_task_entries(plans),
                          pools=_pool_entries(plans, pool_specs), skipped=check.skipped, converted=check.converted,
                          parameters=parameters, hashes=hashes)


def _outputs(plans: Mapping[str, TaskPlan], pool_specs: Sequence[tuple[str, ...]], seed: int) -> dict[str, list[Item]]:
    """Relative .beton path -> items, for every task split and pool split; train files in seeded random order."""
    outputs: dict[str, list[Item]] = {}
    for task, plan in plans.items():
        for split, items in plan.splits.items():
            if items:
                outputs[f"{task}/{split}.beton"] = _shuffle_items(items, seed, task, "order") if split == "train" else items
    for pool in pool_specs:
        name = "+".join(pool)
        outputs[f"pool_{name}/train.beton"] = _shuffle_items(pool_items(plans, pool, "train"), seed, name, "order")
        outputs[f"pool_{name}/test.beton"] = pool_items(plans, pool, "test")
    return outputs


def _task_entries(plans: Mapping[str, TaskPlan]) -> dict[str, dict]:
    """The manifest's per-task section."""
    return {task: {"root": str(plan.tree.root), "format": plan.tree.format, "split": plan.split_mode,
                   "classes": plan.classes, "heldout_classes": plan.heldout_classes, "counts": _counts(plan),
                   "files": {split: f"{task}/{split}.beton" for split, items in plan.splits.items() if items}}
            for task, plan in plans.items()}


def _pool_entries(plans: Mapping[str, TaskPlan], pool_specs: Sequence[tuple[str, ...]]) -> dict[str, dict]:
    """The manifest's pool section: tasks in label order, their label space, files and counts."""
    entries = {}
    for pool in pool_specs:
        name = "+".join(pool)
        label_space = LabelSpace.from_classes({task: plans[task].classes for task in pool})
        entries[name] = {"tasks": list(pool), "label_space": label_space.to_dict(),
                         "files": {split: f"pool_{name}/{split}.beton" for split in ("train", "test")},
                         "counts": {split: sum(len(plans[task].splits[split]) for task in pool) for split in ("train", "test")}}
    return entries


def summary_line(manifest: Mapping, out: str | os.PathLike) -> str:
    """One line: what was built where, and how many files were skipped (by reason) or converted."""
    tasks = ", ".join(f"{task} {len(entry['classes'])} classes ({entry['counts']['train']} train/"
                      f"{entry['counts']['test']} test/{entry['counts']['heldout']} heldout)"
                      for task, entry in manifest["tasks"].items())
    pools = "".join(f"; pool {name} ({entry['counts']['train']} train/{entry['counts']['test']} test)"
                    for name, entry in manifest["pools"].items())
    reasons = Counter(entry["reason"].split(" (")[0] for entry in manifest["skipped"])
    skipped = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    return (f"built {out}: {tasks}{pools}; skipped {len(manifest['skipped'])}{f' ({skipped})' if skipped else ''}; "
            f"converted {len(manifest['converted'])}")
