"""Ordinal targets (kit/target/values.py `Ordinal`): ordered classes scored by qwk are fitted as a regression on the
class index and answered through cut points chosen on OOF rows (cross-fitted); the submission, the export,
kit.runtime and the app answer the class. Tiny generated images, real training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import CHROMIUM, browser_drop, make_image, run_kit
from sklearn import metrics as skm

from kit.metrics import get_metric
from kit.report import decision_threshold
from kit.target import Ordinal, infer

GRADES = ["0", "1", "2", "3", "4"]
FAST = ("image.size=32 image.test_size=0 model.name=tf_efficientnet_lite0 model.pretrained=none train.epochs=1 "
        "cv.folds=2 tta.views=[identity,hflip]")


def test_ordered_whole_numbers_with_qwk_are_ordinal_and_other_metrics_keep_classes():
    grades = pd.Series([0, 1, 2, 3, 4, 2, 1] * 3)
    kind, rule = infer(grades, get_metric("qwk"))
    assert kind is Ordinal and "5 ordered whole numbers" in rule
    assert infer(grades, get_metric("accuracy"))[0].name == "multiclass"
    assert infer(pd.Series(["mild", "none", "severe"] * 3), get_metric("qwk"))[0].name == "multiclass"
    assert infer(pd.Series([0, 1] * 5), get_metric("qwk"))[0].name == "binary"
    target = Ordinal(GRADES)
    assert target.encode(pd.Series([3, 0, 4])).tolist() == [3, 0, 4]
    assert target.labels(np.array([[-1.0], [0.49], [0.5], [2.2], [9.0]]), None).tolist() == [0, 0, 1, 2, 4]
    assert target.labels(np.array([[0.7], [1.6], [3.6]]), [0.8, 1.5, 2.5, 3.5]).tolist() == [0, 2, 4]


def test_cut_points_are_chosen_on_oof_rows_for_qwk_and_cross_fitted():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    values = (0.6 * y + 0.4 + rng.normal(0, 0.35, 400))[:, None]  # shrunk towards the middle, as regressions are
    target, qwk = Ordinal(GRADES), get_metric("qwk", Ordinal(GRADES))
    cuts = target.best_threshold(qwk, y, values)
    assert len(cuts) == 4 and all(a < b for a, b in zip(cuts, cuts[1:], strict=False))
    assert qwk.score(y, values, cuts) > qwk.score(y, values) + 0.02
    assert qwk.score(y, values, cuts) == pytest.approx(skm.cohen_kappa_score(
        y, np.searchsorted(cuts, values[:, 0], side="right"), weights="quadratic"))
    fold_of = np.tile(np.arange(4), 100)[None]
    served, per_fold = decision_threshold(qwk, target, y, values[None], fold_of)
    assert served == cuts and per_fold[0] == target.best_threshold(qwk, y[fold_of[0] != 0], values[fold_of[0] != 0])


def write_grades(root: Path, rows: int = 30, tests: int = 6) -> Path:
    """APTOS' layout: train.csv `id_code,diagnosis` (0-4), train_images/ and test_images/, test.csv."""
    for split, count in (("train", rows), ("test", tests)):
        (root / f"{split}_images").mkdir(parents=True)
        for i in range(count):
            image = make_image(i % 5, seed=i + (700 if split == "test" else 0))
            image.save(root / f"{split}_images" / f"{split}{i}.png")
    pd.DataFrame({"id_code": [f"train{i}" for i in range(rows)], "diagnosis": [i % 5 for i in range(rows)]}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"id_code": [f"test{i}" for i in range(tests)]}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id_code": [f"test{i}" for i in range(tests)], "diagnosis": 0}).to_csv(
        root / "sample_submission.csv", index=False)
    return root


def test_an_ordinal_image_competition_answers_classes_from_the_run_the_export_the_runtime_and_the_app(tmp_path):
    from gradio_client import Client, handle_file

    from kit import runtime
    from ui.app import build, serve

    data = write_grades(tmp_path / "grades")
    new = run_kit("new", "--comp", "grades", "--data", str(data), "--competitions", str(tmp_path / "comps"),
                  "--metric", "qwk")
    assert new.returncode == 0, new.stderr
    assert "type:    ordinal (5 ordered whole numbers" in new.stdout
    assert yaml.safe_load((tmp_path / "comps" / "grades" / "config.yaml").read_text())["metric"] == "qwk"
    where = ["--comp", str(tmp_path / "comps" / "grades"), "--runs", str(tmp_path / "runs")]
    settings = ["--set", f"image.cache_dir={tmp_path / 'cache'} {FAST}"]
    train = run_kit("train", *where, *settings)
    assert train.returncode == 0, train.stderr
    run = tmp_path / "runs" / "grades" / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["target"]["type"] == "ordinal" and len(metrics["threshold"]) == 4 and "cut points" in train.stderr
    assert (run / "confusion.png").is_file() and (run / "residuals.png").is_file()
    assert run_kit("predict", *where).returncode == 0
    submission = pd.read_csv(run / "submission.csv")
    assert list(submission.columns) == ["id_code", "diagnosis"] and submission["diagnosis"].isin(range(5)).all()
    exports = tmp_path / "exports"
    assert run_kit("export", *where, "--exports", str(exports), *settings).returncode == 0
    meta = runtime.read_meta(exports / "grades")
    assert meta["output"]["ordinal"] and meta["output"]["shape"] == ["N", 1] and meta["threshold"] == \
        metrics["threshold"]
    images = [data / "test_images" / f"{i}.png" for i in submission["id_code"]]
    served = runtime.load(exports / "grades").predict(images)
    assert served.astype(int).tolist() == submission["diagnosis"].tolist()
    app = build(exports)
    try:
        url = serve(app)
        gallery, label, _ = Client(url, verbose=False).predict(
            files=[handle_file(str(images[0]))], competition="grades", api_name="/classify")
        page = browser_drop(url, images[0]) if CHROMIUM else None  # the browser test, where Chromium is
    finally:
        app.close()
    assert label["label"] == str(submission["diagnosis"][0]) and gallery[0]["caption"].startswith(label["label"])
    assert page is None or gallery[0]["caption"] in page


def test_a_config_may_set_the_ordinal_type_and_leave_the_grades_to_the_labels():
    """target.type: ordinal without classes is checked when the labels give the grades; listed classes are checked."""
    from kit.config import load_config
    from kit.errors import KitError

    assert load_config("titanic", ["target.type=ordinal", "metric=qwk", "classes=[]"]).target.type == "ordinal"
    with pytest.raises(KitError, match="an ordinal target needs at least three classes"):
        load_config("titanic", ["target.type=ordinal", "metric=qwk"])  # titanic lists two classes
