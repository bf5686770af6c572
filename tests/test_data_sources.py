"""Layout discovery (VGGFace2, ImageNet, Food-101, split folders), class choice, splits and balancing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_data import tiny_jpeg

from common.errors import UserError
from data_pipeline.beton import Item
from data_pipeline.build import (
    ClassChoice,
    FileChecker,
    ImageCounts,
    TaskPlan,
    balance_train,
    plan_task,
    select_classes,
)
from data_pipeline.sources import discover


def _touch(root: Path, *relative: str) -> None:
    """Tiny real JPEGs at these paths under root."""
    for rel in relative:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(tiny_jpeg(len(rel)))


def _checked(tree) -> FileChecker:
    """A checker that has decoded every file of the tree."""
    checker = FileChecker(workers=1)
    checker.check(
        [p for files in tree.classes.values() for split in files.values() for p in split]
        + [p for files in tree.heldout_pool.values() for p in files]
    )
    return checker


def _select(task, tree, counts=ImageCounts(test=1, val=1), split_mode="seed", **options) -> ClassChoice:
    options = {"count": None, "class_list": None, "exclude": None, "heldout": 0, "seed": 0, **options}
    return select_classes(task, tree, FileChecker(workers=1), counts=counts, split_mode=split_mode, **options)


def test_food101_uses_meta_split(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "images/pizza/1.jpg",
        "images/pizza/2.jpg",
        "images/pizza/3.jpg",
        "images/sushi/4.jpg",
        "images/sushi/5.jpg",
    )
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "train.txt").write_text("pizza/1\npizza/2\nsushi/4\n")
    (tmp_path / "meta" / "test.txt").write_text("pizza/3\nsushi/5\n")
    tree = discover(tmp_path)
    assert tree.format == "food101" and tree.premade_split
    assert [Path(p).name for p in tree.classes["pizza"]["train"]] == ["1.jpg", "2.jpg"]
    plan = plan_task(
        "food",
        tree,
        ClassChoice(["pizza", "sushi"], []),
        _checked(tree).valid,
        split_mode="premade",
        seed=0,
        counts=ImageCounts(test=1, val=1),
    )
    assert [(Path(i.path).name, i.label) for i in plan.splits["test"]] == [("3.jpg", 0), ("5.jpg", 1)]


def test_vggface2_disjoint_test_identities_become_heldout(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        *(f"train/n00000{i}/{j}.jpg" for i in range(4) for j in range(6)),
        *(f"test/n00010{i}/{j}.jpg" for i in range(3) for j in range(4)),
    )
    tree = discover(tmp_path)
    assert tree.format == "split-disjoint" and not tree.premade_split and len(tree.heldout_pool) == 3
    counts = ImageCounts(test=2, val=1, train=2, heldout=3)
    choice = _select("face", tree, counts, count=3, heldout=2)
    assert len(choice.classes) == 3 and set(choice.classes) <= set(tree.classes)
    assert set(choice.heldout) <= set(tree.heldout_pool)
    plan = plan_task("face", tree, choice, _checked(tree).valid, split_mode="seed", seed=0, counts=counts)
    assert [len(plan.splits[s]) for s in ("train", "val", "test", "heldout")] == [6, 3, 6, 6]
    trained = {i.path for s in ("train", "val", "test") for i in plan.splits[s]}
    assert len(trained) == 15 and not trained & {i.path for i in plan.splits["heldout"]}


def test_imagenet_folders_class_list_exclusion_and_seeded_choice(tmp_path: Path) -> None:
    synsets = [f"n0{i:07d}" for i in range(8)]
    _touch(tmp_path / "imagenet", *(f"{s}/{j}.JPEG" for s in synsets for j in range(3)))
    (tmp_path / "imagenet" / ".cache").mkdir()
    tree = discover(tmp_path / "imagenet")
    assert tree.format == "folders" and list(tree.classes) == synsets
    (tmp_path / "exclude.txt").write_text(f"# animate\n{synsets[0]}\n{synsets[1]}\n")
    (tmp_path / "list.txt").write_text(f"{synsets[5]}\n{synsets[2]}\n")
    first = _select("object", tree, count=4, exclude=str(tmp_path / "exclude.txt"), heldout=2, seed=1)
    assert first == _select("object", tree, count=4, exclude=str(tmp_path / "exclude.txt"), heldout=2, seed=1)
    assert not {synsets[0], synsets[1]} & set(first.classes + first.heldout)
    assert not set(first.classes) & set(first.heldout) and len(first.heldout) == 2
    listed = _select("object", tree, class_list=str(tmp_path / "list.txt"), heldout=1)
    assert listed.classes == [synsets[5], synsets[2]]
    (tmp_path / "other.txt").write_text(f"{synsets[2]}\n")
    less = _select("object", tree, class_list=str(tmp_path / "list.txt"), exclude=str(tmp_path / "other.txt"))
    assert less.classes == [synsets[5]] and less.passed_over == {synsets[2]: f"excluded by {tmp_path / 'other.txt'}"}
    with pytest.raises(UserError, match="every class of .* is excluded"):
        _select("object", tree, class_list=str(tmp_path / "list.txt"), exclude=str(tmp_path / "list.txt"))
    (tmp_path / "unknown.txt").write_text("n09999999\n")
    with pytest.raises(UserError, match="1 class\\(es\\) in .* are not in"):
        _select("object", tree, class_list=str(tmp_path / "unknown.txt"))
    with pytest.raises(UserError, match="lower --classes"):
        _select("object", tree, count=7, heldout=2)


def test_split_folders_with_heldout_folder(tmp_path: Path) -> None:
    _touch(tmp_path, "train/a/1.jpg", "train/b/2.jpg", "val/a/3.jpg", "val/b/4.jpg", "heldout/c/5.jpg")
    tree = discover(tmp_path)
    assert tree.format == "split" and tree.premade_split and list(tree.heldout_pool) == ["c"]
    assert Path(tree.classes["b"]["test"][0]).name == "4.jpg"


def test_balance_trims_to_smallest_task_round_robin() -> None:
    def plan(name: str, per_class: list[int]) -> TaskPlan:
        items = [Item(f"{name}/{c}/{j}", c) for c, n in enumerate(per_class) for j in range(n)]
        return TaskPlan(name, None, "seed", [str(c) for c in range(len(per_class))], [], {"train": items})

    small, large = plan("face", [3, 3]), plan("object", [10, 2, 5])
    balance_train([small, large])
    assert len(large.splits["train"]) == 6 and len(small.splits["train"]) == 6
    assert [sum(i.label == c for i in large.splits["train"]) for c in range(3)] == [2, 2, 2]


def test_csv_of_paths_classes_and_splits(tmp_path: Path) -> None:
    _touch(tmp_path, "img/a1.jpg", "img/a2.jpg", "img/b1.jpg", "elsewhere/b2.jpg")
    (tmp_path / "premade.csv").write_text(
        f"Path,Class,Split\nimg/a1.jpg,a,train\nimg/a2.jpg,a,TEST\n"
        f"img/b1.jpg,b,train\n{tmp_path / 'elsewhere/b2.jpg'},b,test\n"
    )
    tree = discover(tmp_path / "premade.csv")
    assert tree.format == "csv" and tree.premade_split and list(tree.classes) == ["a", "b"]
    assert [Path(p).name for p in tree.classes["b"]["test"]] == ["b2.jpg"]
    (tmp_path / "seeded.csv").write_text("class,path\na,img/a1.jpg\na,img/a2.jpg\n")
    assert discover(tmp_path / "seeded.csv").classes == {
        "a": {"all": [str(tmp_path / "img/a1.jpg"), str(tmp_path / "img/a2.jpg")]}
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,label\nimg/a.jpg,a\n", "its header must name path and class"),
        ("path,class,split\nimg/a.jpg,a,valid\n", "line 2: split 'valid' is not one of train, test"),
        ("path,class\nimg/a.jpg,a\n./img/a.jpg,b\n", "line 3: ./img/a.jpg is already listed on line 2"),
        ("path,class\nimg/a.jpg,\n", "line 2: empty path or class"),
    ],
)
def test_bad_csv_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "table.csv").write_text(text)
    with pytest.raises(UserError, match=message):
        discover(tmp_path / "table.csv")


def test_food101_without_test_list_is_a_clear_error(tmp_path: Path) -> None:
    _touch(tmp_path, "images/pizza/1.jpg")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "train.txt").write_text("pizza/1\n")
    with pytest.raises(UserError, match="lacks meta/test.txt"):
        discover(tmp_path)
