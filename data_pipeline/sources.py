"""Find the classes and image files of a data set root, whatever its source format (folder arrangement).

Source formats (detected in this order by `discover(root)`):
- food101:  ROOT/images/<class>/*.jpg with ROOT/meta/train.txt and test.txt listing `<class>/<name>` (pre-made split);
- split:    ROOT/{train,test|val}/<class>/* (pre-made split; ROOT/heldout/<class>/* holds held-out classes, as
            `specialize data synth` writes). When the test folder's classes are disjoint from train's (VGGFace2:
            train/ and test/ hold different identities), train/ is split by seed and test/ supplies held-out classes;
- folders:  ROOT/<class>/* (VGGFace2 identity folders, ImageNet synset folders, any plain class folders); split by seed.
Hidden files and folders (starting with '.') are ignored; every other entry in a class folder is a candidate image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError

TEST_FOLDER_NAMES = ("test", "val")
SPLIT_MODES = ("auto", "premade", "seed")  # a root's own train/test split, a seeded one, or its own when it has one


@dataclass
class SourceTree:
    """What a root holds: per class, its files by pre-made split ('train', 'test') or all together ('all')."""

    root: Path
    format: str  # food101, split, split-disjoint or folders
    classes: dict[str, dict[str, list[str]]]
    heldout_pool: dict[str, list[str]] = field(default_factory=dict)
    empty_folders: list[str] = field(default_factory=list)

    @property
    def premade_split(self) -> bool:
        """Whether the root comes with its own train/test split."""
        return any("train" in files for files in self.classes.values())


def _entries(folder: Path) -> list[os.DirEntry]:
    """Visible entries of a folder, sorted by name."""
    return sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)


def _candidate_files(folder: Path) -> list[str]:
    """Files in a class folder that may be images: regular files and symlinks (even broken ones), not folders."""
    return [e.path for e in _entries(folder) if e.is_symlink() or e.is_file()]


def _class_folders(parent: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Class name -> candidate files for each subfolder of `parent`, plus the subfolders that hold no files."""
    classes, empty = {}, []
    for entry in _entries(parent):
        if entry.is_dir():
            files = _candidate_files(Path(entry.path))
            if files:
                classes[entry.name] = files
            else:
                empty.append(entry.path)
    return classes, empty


def _food101(root: Path) -> SourceTree:
    """Food-101: images/<class>/<name>.jpg, split by meta/train.txt and meta/test.txt."""
    by_class, empty = _class_folders(root / "images")
    classes: dict[str, dict[str, list[str]]] = {name: {"train": [], "test": []} for name in by_class}
    known = {os.path.splitext(os.path.relpath(path, root / "images"))[0]: path
             for files in by_class.values() for path in files}
    for split in ("train", "test"):
        for line in (root / "meta" / f"{split}.txt").read_text().split():
            path = known.get(line.strip())
            if path is not None:
                classes[line.split("/")[0]][split].append(path)
    return SourceTree(root, "food101", classes, empty_folders=empty)


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


def discover(root: str | os.PathLike) -> SourceTree:
    """Detect a root's source format and list its classes and files; UserError for a missing root or one without classes."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist or is not a folder; check the path given to --task")
    if (root / "images").is_dir() and (root / "meta" / "train.txt").is_file():
        tree = _food101(root)
    elif (root / "train").is_dir():
        test_name = next((name for name in TEST_FOLDER_NAMES if (root / name).is_dir()), "test")
        tree = _split_folders(root, test_name)
    else:
        classes, empty = _class_folders(root)
        tree = SourceTree(root, "folders", {name: {"all": files} for name, files in classes.items()}, {}, empty)
    if not tree.classes:
        raise UserError(f"data root {root} has no class folders with files in them; "
                        "expected ROOT/<class>/*.jpg, ROOT/train/<class>/*.jpg or Food-101's images/ and meta/")
    return tree
