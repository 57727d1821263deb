"""The CLI as a user runs it: end to end on Titanic, and one clear message for each bad input."""

import json

import pandas as pd
import pytest
from conftest import TITANIC, run_kit

FAST = ["--set", "cv.folds=3 train.epochs=4"]


@pytest.fixture(scope="module")
def titanic_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = run_kit("train", "--comp", "titanic", "--runs", str(runs), *FAST)
    assert result.returncode == 0, result.stderr
    return runs, result


def test_train_writes_a_complete_run(titanic_run):
    runs, result = titanic_run
    run = runs / "titanic" / "latest"
    assert "CV accuracy" in result.stderr
    for name in ["config.yaml", "oof.csv", "metrics.json", "log.csv", "curves.png", "confusion.png",
                 "learners.png", "fold0.pt", "fold0.json", "fold2.pt"]:
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["folds"]) == 3 and metrics["config"]["cv"]["folds"] == 3
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 891 and sorted(oof["fold"].unique()) == [0, 1, 2]
    assert metrics["cv"]["oof"] == pytest.approx((oof["pred"] == oof["target"]).mean())
    assert 0.7 < metrics["cv"]["oof"] < 0.95  # a real model, better than the 0.62 majority class


def test_checkpoints_load_with_weights_only(titanic_run):
    import torch

    run = titanic_run[0] / "titanic" / "latest"
    learners = torch.load(run / "fold0.pt", weights_only=True)  # {learner: state_dict}
    assert list(learners) == ["net", "gbdt", "linear"]
    assert all(isinstance(v, torch.Tensor) for state in learners.values() for v in state.values())
    assert "preprocessing" in json.loads((run / "fold0.json").read_text())


def test_predict_writes_a_valid_submission(titanic_run, tmp_path):
    runs, _ = titanic_run
    out = tmp_path / "sub.csv"
    result = run_kit("predict", "--comp", "titanic", "--runs", str(runs), "--out", str(out))
    assert result.returncode == 0, result.stderr
    sub = pd.read_csv(out)
    test = pd.read_csv(TITANIC / "test.csv")
    assert list(sub.columns) == ["PassengerId", "Survived"]
    assert sub["PassengerId"].tolist() == test["PassengerId"].tolist()  # test.csv order
    assert set(sub["Survived"]) == {0, 1}


def test_same_seed_same_results(tmp_path):
    outputs = []
    for name in ("a", "b"):
        runs = tmp_path / name
        train = run_kit("train", "--comp", "titanic", "--runs", str(runs), "--set", "cv.folds=2 train.epochs=2")
        assert train.returncode == 0
        assert run_kit("predict", "--comp", "titanic", "--runs", str(runs)).returncode == 0
        run = runs / "titanic" / "latest"
        outputs.append(((run / "oof.csv").read_text(), (run / "submission.csv").read_text()))
    assert outputs[0] == outputs[1]


def _bad_csv(tmp_path, frame_or_text, name="train.csv"):
    path = tmp_path / name
    if isinstance(frame_or_text, str):
        path.write_text(frame_or_text)
    else:
        frame_or_text.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_column", "missing required column(s) 'Age'"),
        ("empty", "is empty"),
        ("header_only", "no data rows"),
        ("non_numeric", "column 'Fare' must be numeric, but line 4 holds 'cheap'"),
        ("bad_label", "expected one of ['0', '1']"),
        ("semicolons", "looks separated by ';', not by commas"),
    ],
)
def test_bad_training_csv_gives_one_clear_message(tmp_path, titanic_train, case, message):
    frame = titanic_train.head(40)
    data = {
        "missing_column": lambda: frame.drop(columns=["Age"]),
        "empty": lambda: "",
        "header_only": lambda: ",".join(frame.columns) + "\n",
        "non_numeric": lambda: frame.assign(Fare=["7.25", "8", "cheap"] + frame["Fare"].tolist()[3:]),
        "bad_label": lambda: frame.assign(Survived=["yes"] + frame["Survived"].tolist()[1:]),
        "semicolons": lambda: frame.to_csv(index=False, sep=";"),
    }[case]()
    path = _bad_csv(tmp_path, data)
    result = run_kit("train", "--comp", "titanic", "--runs", str(tmp_path / "runs"), "--data", str(path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_duplicate_test_ids_are_refused(titanic_run, tmp_path, titanic_test):
    runs, _ = titanic_run
    frame = titanic_test.head(10)
    frame = pd.concat([frame, frame.head(1)])
    path = _bad_csv(tmp_path, frame, "test.csv")
    out = tmp_path / "sub.csv"
    result = run_kit("predict", "--comp", "titanic", "--runs", str(runs), "--test", str(path), "--out", str(out))
    assert result.returncode == 2
    assert "duplicate 'PassengerId' values ['892']" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--comp", "nope"], "unknown competition 'nope'; known competitions: "),
        (["train", "--comp", "titanic", "--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
        (["train", "--comp", "titanic", "--set", "cv.folds=-1"], "'cv.folds' is -1; it must be at least 2"),
        (["train", "--comp", "titanic", "--set", "cv.folds=given"], "cv.folds=given needs data with its own"),
        (["train", "--comp", "titanic", "--data", "/no/such/file.csv"], "training file not found: /no/such/file.csv"),
        (["predict", "--comp", "titanic", "--run", "nope"], "run 'nope' not found for 'titanic'"),
    ],
)
def test_bad_arguments_give_one_clear_message(tmp_path, args, message):
    result = run_kit(*args, "--runs", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
