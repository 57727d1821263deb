"""Image competitions in Kaggle's CSV layout (kit/image_csv.py): a labels CSV naming each image by id, with a label
column or one-hot columns; an image folder; test images named by test.csv or the sample submission. Tiny generated
images, real training, prediction and export; each bad CSV is one clear error before any run folder exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import CHROMIUM, browser_drop, make_image, run_kit

CLASSES = ["cat", "dog", "fox"]
FAST = ("image.size=32 image.test_size=0 model.name=tf_efficientnet_lite0 model.pretrained=none train.epochs=1 "
        "cv.folds=2 tta.views=[identity,hflip]")


def write_competition(root: Path, config: dict, form: str, rows: int = 24, tests: int = 5) -> Path:
    """A competition folder: config.yaml, train.csv (ids without extension, or with `.jpg` for `binary`),
    images/ for train and test, test.csv and sample_submission.csv."""
    (root / "images").mkdir(parents=True)
    labels = [i % (2 if form == "binary" else 3) for i in range(rows)]  # values: 3 looks, 24 ages
    ids = [f"tr{i:03d}" for i in range(rows)]
    for i, label in zip(ids, labels, strict=True):
        make_image(label, seed=int(i[2:])).save(root / "images" / f"{i}.jpg")
    test_ids = [f"te{i:03d}" for i in range(tests)]
    for k, i in enumerate(test_ids):
        make_image(k % 2, seed=500 + k).save(root / "images" / f"{i}.jpg")
    if form == "binary":  # Aerial Cactus: ids carry the extension, a 0/1 label, a probability per row
        train = pd.DataFrame({"id": [f"{i}.jpg" for i in ids], "has_fox": labels})
        sample = pd.DataFrame({"id": [f"{i}.jpg" for i in test_ids], "has_fox": 0.5})
    elif form == "values":  # PetFinder, faces-age: a number per photo, its value per row (RMSE)
        train = pd.DataFrame({"id": ids, "age": [20 + 15 * y + i for i, y in enumerate(labels)]})
        sample = pd.DataFrame({"id": test_ids, "age": 30.0})
    elif form == "onehot":  # Plant Pathology: one 0/1 column per class, one probability column per class
        train = pd.DataFrame({"image_id": ids} | {c: [int(y == k) for y in labels] for k, c in enumerate(CLASSES)})
        sample = pd.DataFrame({"image_id": test_ids} | {c: 1 / 3 for c in CLASSES})
    else:  # Dog Breed: a label column, one probability column per class
        train = pd.DataFrame({"id": ids, "breed": [CLASSES[y] for y in labels]})
        sample = pd.DataFrame({"id": test_ids} | {c: 1 / 3 for c in CLASSES})
    train.to_csv(root / "train.csv", index=False)
    sample.iloc[:, :1].to_csv(root / "test.csv", index=False)
    sample.to_csv(root / "sample_submission.csv", index=False)
    (root / "config.yaml").write_text(yaml.safe_dump({"task": "image", **config}))
    return root


BINARY = {"metric": "roc_auc", "data": {"labels": "train.csv", "images": "images", "test": "images",
                                        "sample": "sample_submission.csv", "id": "id"},
          "target": {"column": "has_fox"}}
ONEHOT = {"metric": "mean_roc_auc", "data": {"labels": "train.csv", "images": "images", "test": "test.csv",
                                             "sample": "sample_submission.csv", "id": "image_id"},
          "target": {"columns": CLASSES}}
VALUES = {"metric": "rmse", "data": {"labels": "train.csv", "images": "images", "test": "test.csv",
                                    "sample": "sample_submission.csv", "id": "id"},
          "target": {"column": "age"}}
LABELS = {"metric": "log_loss", "data": {"labels": "train.csv", "images": "images", "test": "test.csv",
                                         "sample": "sample_submission.csv", "id": "id"},
          "target": {"column": "breed"}}


@pytest.mark.parametrize(("form", "config", "columns"), [
    ("binary", BINARY, ["id", "has_fox"]),
    ("onehot", ONEHOT, ["image_id", *CLASSES]),
    ("labels", LABELS, ["id", *CLASSES])])
def test_a_csv_listed_competition_trains_predicts_and_exports(tmp_path, form, config, columns):
    comp = write_competition(tmp_path / form, config, form)
    settings = ["--set", f"image.cache_dir={tmp_path / 'cache'} {FAST}"]
    train = run_kit("train", "--comp", str(comp), "--runs", str(tmp_path / "runs"), *settings)
    assert train.returncode == 0, train.stderr
    run = tmp_path / "runs" / form / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    expected = ["0", "1"] if form == "binary" else CLASSES
    assert metrics["config"]["classes"] == expected and metrics["metric"]["name"] == config["metric"]
    oof = pd.read_csv(run / "oof.csv")
    assert sorted(oof["id"].astype(str)) == sorted(pd.read_csv(comp / "train.csv").iloc[:, 0])
    predict = run_kit("predict", "--comp", str(comp), "--runs", str(tmp_path / "runs"))
    assert predict.returncode == 0, predict.stderr
    submission = pd.read_csv(run / "submission.csv")
    sample = pd.read_csv(comp / "sample_submission.csv")
    assert list(submission.columns) == columns and list(submission.iloc[:, 0]) == list(sample.iloc[:, 0])
    values = submission.iloc[:, 1:].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    if form != "binary":
        assert np.allclose(values.sum(1), 1, atol=1e-5)
    exported = run_kit("export", "--comp", str(comp), "--runs", str(tmp_path / "runs"),
                       "--exports", str(tmp_path / "exports"), *settings)
    assert exported.returncode == 0, exported.stderr
    from_export = run_kit("predict", "--comp", str(comp), "--runs", str(tmp_path / "runs"), "--from", "export",
                          "--exports", str(tmp_path / "exports"), "--out", str(tmp_path / "from_export.csv"))
    assert from_export.returncode == 0, from_export.stderr
    served = pd.read_csv(tmp_path / "from_export.csv")
    assert list(served.iloc[:, 0]) == list(sample.iloc[:, 0])
    assert np.abs(served.iloc[:, 1:].to_numpy() - values).max() < 1e-4


@pytest.mark.parametrize(("break_it", "message"), [
    (lambda c: (c / "images" / "tr003.jpg").unlink(), r"1 training image\(s\) named in the CSV are not in .*tr003"),
    (lambda c: pd.read_csv(c / "train.csv").pipe(lambda f: pd.concat([f, f.iloc[:1]])).to_csv(c / "train.csv",
                                                                                               index=False),
     r"names the image\(s\) \['tr000'\] twice"),
    (lambda c: pd.read_csv(c / "train.csv").assign(breed=lambda f: f["breed"].where(f.index != 4)).to_csv(
        c / "train.csv", index=False), r"label 'breed' is empty on line 6"),
    (lambda c: make_image(0, 1).save(c / "images" / "tr002.png"), r"\['tr002'\] match more than one file"),
])
def test_a_bad_labels_csv_is_one_clear_error_before_any_run(tmp_path, break_it, message):
    comp = write_competition(tmp_path / "labels", LABELS, "labels")
    break_it(comp)
    result = run_kit("train", "--comp", str(comp), "--runs", str(tmp_path / "runs"), "--set",
                     f"image.cache_dir={tmp_path / 'cache'} {FAST}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "runs").exists()


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_make_new_writes_an_image_config_that_trains_and_predicts(tmp_path):
    comp = write_competition(tmp_path / "cactus", BINARY, "binary")
    (comp / "config.yaml").unlink()
    new = run_kit("new", "--comp", "cactus", "--data", str(comp), "--competitions", str(tmp_path / "comps"))
    assert new.returncode == 0, new.stderr
    assert "images:  " in new.stdout and "column id names its files" in new.stdout
    assert "type:    binary (exactly 2 distinct values)" in new.stdout and "metric:  roc_auc" in new.stdout
    config = yaml.safe_load((tmp_path / "comps" / "cactus" / "config.yaml").read_text())
    assert config["task"] == "image" and config["target"] == {"column": "has_fox"}
    assert config["data"]["id"] == "id" and config["data"]["images"] == str(comp / "images")
    assert config["image"] == {"size": 64, "test_size": 64}  # 40 px photos: the smallest crop
    where = ["--comp", str(tmp_path / "comps" / "cactus"), "--runs", str(tmp_path / "runs")]
    train = run_kit("train", *where, "--set", f"image.cache_dir={tmp_path / 'cache'} {FAST}")
    assert train.returncode == 0, train.stderr
    assert run_kit("predict", *where).returncode == 0
    submission = pd.read_csv(tmp_path / "runs" / "cactus" / "latest" / "submission.csv")
    assert list(submission.columns) == ["id", "has_fox"] and len(submission) == 5


def test_make_new_refuses_ambiguous_images_and_reads_tags(tmp_path):
    comp = write_competition(tmp_path / "twice", LABELS, "labels")
    (comp / "config.yaml").unlink()
    import shutil

    shutil.copytree(comp / "images", comp / "train_images")
    twice = run_kit("new", "--comp", "x", "--data", str(comp), "--competitions", str(tmp_path / "comps"))
    assert twice.returncode == 2 and "the training images are ambiguous" in twice.stderr
    assert "images/" in twice.stderr and "train_images/" in twice.stderr and "IMAGES=" in twice.stderr
    settled = run_kit("new", "--comp", "x", "--data", str(comp), "--competitions", str(tmp_path / "comps"),
                      "--images", "train_images")
    assert settled.returncode == 0 and "train_images (column id names its files)" in settled.stdout
    frame = pd.read_csv(comp / "train.csv")
    frame.assign(breed=[f"{b} pet" if i % 2 else b for i, b in enumerate(frame["breed"])]).to_csv(
        comp / "train.csv", index=False)
    tags = run_kit("new", "--comp", "y", "--data", str(comp), "--competitions", str(tmp_path / "comps"),
                   "--images", "images")
    assert tags.returncode == 0 and "type:    multilabel (space-separated tags: 4 tags in 6 combinations)" in \
        tags.stdout


def test_make_new_reads_image_paths_in_a_column_and_a_bare_test_folder(tmp_path):
    """train.csv names each photo by its path (`train_images/tr000.jpg`); no test.csv and no sample submission: the
    test images are every photo of the test* folder, ids their file names without extension."""
    comp = write_competition(tmp_path / "paths", LABELS, "labels")
    for name in ("config.yaml", "test.csv", "sample_submission.csv"):
        (comp / name).unlink()
    (comp / "train_images").mkdir()
    (comp / "test").mkdir()
    for photo in (comp / "images").iterdir():
        photo.rename(comp / ("train_images" if photo.name.startswith("tr") else "test") / photo.name)
    (comp / "images").rmdir()
    frame = pd.read_csv(comp / "train.csv")
    frame.assign(id="train_images/" + frame["id"] + ".jpg").rename(columns={"id": "path"}).to_csv(
        comp / "train.csv", index=False)
    comps = tmp_path / "comps"
    new = run_kit("new", "--comp", "paths", "--data", str(comp), "--competitions", str(comps))
    assert new.returncode == 0, new.stderr
    assert "column path names its files by their path" in new.stdout
    assert "the one folder named test*; every image in it" in new.stdout
    config = yaml.safe_load((comps / "paths" / "config.yaml").read_text())
    assert config["data"]["images"] == str(comp) and config["data"]["test"] == str(comp / "test")
    where = ["--comp", str(comps / "paths"), "--runs", str(tmp_path / "runs")]
    train = run_kit("train", *where, "--set", f"image.cache_dir={tmp_path / 'cache'} {FAST}")
    assert train.returncode == 0, train.stderr
    predict = run_kit("predict", *where)
    assert predict.returncode == 0, predict.stderr
    submission = pd.read_csv(tmp_path / "runs" / "paths" / "latest" / "submission.csv")
    assert list(submission.columns) == ["path", *CLASSES]  # log_loss, multiclass's usual metric: probabilities
    assert sorted(submission["path"]) == [f"te{i:03d}" for i in range(5)]
    assert np.allclose(submission[CLASSES].sum(axis=1), 1, atol=1e-5)
    (comp / "test_b").mkdir()
    (comp / "test" / "te000.jpg").rename(comp / "test_b" / "te000.jpg")
    two = run_kit("new", "--comp", "two", "--data", str(comp), "--competitions", str(comps))
    assert two.returncode == 2 and "several folders of test images (test, test_b)" in two.stderr
    assert "TEST=<folder>" in two.stderr and not (comps / "two").exists()
    settled = run_kit("new", "--comp", "two", "--data", str(comp), "--competitions", str(comps), "--test", "test_b")
    assert settled.returncode == 0 and "given by TEST=" in settled.stdout


def test_make_new_names_test_csv_when_the_test_photos_share_the_training_folder(tmp_path):
    from kit.scaffold import new_competition

    comp = write_competition(tmp_path / "shared", VALUES, "values")
    (comp / "sample_submission.csv").unlink()
    new = new_competition("shared", comp, tmp_path / "comps", metric="rmse")
    config = yaml.safe_load(new.path.read_text())
    assert config["data"]["test"] == str(comp / "test.csv") and "sample" not in config["data"]
    assert new.layout.test == comp / "images"


@pytest.mark.skipif(not (SHARED / "food-onehot").is_dir(), reason="needs ../shared/data")
def test_make_new_reads_the_development_image_competitions(tmp_path):
    from kit.scaffold import new_competition

    new = new_competition("onehot", SHARED / "food-onehot", tmp_path, metric="mean_roc_auc")
    assert (new.layout.id, new.layout.images.name, new.layout.test.name) == ("image_id", "images", "images")
    assert new.kind.name == "multiclass" and len(new.target["columns"]) == 10 and new.metric == "mean_roc_auc"
    tags = new_competition("tags", SHARED / "food-tags", tmp_path)
    assert (tags.layout.id, tags.layout.images.name, tags.layout.test.name) == ("image_name", "train-jpg", "test-jpg")
    assert tags.kind.name == "multilabel" and tags.metric == "fbeta_samples" and len(tags.classes) == 10
    assert tags.target == {"column": "tags"}
    combos = new_competition("combos", SHARED / "food-tags", tmp_path, metric="accuracy")  # each set of tags a class
    assert combos.kind.name == "multiclass" and "METRIC=accuracy scores binary or multiclass" in combos.type_rule
    age = new_competition("age", SHARED / "faces-age", tmp_path, metric="rmse")
    assert (age.layout.id, age.layout.images.name, age.kind.name, age.classes) == ("image_id", "images",
                                                                                  "regression", [])


def test_an_image_regression_serves_values_from_the_run_the_export_the_runtime_and_the_app(tmp_path):
    """Values (a regression): the network fits the standardised age, TTA averages values, and the submission, the
    export, kit.runtime and the app's /classify all answer the same number."""
    from gradio_client import Client, handle_file

    from kit import runtime
    from ui.app import build, serve

    comp = write_competition(tmp_path / "values", VALUES, "values")
    where = ["--comp", str(comp), "--runs", str(tmp_path / "runs")]
    settings = ["--set", f"image.cache_dir={tmp_path / 'cache'} {FAST}"]
    assert run_kit("train", *where, *settings).returncode == 0
    run = tmp_path / "runs" / "values" / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["target"]["type"] == "regression" and metrics["metric"]["name"] == "rmse"
    assert (run / "residuals.png").is_file() and metrics["per_class_recall"] == {}
    assert run_kit("predict", *where).returncode == 0
    submission = pd.read_csv(run / "submission.csv")
    assert list(submission.columns) == ["id", "age"] and submission["age"].between(0, 200).all()
    exports = tmp_path / "exports"
    exported = run_kit("export", *where, "--exports", str(exports), *settings)
    assert exported.returncode == 0, exported.stderr
    meta = runtime.read_meta(exports / "values")
    assert meta["output"]["values"] and meta["output"]["shape"] == ["N", 1] and meta["tta"]["views"]
    images = [comp / "images" / f"{i}.jpg" for i in submission["id"]]
    served = runtime.load(exports / "values").predict(images)
    assert served.shape == (5,) and np.abs(served - submission["age"].to_numpy()).max() < 1e-3
    app = build(exports)
    try:
        url = serve(app)
        gallery, label, status = Client(url, verbose=False).predict(
            files=[handle_file(str(images[0]))], competition="values", api_name="/classify")
        page = browser_drop(url, images[0]) if CHROMIUM else None  # the browser test, where Chromium is
    finally:
        app.close()
    assert label["label"] == f"age {served[0]:.4g}" and gallery[0]["caption"] == label["label"]
    assert page is None or label["label"] in page
