"""Find the classes and image files of a data set root, whatever its source format (folder arrangement or table).

Source formats (detected in this order by `discover(root)`):
- csv:      ROOT is a CSV file with a header row naming the columns `path` and `class`, and optionally `split`
            (train or test: a pre-made split, e.g. Stanford Cars' own). Paths are relative to the CSV's folder or
            absolute. Serves any data set whose layout is not class folders;
- food101:  ROOT/images/<class>/*.jpg with ROOT/meta/train.txt and test.txt listing `<class>/<name>` (pre-made split;
            `data build --split seed` re-splits it, e.g. to METHOD's 900 train / 100 test per class);
- split:    ROOT/{train,test|val}/<class>/* (pre-made split; ROOT/heldout/<class>/* holds held-out classes, as
            `specialize data synth` writes). When the test folder's classes are disjoint from train's (VGGFace2:
            train/ and test/ hold different identities), train/ is split by seed and test/ supplies held-out classes;
- folders:  ROOT/<class>/* (VGGFace2 identity folders, ImageNet synset folders, any plain class folders); split by seed.
Hidden files and folders (starting with '.') are ignored; every other entry in a class folder is a candidate image.
File and folder names may be in any encoding: paths stay as the file system gives them, while class names and the
names recorded in manifests are `readable` (bytes that are not UTF-8 shown as \\xNN escapes).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError

TEST_FOLDER_NAMES = ("test", "val")
SPLIT_MODES = ("auto", "premade", "seed")  # a root's own train/test split, a seeded one, or its own when it has one
TABLE_SPLITS = ("train", "test")
FOOD101_META = ("train", "test")


def readable(path: str | os.PathLike) -> str:
    """A file or class name as valid UTF-8 text: bytes that are not UTF-8 become \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class SourceTree:
    """What a root holds: per class, its files by pre-made split ('train', 'test') or all together ('all'), plus
    entries that hold no usable file (`skipped`: path and reason, recorded in the manifest)."""

    root: Path
    format: str  # csv, food101, split, split-disjoint or folders
    classes: dict[str, dict[str, list[str]]]
    heldout_pool: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def premade_split(self) -> bool:
        """Whether the root comes with its own train/test split."""
        return any("train" in files for files in self.classes.values())

    def class_files(self, name: str) -> dict[str, list[str]]:
        """A class's files by pre-made split (or 'all'), whether it is a training or a held-out class."""
        return self.classes.get(name) or {"all": self.heldout_pool[name]}


def _entries(folder: Path) -> list[os.DirEntry]:
    """Visible entries of a folder, sorted by name."""
    return sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)


def _candidate_files(folder: Path) -> list[str]:
    """Files in a class folder that may be images: regular files and symlinks (even broken ones), not folders."""
    return [e.path for e in _entries(folder) if e.is_symlink() or e.is_file()]


def _class_folders(parent: Path) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """Class name -> candidate files for each subfolder of `parent`, plus skipped entries for folders without files."""
    classes, empty = {}, []
    for entry in _entries(parent):
        if entry.is_dir():
            files = _candidate_files(Path(entry.path))
            if files:
                classes[readable(entry.name)] = files
            else:
                empty.append({"path": readable(entry.path), "reason": "empty class folder"})
    return classes, empty


def _food101(root: Path) -> SourceTree:
    """Food-101: images/<class>/<name>.jpg, split by meta/train.txt and meta/test.txt; files listed in neither, and
    listed names without a file, are recorded as skipped."""
    missing_meta = [f"meta/{split}.txt" for split in FOOD101_META if not (root / "meta" / f"{split}.txt").is_file()]
    if missing_meta:
        raise UserError(f"Food-101 root {root} lacks {missing_meta[0]}; restore the data set's meta/ folder")
    by_class, skipped = _class_folders(root / "images")
    known = {
        os.path.splitext(os.path.relpath(path, root / "images"))[0]: (name, path)
        for name, files in by_class.items()
        for path in files
    }
    classes: dict[str, dict[str, list[str]]] = {name: {split: [] for split in FOOD101_META} for name in by_class}
    listed = set()
    for split in FOOD101_META:
        for line in (root / "meta" / f"{split}.txt").read_text(errors="backslashreplace").split():
            if line in known:
                name, path = known[line]
                classes[name][split].append(path)
                listed.add(line)
            else:
                skipped.append(
                    {"path": readable(root / "images" / line), "reason": f"listed in meta/{split}.txt but missing"}
                )
    skipped += [
        {"path": readable(path), "reason": "not listed in meta/train.txt or meta/test.txt"}
        for key, (_, path) in known.items()
        if key not in listed
    ]
    return SourceTree(root, "food101", classes, skipped=skipped)


def _split_folders(root: Path, test_name: str) -> SourceTree:
    """train/ and test/ (or val/) class folders, plus optional heldout/."""
    train, empty = _class_folders(root / "train")
    test, empty_test = _class_folders(root / test_name) if (root / test_name).is_dir() else ({}, [])
    heldout, empty_heldout = _class_folders(root / "heldout") if (root / "heldout").is_dir() else ({}, [])
    empty += empty_test + empty_heldout
    if test and not set(test) & set(train) and not heldout:
        return SourceTree(root, "split-disjoint", {name: {"all": files} for name, files in train.items()}, test, empty)
    classes = {name: {"train": files, "test": test.get(name, [])} for name, files in train.items()}
    return SourceTree(root, "split", classes, heldout, empty)


def _table_rows(table: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV file; UserError when unreadable or without `path` and `class` columns."""
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = [name.strip().lower() for name in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(
            f"cannot read the CSV {table} ({error}); give a UTF-8 CSV with columns path,class[,split]"
        ) from None
    if not {"path", "class"} <= set(header):
        raise UserError(
            f"CSV {table} has columns {', '.join(header) or 'none'}; its header must name path and class "
            "(and optionally split)"
        )
    return header, [{key.strip().lower(): (value or "").strip() for key, value in row.items() if key} for row in rows]


def _table(table: Path) -> SourceTree:
    """A CSV of (path, class[, split]): one row per image; split train/test for a pre-made split, else seeded."""
    header, rows = _table_rows(table)
    has_split = "split" in header
    classes: dict[str, dict[str, list[str]]] = {}
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        path, name, split = (
            row.get("path", ""),
            row.get("class", ""),
            row.get("split", "").lower() if has_split else "all",
        )
        if not path or not name:
            raise UserError(f"CSV {table} line {line}: empty path or class; every row needs both")
        if has_split and split not in TABLE_SPLITS:
            raise UserError(
                f"CSV {table} line {line}: split {split!r} is not one of {', '.join(TABLE_SPLITS)}; "
                "fix the row or drop the split column for a seeded split"
            )
        resolved = os.path.normpath(table.parent / path)
        if resolved in seen:
            raise UserError(
                f"CSV {table} line {line}: {path} is already listed on line {seen[resolved]}; list each image once"
            )
        seen[resolved] = line
        splits = classes.setdefault(name, {split_name: [] for split_name in (TABLE_SPLITS if has_split else ("all",))})
        splits[split].append(resolved)
    return SourceTree(table, "csv", classes)


def discover(root: str | os.PathLike) -> SourceTree:
    """Detect a root's source format and list its classes and files; UserError for a missing root or one without
    classes."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        tree = _table(root)
    elif not root.is_dir():
        raise UserError(
            f"data root {root} does not exist or is not a folder or .csv file; check the path given to --task"
        )
    elif (root / "images").is_dir() and (root / "meta").is_dir():
        tree = _food101(root)
    elif (root / "train").is_dir():
        test_name = next((name for name in TEST_FOLDER_NAMES if (root / name).is_dir()), "test")
        tree = _split_folders(root, test_name)
    else:
        classes, empty = _class_folders(root)
        tree = SourceTree(root, "folders", {name: {"all": files} for name, files in classes.items()}, {}, empty)
    if not tree.classes:
        raise UserError(
            f"data root {root} has no class folders with files in them; expected ROOT/<class>/*.jpg, "
            "ROOT/train/<class>/*.jpg, Food-101's images/ and meta/, or a CSV of path,class[,split]"
        )
    return tree
