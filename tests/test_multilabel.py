"""Multi-label tags (kit/target/tags.py `Multilabel`): the metrics against scikit-learn, multi-label stratified folds,
per-tag thresholds chosen on OOF rows only, and a Planet-layout competition (train-jpg/, a space-separated `tags`
column, the test images named by the sample submission) from `make new` through training, the submission, the
export, kit.runtime and the app. Tiny generated images, real training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import CHROMIUM, browser_drop, make_image, run_kit
from PIL import Image
from sklearn import metrics as skm

from kit.folds import multilabel_folds, stratified_folds
from kit.metrics import get_metric
from kit.report import decision_threshold
from kit.target import Multilabel, infer

TAGS = ["cat", "dog", "fox"]
FAST = ("image.size=32 image.test_size=0 model.name=tf_efficientnet_lite0 model.pretrained=none train.epochs=1 "
        "cv.folds=2 tta.views=[identity,hflip]")

Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
P = np.array([[.9, .2, .6], [.3, .7, .1], [.6, .4, .2], [.1, .2, .8], [.7, .6, .3], [.2, .9, .4], [.8, .5, .7],
              [.4, .1, .3]])


@pytest.mark.parametrize(("name", "expected", "greater"), [
    ("fbeta_samples", skm.fbeta_score(Y, P >= 0.5, beta=2, average="samples"), True),
    ("fbeta_samples:0.5", skm.fbeta_score(Y, P >= 0.5, beta=0.5, average="samples"), True),
    ("f1_samples", skm.f1_score(Y, P >= 0.5, average="samples"), True),
    ("f1_macro", skm.f1_score(Y, P >= 0.5, average="macro"), True),
    ("mean_roc_auc", np.mean([skm.roc_auc_score(Y[:, k], P[:, k]) for k in range(3)]), True),
    ("log_loss", np.mean([skm.log_loss(Y[:, k], P[:, k]) for k in range(3)]), False),
])
def test_tag_metrics_equal_scikit_learn(name, expected, greater):
    metric = get_metric(name, Multilabel(TAGS))
    assert metric.score(Y.astype(np.float32), P) == pytest.approx(expected, abs=1e-12)
    assert metric.greater_is_better is greater


def test_f2_over_samples_is_planets_formula_and_needs_tags():
    """The food-tags README's formula per image: 5pr / (4p + r), 0 when no tag is right."""
    truth, tags = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0]]), np.array([[1, 0, 1], [1, 0, 0], [1, 1, 1]])
    f2 = get_metric("fbeta_samples", Multilabel(TAGS)).fn(truth, tags)
    assert f2 == pytest.approx(np.mean([5 * .5 * .5 / (4 * .5 + .5), 0.0, 5 * (1 / 3) / (4 / 3 + 1)]))
    from kit.errors import KitError

    with pytest.raises(KitError, match="cannot score a multiclass target"):
        get_metric("fbeta_samples", "multiclass")
    with pytest.raises(KitError, match="cannot score a multilabel target"):
        get_metric("accuracy", "multilabel")


def test_tags_are_inferred_from_space_separated_labels_but_not_from_class_names_with_spaces():
    kind, rule = infer(pd.Series(["cat", "dog fox", "cat fox", "dog"]))
    assert kind is Multilabel and "3 tags in 4 combinations" in rule
    assert infer(pd.Series(["new york", "los angeles", "boston"]))[0].name == "multiclass"
    assert Multilabel.classes_of(pd.Series(["fox cat", "dog"])) == TAGS
    target = Multilabel(TAGS)
    assert target.encode(pd.Series(["fox cat", "dog", ""])).tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    bad, expected = target.invalid(pd.Series(["cat", "cat owl"]))
    assert bad.tolist() == [False, True] and "out of ['cat', 'dog', 'fox']" in expected


def test_multilabel_folds_spread_every_tag_over_every_part():
    rng = np.random.default_rng(0)
    tags = rng.random((300, 6)) < np.array([0.5, 0.3, 0.1, 0.05, 0.03, 0.02])
    folds = stratified_folds(tags, 5, seed=1)
    valid = np.concatenate([v for _, v in folds])
    assert sorted(valid.tolist()) == list(range(300))  # each row validated once
    for train, part in folds:
        assert np.intersect1d(train, part).size == 0
        assert tags[train].any(0).all()  # every tag in every training part
        share = tags[part].sum(0) / tags.sum(0)
        assert np.all(np.abs(share - 0.2) <= 0.2 * 0.5 + 1 / tags.sum(0))  # each part holds about a fifth of a tag
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, multilabel_folds(tags, 5, 1), strict=True))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, multilabel_folds(tags, 5, 2), strict=True))
    # A plain random split leaves the rarest tag out of some training part far more often; iterative stratification
    # leaves it in every part (6 rows of it, 5 folds).
    rare = np.zeros((300, 6), dtype=bool)
    rare[:, 0] = True
    rare[rng.choice(300, 6, replace=False), 5] = True
    assert all(rare[train, 5].any() and rare[part, 5].sum() >= 1 for train, part in stratified_folds(rare, 5, 3))


def test_per_tag_thresholds_are_chosen_on_oof_rows_and_cross_fitted():
    rng = np.random.default_rng(0)
    truth = (rng.random((400, 3)) < [0.5, 0.2, 0.1]).astype(np.float32)
    probs = np.clip(0.1 + 0.25 * truth + rng.normal(0, 0.1, truth.shape), 0, 1)  # every p < 0.5 on the rare tags
    target, f2 = Multilabel(TAGS), get_metric("fbeta_samples", Multilabel(TAGS))
    chosen = target.best_threshold(f2, truth, probs)
    assert len(chosen) == 3 and max(chosen) < 0.5
    assert f2.score(truth, probs, chosen) > f2.score(truth, probs) + 0.2
    fold_of = np.tile(np.arange(4), 100)[None]
    served, per_fold = decision_threshold(f2, target, truth, probs[None], fold_of)
    assert served == chosen and sorted(per_fold) == [0, 1, 2, 3]
    # Fold 0's thresholds come from the other folds' rows only: scrambling fold 0's predictions leaves them be.
    scrambled = probs.copy()
    scrambled[fold_of[0] == 0] = rng.random(((fold_of[0] == 0).sum(), 3))
    _, again = decision_threshold(f2, target, truth, scrambled[None], fold_of)
    assert again[0] == per_fold[0] and again[1] != per_fold[1]
    assert decision_threshold(get_metric("mean_roc_auc", target), target, truth, probs[None], fold_of) == (None, None)


def tag_image(tags: list[int], seed: int, size: int = 40) -> Image.Image:
    """A picture holding each of its tags' class pictures (conftest.make_image) as a vertical strip."""
    strips = [np.asarray(make_image(t, seed * 7 + t, size)) for t in tags]
    width = size // len(tags)
    return Image.fromarray(np.concatenate([s[:, :width] for s in strips], axis=1))


def write_planet(root: Path, rows: int = 30, tests: int = 7) -> Path:
    """Planet's layout: train-jpg/ and test-jpg/, train.csv `image_name,tags` (space-separated, ids without the
    extension), no test.csv: sample_submission.csv names the test images."""
    combos = [[0], [1], [2], [0, 1], [1, 2], [0, 2]]
    for split, count in (("train", rows), ("test", tests)):
        (root / f"{split}-jpg").mkdir(parents=True)
        for i in range(count):
            tag_image(combos[i % len(combos)], seed=i + (1000 if split == "test" else 0)).save(
                root / f"{split}-jpg" / f"{split}_{i}.jpg")
    train = pd.DataFrame({"image_name": [f"train_{i}" for i in range(rows)],
                          "tags": [" ".join(TAGS[t] for t in combos[i % len(combos)]) for i in range(rows)]})
    train.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_name": [f"test_{i}" for i in range(tests)], "tags": "cat"}).to_csv(
        root / "sample_submission.csv", index=False)
    return root


def test_a_planet_layout_competition_runs_from_make_new_to_the_app(tmp_path):
    """make new infers the tags; training, the submission (tags above per-tag thresholds), the export, kit.runtime
    and the app's /classify all answer the same tags."""
    from gradio_client import Client, handle_file

    from kit import runtime
    from ui.app import build, serve

    data = write_planet(tmp_path / "planet")
    new = run_kit("new", "--comp", "planet", "--data", str(data), "--competitions", str(tmp_path / "comps"))
    assert new.returncode == 0, new.stderr
    assert "type:    multilabel (space-separated tags: 3 tags in 6 combinations)" in new.stdout
    assert "metric:  fbeta_samples" in new.stdout and "train-jpg (column image_name names its files" in new.stdout
    config = yaml.safe_load((tmp_path / "comps" / "planet" / "config.yaml").read_text())
    assert config["target"] == {"column": "tags"} and config["data"]["test"] == str(data / "test-jpg")
    where = ["--comp", str(tmp_path / "comps" / "planet"), "--runs", str(tmp_path / "runs")]
    settings = ["--set", f"image.cache_dir={tmp_path / 'cache'} {FAST}"]
    train = run_kit("train", *where, *settings)
    assert train.returncode == 0, train.stderr
    run = tmp_path / "runs" / "planet" / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["target"]["type"] == "multilabel" and metrics["config"]["classes"] == TAGS
    assert len(metrics["threshold"]) == 3 and "per-tag thresholds" in train.stderr
    assert (run / "tags.png").is_file() and set(metrics["per_class_recall"]) <= set(TAGS)
    oof = pd.read_csv(run / "oof.csv", keep_default_na=False)
    assert set(oof["target"]) == set(pd.read_csv(data / "train.csv")["tags"])
    assert list(oof.columns[-3:]) == [f"net_prob_{t}" for t in TAGS]
    assert run_kit("predict", *where).returncode == 0
    submission = pd.read_csv(run / "submission.csv", keep_default_na=False)
    assert list(submission.columns) == ["image_name", "tags"] and len(submission) == 7
    assert all(set(t.split()) <= set(TAGS) for t in submission["tags"])
    exports = tmp_path / "exports"
    exported = run_kit("export", *where, "--exports", str(exports), *settings)
    assert exported.returncode == 0, exported.stderr
    meta = runtime.read_meta(exports / "planet")
    assert meta["output"]["tags"] and meta["output"]["shape"] == ["N", 3] and meta["threshold"] == metrics["threshold"]
    assert meta["parity"]["batch_sizes"] == [1, 7] and meta["parity"]["onnx_max_abs_diff"] <= 1e-4
    images = [data / "test-jpg" / f"{i}.jpg" for i in submission["image_name"]]
    for backend in ("onnx", "torchscript"):
        served = runtime.load(exports / "planet", backend=backend)
        assert served.predict(images).tolist() == submission["tags"].tolist()
        probs = served.predict_proba(images)
        assert probs.shape == (7, 3) and not np.allclose(probs.sum(1), 1)  # independent per tag
    app = build(exports)
    try:
        url = serve(app)
        gallery, label, _ = Client(url, verbose=False).predict(
            files=[handle_file(str(images[0]))], competition="planet", api_name="/classify")
        page = browser_drop(url, images[0]) if CHROMIUM else None  # the browser test, where Chromium is
    finally:
        app.close()
    assert page is None or gallery[0]["caption"] in page
    first = set(submission["tags"][0].split())  # the app lists them likeliest first
    assert set(gallery[0]["caption"].split()) == first or (not first and gallery[0]["caption"] == "no tag")
    shown = {c["label"] for c in label["confidences"]}
    assert shown == first or (not first and len(shown) == 1)


def test_multi_hot_columns_are_tags_and_a_non_binary_cell_is_refused(tmp_path):
    data = write_planet(tmp_path / "hot")
    frame = pd.read_csv(data / "train.csv")
    hot = pd.DataFrame({"image_name": frame["image_name"]} | {t: frame["tags"].str.split().apply(lambda s, t=t: int(
        t in s)) for t in TAGS})
    hot.to_csv(data / "train.csv", index=False)
    pd.DataFrame({"image_name": [f"test_{i}" for i in range(7)]} | {t: 0.5 for t in TAGS}).to_csv(
        data / "sample_submission.csv", index=False)
    new = run_kit("new", "--comp", "hot", "--data", str(data), "--competitions", str(tmp_path / "comps"),
                  "--metric", "mean_roc_auc")
    assert new.returncode == 0, new.stderr
    assert "type:    multilabel (3 0/1 columns, some rows with several 1s or none (multi-hot)" in new.stdout
    where = ["--comp", str(tmp_path / "comps" / "hot"), "--set", f"image.cache_dir={tmp_path / 'cache'} {FAST}"]
    assert run_kit("train", *where, "--runs", str(tmp_path / "runs")).returncode == 0
    assert run_kit("predict", *where[:2], "--runs", str(tmp_path / "runs")).returncode == 0
    submission = pd.read_csv(tmp_path / "runs" / "hot" / "latest" / "submission.csv")
    assert list(submission.columns) == ["image_name", *TAGS]  # a probability column per tag, as the sample has
    assert submission[TAGS].stack().between(0, 1).all() and not np.allclose(submission[TAGS].sum(1), 1)
    hot.loc[3, "dog"] = 2
    hot.to_csv(data / "train.csv", index=False)
    refused = run_kit("train", *where, "--runs", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "line 5 has ['1', '2', '0'] in target.columns" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "refused").exists()


def test_a_table_with_tags_is_not_given_to_learners_that_cannot_fit_them(tmp_path):
    """Learners from libraries fit one label per row: a hand-set multilabel table target is refused by name."""
    comp = tmp_path / "tagged"
    comp.mkdir()
    pd.DataFrame({"id": range(20), "x": range(20), "tags": ["a b", "a", "b", "a c"] * 5}).to_csv(
        comp / "train.csv", index=False)
    pd.DataFrame({"id": range(20, 25), "x": range(5)}).to_csv(comp / "test.csv", index=False)
    (comp / "config.yaml").write_text(yaml.safe_dump({
        "task": "tabular", "metric": "fbeta_samples", "learners": ["gbdt"],
        "data": {"train": "train.csv", "test": "test.csv", "id": "id"},
        "target": {"column": "tags", "type": "multilabel"}}))
    result = run_kit("train", "--comp", str(comp), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 2 and "fitted by the network only" in result.stderr and "learners: [net]" in \
        result.stderr
    assert not (tmp_path / "runs").exists()
