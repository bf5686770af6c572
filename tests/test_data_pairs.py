"""The paper's extra task pairs and controls build from small fixtures of the public data sets' own layouts:
faces-as-one-class (VGGFace2 + ImageNet folders), food/object (Food-101 with its meta split, or re-split), and
car/object (a CSV of path,class,split beside Stanford Cars' image folders, with the shipped food-like exclusions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from helpers_data import pixel_hash, stored_images, tiny_jpeg
from helpers_train import ROOT

from common.io import read_json
from data_pipeline.beton import ImageEncoding
from data_pipeline.build import BuildSettings, ImageCounts, build_dataset, read_name_list
from data_pipeline.data_dir import DataDir
from data_pipeline.images import decode_rgb

EXCLUSIONS = ROOT / "configs" / "exclusions" / "imagenet_food_like.txt"
OBJECTS = ("n02690373", "n03014705", "n07873807", "n04596742", "n07749582")  # airliner, chest, pizza, wok, lemon
COUNTS = ImageCounts(test=1, val=1)
RAW = ImageEncoding(write_mode="raw", max_resolution=None)  # exact pixels, so stored images match their sources


def _images(root: Path, relative_paths: list[str], seed: int) -> None:
    for number, relative in enumerate(relative_paths):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(tiny_jpeg(seed * 1000 + number, size=16))


def vggface2(root: Path) -> Path:
    """VGGFace2's layout: train/ and test/ hold different identities, images named <n>_<face>.jpg."""
    _images(root, [f"train/n00000{i}/000{j}_01.jpg" for i in (2, 3, 4) for j in range(4)], seed=1)
    _images(root, [f"test/n00000{i}/000{j}_01.jpg" for i in (1, 5) for j in range(3)], seed=2)
    return root


def imagenet(root: Path) -> Path:
    """ImageNet's training layout: one folder per synset, images named <synset>_<n>.JPEG."""
    _images(root, [f"{synset}/{synset}_{n}.JPEG" for synset in OBJECTS for n in range(3)], seed=3)
    return root


def food101(root: Path) -> Path:
    """Food-101's layout: images/<class>/<id>.jpg; meta/ with train.txt, test.txt, classes.txt, labels.txt, *.json.
    Three classes of five images (four train, one test); one listed image is missing and one image is unlisted."""
    classes = ("apple_pie", "baby_back_ribs", "baklava")
    ids = {name: [f"{100 * c + n}" for n in range(5)] for c, name in enumerate(classes)}
    _images(
        root, [f"images/{name}/{i}.jpg" for name in classes for i in ids[name]] + ["images/baklava/999.jpg"], seed=4
    )
    meta = root / "meta"
    meta.mkdir()
    train = {name: [f"{name}/{i}" for i in ids[name][:4]] for name in classes}
    test = {name: [f"{name}/{ids[name][4]}"] for name in classes}
    (meta / "train.txt").write_text("\n".join(line for lines in train.values() for line in lines) + "\n")
    (meta / "test.txt").write_text("\n".join(line for lines in test.values() for line in lines) + "\napple_pie/404\n")
    (meta / "classes.txt").write_text("\n".join(classes) + "\n")
    (meta / "labels.txt").write_text("Apple pie\nBaby back ribs\nBaklava\n")
    (meta / "train.json").write_text(json.dumps(train))
    (meta / "test.json").write_text(json.dumps(test))
    return root


def stanford_cars(root: Path) -> Path:
    """Stanford Cars' image folders (cars_train/, cars_test/, numbered files) and a CSV of path,class,split."""
    models = ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi S4, Sedan 2007")
    rows = [
        (f"cars_{split}/{split[:2]}{m}{n}.jpg", model, split)
        for m, model in enumerate(models)
        for split, count in (("train", 3), ("test", 2))
        for n in range(count)
    ]
    _images(root, [path for path, _, _ in rows], seed=5)
    lines = ["path,class,split"] + [f'{path},"{model}",{split}' for path, model, split in rows]
    (root / "cars.csv").write_text("\n".join(lines) + "\n")
    return root / "cars.csv"


def test_faces_as_one_class_builds_from_vggface2_and_serves_the_segregation_analysis(tmp_path: Path) -> None:
    manifest = build_dataset(
        {"face": vggface2(tmp_path / "vggface2"), "object": imagenet(tmp_path / "imagenet")},
        tmp_path / "data",
        BuildSettings(counts=COUNTS, heldout_classes=1, one_class=("face",), encoding=RAW),
        workers=1,
    )
    data = DataDir(tmp_path / "data")
    assert data.task_names == ["face", "object", "face1"] and sorted(manifest["pools"]) == [
        "face+object",
        "face1+object",
    ]
    assert data.classes("face1") == ["face"] and manifest["tasks"]["face1"]["merged_from"] == "face"
    assert len(data.classes("face")) == 3 and len(data.heldout_classes("face")) == 1  # a test/ identity
    for split in ("train", "val", "test"):
        face_images, _ = stored_images(data.beton("face", split))
        one_images, one_labels = stored_images(data.beton("face1", split))
        assert sorted(map(pixel_hash, one_images)) == sorted(map(pixel_hash, face_images)) and set(one_labels) == {0}
        _, pooled = stored_images(data.pool_beton(["face1", "object"], split))
        assert sorted(set(pooled.tolist())) == list(range(1 + len(data.classes("object"))))
    _segregation_runs_on(data, ["face1", "object"], tmp_path)


def _segregation_runs_on(data: DataDir, tasks: list[str], tmp_path: Path) -> None:
    """A tiny untrained model on `tasks`: lesioned predictions on every task's test split and the segregation tables."""
    from helpers_train import tiny_config

    from analysis.segregation.indices import segregation_tables
    from analysis.segregation.lesion_eval import INTACT_UNIT, Analysis, TensorSource, Unit, evaluate_analyses
    from analysis.segregation.task_groups import label_space_grouping
    from data_pipeline.sample import sample_images
    from lightning_modules.checkpoint import build_model

    config = tiny_config(data.path, tmp_path / "runs", [f"tasks=[{','.join(tasks)}]"])
    label_space = data.label_space(tasks)
    torch.manual_seed(0)
    model = build_model(label_space, config.model).eval()
    sources = [
        TensorSource(*sample_images(data, task, "test", None, 0, config.data.resolution, label_space=label_space))
        for task in label_space.tasks
    ]
    plan = {INTACT_UNIT: {0.0: []}, **{Unit("conv1_1", task): {0.5: [0, 1]} for task in tasks}}
    analysis = Analysis(label_space_grouping(label_space), plan)
    [predictions] = evaluate_analyses(model, sources, [analysis], label_space, batch_size=4)
    assert len(predictions) == 3 * sum(data.counts(task)["test"] for task in tasks)
    assert set(predictions[predictions.eval_task == tasks[0]]["class"]) == set(data.classes(tasks[0]))
    segregation = segregation_tables(predictions, tasks, n_bootstraps=10, seed=0)["segregation"]
    assert set(zip(segregation.task_a, segregation.task_b)) == {tuple(tasks)} and set(segregation.layer) == {"conv1_1"}


def _split_files(data: DataDir, task: str, split: str, root: Path) -> set[str]:
    """Names (without extension) of the source images stored in a split, matched by their pixels."""
    by_pixels = {pixel_hash(decode_rgb(path)[0]): path.stem for path in root.rglob("*.jpg")}
    return {by_pixels[pixel_hash(image)] for image in stored_images(data.beton(task, split))[0]}


def test_food101_builds_from_its_meta_split_or_resplit(tmp_path: Path) -> None:
    root = food101(tmp_path / "food-101")
    manifest = build_dataset({"food": root}, tmp_path / "meta", BuildSettings(counts=COUNTS, encoding=RAW), workers=1)
    meta_test = {Path(line).name for line in (root / "meta" / "test.txt").read_text().split()} - {"404"}
    assert _split_files(DataDir(tmp_path / "meta"), "food", "test", root) == meta_test
    counts = manifest["tasks"]["food"]["counts"]
    assert (counts["train"], counts["val"], counts["test"]) == (9, 3, 3) and manifest["tasks"]["food"][
        "split"
    ] == "premade"
    assert {(Path(entry["path"]).name, entry["reason"]) for entry in manifest["skipped"]} == {
        ("404", "listed in meta/test.txt but missing"),
        ("999.jpg", "not listed in meta/train.txt or meta/test.txt"),
    }

    # METHOD's 900 train / 100 test per class from Food-101's 750 / 250, here 4 / 1 -> 3 / 2 (validation from the 3)
    resplit = build_dataset(
        {"food": root},
        tmp_path / "resplit",
        BuildSettings(counts=ImageCounts(test=2, val=1), split="seed", encoding=RAW),
        workers=1,
    )
    counts = resplit["tasks"]["food"]["counts"]
    assert (counts["train"], counts["val"], counts["test"]) == (6, 3, 6) and resplit["tasks"]["food"]["split"] == "seed"
    resplit_test = _split_files(DataDir(tmp_path / "resplit"), "food", "test", root)
    assert len(resplit_test) == 6 and resplit_test - meta_test  # test images drawn from meta's train images too


def test_car_csv_and_object_exclusions_build_a_balanced_car_object_pair(tmp_path: Path) -> None:
    table = stanford_cars(tmp_path / "stanford_cars")
    face_object_classes = tmp_path / "classes.txt"  # as data/face_object/object/classes.txt lists them
    face_object_classes.write_text("\n".join(OBJECTS) + "\n")
    manifest = build_dataset(
        {"car": table, "object": imagenet(tmp_path / "imagenet")},
        tmp_path / "data",
        BuildSettings(
            counts=COUNTS,
            class_lists={"object": str(face_object_classes)},
            exclude={"object": str(EXCLUSIONS)},
            balance=True,
            encoding=RAW,
        ),
        workers=1,
    )
    data = DataDir(tmp_path / "data")
    assert data.classes("car") == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi S4, Sedan 2007"]
    assert manifest["tasks"]["car"]["format"] == "csv" and manifest["tasks"]["car"]["split"] == "premade"
    assert data.classes("object") == ["n02690373", "n03014705", "n04596742"]  # pizza and lemon left out
    assert (tmp_path / "data" / "object" / "classes.txt").read_text().split() == data.classes("object")
    assert {entry.get("class") for entry in manifest["skipped"]} == {"n07873807", "n07749582"}
    assert {"n07873807", "n07749582"} <= set(read_name_list(EXCLUSIONS))
    counts = {task: data.counts(task) for task in ("car", "object")}
    assert counts["car"]["train"] == counts["object"]["train"] == 3  # balanced: cars have 3 - 1 val per class
    assert counts["car"]["test"] == 3 and counts["car"]["per_class"]["val"] == dict.fromkeys(data.classes("car"), 1)
    car_test = _split_files(data, "car", "test", table.parent)
    assert len(car_test) == 3 and car_test <= {path.stem for path in (table.parent / "cars_test").iterdir()}
    assert np.isin(stored_images(data.pool_beton(["car", "object"], "train"))[1], range(6)).all()
    assert read_json(tmp_path / "data" / "config.json")["balance"] is True
