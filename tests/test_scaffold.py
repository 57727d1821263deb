"""`make new` (kit/scaffold.py): the config inferred from a competition's files, and what it refuses."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kit import scaffold
from kit.errors import KitError
from kit.scaffold import new_competition
from tests.conftest import CPU_ENV, ROOT, run_kit

SHARED = ROOT.parent / "shared" / "data"  # development competitions: read in place, never copied into the repo
DAY = datetime.date(2025, 1, 2)


def shared(name: str) -> Path:
    if not (SHARED / name / "train.csv").is_file():
        pytest.skip(f"development competition {SHARED / name} is absent")
    return (SHARED / name).resolve()  # make new writes resolved paths (../shared may be a link)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def write_comp(folder: Path, train: dict, test: dict, sample: dict | None = None,
               sample_name: str = "sample_submission.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(train).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(test).to_csv(folder / "test.csv", index=False)
    if sample is not None:
        pd.DataFrame(sample).to_csv(folder / sample_name, index=False)
    return folder


def kinds_of(new) -> dict[str, str]:
    return {c: k["kind"] for c, k in new.kinds.items()}


def test_california_housing_regression(tmp_path):
    data = shared("california-housing")
    new = new_competition("cal", data, tmp_path, today=DAY)
    assert load(tmp_path / "cal" / "config.yaml") == {
        "task": "tabular",
        "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv"), "id": "id",
                 "sample": str(data / "sample_submission.csv")},
        "target": {"column": "median_house_value", "type": "regression"}, "metric": "rmse",
        "learners": ["gbdt", "catboost", "linear", "net"]}
    assert new.type_rule.startswith("numbers with") and new.metric_rule.startswith("the usual one for regression")
    numeric = ["longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms", "population",
               "households", "median_income"]
    assert kinds_of(new) == {**{c: "numeric" for c in numeric}, "ocean_proximity": "categorical"}
    assert new.kinds["total_bedrooms"]["reason"] == "all 16,348 values are numbers (164 empty)"
    text = (tmp_path / "cal" / "config.yaml").read_text()
    assert text.startswith(f"# cal: written by `make new` from {data} on 2025-01-02.")
    assert "#   ocean_proximity: categorical (5 distinct values)" in text


def test_bank_marketing_binary(tmp_path):
    new = new_competition("bank", shared("bank-marketing"), tmp_path)
    config = load(new.path)
    assert config["data"]["id"] == "id" and config["target"] == {"column": "y", "type": "binary"}
    assert config["metric"] == "roc_auc" and config["classes"] == ["no", "yes"]
    assert new.type_rule == "exactly 2 distinct values" and "positive: yes" in new.summary()
    categorical = ["job", "marital", "education", "default", "housing", "loan", "contact", "month", "poutcome"]
    numeric = ["age", "balance", "day", "campaign", "pdays", "previous"]
    assert kinds_of(new) == {**{c: "categorical" for c in categorical}, **{c: "numeric" for c in numeric}}


def test_otto_multiclass_classes_in_the_samples_order(tmp_path):
    new = new_competition("otto", shared("otto"), tmp_path)
    config = load(new.path)
    assert config["data"]["id"] == "id" and config["target"] == {"column": "target", "type": "multiclass"}
    assert config["metric"] == "log_loss" and config["classes"] == [f"Class_{i}" for i in range(1, 10)]
    assert "the sample's other columns are its classes" in new.target_rule
    assert kinds_of(new) == {f"feat_{i}": "numeric" for i in range(1, 94)}


def test_titanic_with_gender_submission(tmp_path):
    data = shared("titanic")
    new = new_competition("tt", data, tmp_path, metric="accuracy")
    config = load(new.path)
    assert config["data"] == {"train": str(data / "train.csv"), "test": str(data / "test.csv"), "id": "PassengerId",
                              "sample": str(data / "gender_submission.csv")}
    assert config["target"] == {"column": "Survived", "type": "binary"} and config["classes"] == ["0", "1"]
    assert config["metric"] == "accuracy" and new.metric_rule == "given by METRIC="
    assert kinds_of(new) == {"Pclass": "numeric", "Age": "numeric", "SibSp": "numeric", "Parch": "numeric",
                             "Fare": "numeric", "Sex": "categorical", "Embarked": "categorical",
                             "Name": "text", "Ticket": "text", "Cabin": "text"}
    assert new.kinds["Name"]["reason"].startswith("free text")


def test_cli_subprocess_writes_into_the_given_competitions_folder(tmp_path):
    data = shared("california-housing")
    done = run_kit("new", "--comp", "cal", "--data", str(data), "--metric", "rmsle", "--competitions", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert load(tmp_path / "cal" / "config.yaml")["metric"] == "rmsle"
    assert "type:    regression (numbers with" in done.stdout and "METRIC=rmsle scores regression)" in done.stdout
    assert f"next:  make train predict COMP={tmp_path / 'cal'}" in done.stdout  # a folder outside competitions/
    again = run_kit("new", "--comp", "cal", "--data", str(data), "--competitions", str(tmp_path))
    assert again.returncode == 2 and "exists" in again.stderr and "FORCE=1" in again.stderr


def test_ambiguous_target_is_refused_naming_both_and_nothing_is_written(tmp_path):
    data = write_comp(tmp_path / "d", {"id": range(30), "x": range(30), "label": [0, 1] * 15, "score": range(30)},
                      {"id": range(30, 40), "x": range(10)})
    with pytest.raises(KitError, match=r"label, score.*TARGET="):
        new_competition("amb", data, tmp_path / "comps")
    assert not (tmp_path / "comps").exists() or not any((tmp_path / "comps").iterdir())
    new = new_competition("amb", data, tmp_path / "comps", target="label")
    assert new.target == "label" and new.not_in_test == ["score"]
    assert load(new.path)["features"] == {"drop": ["score"]}  # in train only: no feature of the test rows


def test_a_metric_that_does_not_fit_the_type_is_refused_naming_the_ones_that_do(tmp_path):
    data = write_comp(tmp_path / "d", {"id": range(40), "x": range(40), "y": ["a", "b", "c", "d"] * 10},
                      {"id": range(40, 50), "x": range(10)})
    with pytest.raises(KitError, match=r"metric f1 scores binary targets.*multiclass.*fit: accuracy.*log_loss"):
        new_competition("m", data, tmp_path / "comps", metric="f1")
    with pytest.raises(KitError, match=r"metric rmse scores regression targets, but 'y' is multiclass.*accuracy"):
        new_competition("m", data, tmp_path / "comps", metric="rmse")
    with pytest.raises(KitError, match=r"METRIC=nope is not a metric kit knows \(accuracy, .*r2\)"):
        new_competition("m", data, tmp_path / "comps", metric="nope")
    assert not (tmp_path / "comps" / "m").exists()
    regression = write_comp(tmp_path / "r", {"id": range(40), "y": [i * 1.5 for i in range(40)]}, {"id": range(5)})
    with pytest.raises(KitError, match=r"metric roc_auc scores .*regression.*fit: rmse, rmsle, mae, r2"):
        new_competition("r", regression, tmp_path / "comps", metric="roc_auc")


def test_a_competitions_own_metric_file_is_accepted(tmp_path):
    data = write_comp(tmp_path / "d", {"id": range(30), "y": [0, 1, 1] * 10}, {"id": range(5)})
    (tmp_path / "comps" / "own").mkdir(parents=True)
    (tmp_path / "comps" / "own" / "gini.py").write_text("NEEDS = 'proba'\n")
    new = new_competition("own", data, tmp_path / "comps", metric="gini")
    assert load(new.path)["metric"] == "gini.py" and "own gini.py" in new.metric_rule


def test_an_existing_config_is_refused_without_force(tmp_path):
    data = write_comp(tmp_path / "d", {"id": range(30), "y": [0, 1] * 15}, {"id": range(5)})
    path = tmp_path / "comps" / "c" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("hand: written\n")
    with pytest.raises(KitError, match=r"config.yaml exists; `make new ... FORCE=1`"):
        new_competition("c", data, tmp_path / "comps")
    assert path.read_text() == "hand: written\n"
    new_competition("c", data, tmp_path / "comps", force=True)
    assert load(path)["target"] == {"column": "y", "type": "binary"}


def test_a_failed_write_leaves_no_folder(tmp_path, monkeypatch):
    data = write_comp(tmp_path / "d", {"id": range(30), "y": [0, 1] * 15}, {"id": range(5)})

    def full_disk(path, text):  # the folder is made, then the write fails
        Path(path).parent.mkdir(parents=True)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scaffold, "write_text", full_disk)
    with pytest.raises(OSError):
        new_competition("c", data, tmp_path / "comps")
    assert not (tmp_path / "comps" / "c").exists()


def test_awkward_names_round_trip(tmp_path):
    classes = ["no: never", "'maybe' [sort of], {x}", 'yes "sure" # really', "null", "1.0", "ünï\ncode"]
    target, ident = "the, [target]: y", "my id #1"
    data = write_comp(tmp_path / "d", {ident: range(60), "col: 'odd'\nname": ["a", "b"] * 30,
                                       target: classes * 10},
                      {ident: range(60, 70), "col: 'odd'\nname": ["a"] * 10},
                      {ident: range(60, 70), **{c: 0.2 for c in classes}})
    new = new_competition("odd", data, tmp_path / "comps")
    config = load(new.path)
    assert config["data"]["id"] == ident and config["target"] == {"column": target, "type": "multiclass"}
    assert config["classes"] == classes  # the sample's columns, in its order
    assert config["data"]["sample"] == str(data / "sample_submission.csv")
    assert new.kinds["col: 'odd'\nname"]["kind"] == "categorical"


def test_id_inferred_without_a_sample_and_ambiguity_refused(tmp_path):
    both = write_comp(tmp_path / "a", {"Key": [f"k{i}" for i in range(30)], "code": range(100, 130),
                                       "y": [0, 1] * 15}, {"Key": [f"t{i}" for i in range(5)], "code": range(5)})
    with pytest.raises(KitError, match=r"id column is ambiguous: Key, code.*ID="):
        new_competition("a", both, tmp_path / "comps")
    assert new_competition("a", both, tmp_path / "comps", id_column="code").id == "code"
    named = write_comp(tmp_path / "b", {"RowId": range(30), "name": [f"n{i}" for i in range(30)], "y": [0, 1] * 15},
                       {"RowId": range(30, 35), "name": [f"m{i}" for i in range(5)]})
    assert new_competition("b", named, tmp_path / "comps").id == "RowId"


def test_integer_classes_sorted_as_numbers_and_a_regression_metric_overrides(tmp_path):
    data = write_comp(tmp_path / "d", {"id": range(44), "y": [0, 1, 2, 10] * 11}, {"id": range(44, 50)})
    new = new_competition("n", data, tmp_path / "comps")
    assert (new.kind.name, new.classes) == ("multiclass", ["0", "1", "2", "10"])
    assert new.type_rule == "4 distinct whole numbers (at most 20 make classes)"
    counts = new_competition("n", data, tmp_path / "comps", metric="rmse", force=True)
    assert counts.kind.name == "regression" and "classes" not in load(counts.path)


def test_a_per_class_sample_must_name_the_targets_values(tmp_path):
    data = write_comp(tmp_path / "d", {"id": range(30), "y": ["a", "b", "c"] * 10}, {"id": range(30, 35)},
                      {"id": range(30, 35), "a": 0.3, "b": 0.3, "z": 0.4})
    with pytest.raises(KitError, match=r"columns a, b, z.*values a, b, c"):
        new_competition("s", data, tmp_path / "comps")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_new_names_the_missing_variable():
    env = {k: v for k, v in CPU_ENV.items() if k not in ("COMP", "DATA")}

    def make(*args: str) -> subprocess.CompletedProcess:  # a dry run that never (re)installs the venv
        return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "-n", "new", *args], cwd=ROOT,
                              capture_output=True, text=True, env=env, timeout=60)

    no_comp = make("DATA=/somewhere")
    assert no_comp.returncode != 0 and "make new needs COMP=<name>" in no_comp.stderr
    no_data = make("COMP=x")
    assert no_data.returncode != 0 and "make new needs DATA=<folder>" in no_data.stderr
    dry = make("COMP=x", "DATA=~/k x", "METRIC=rmsle", "TARGET=a b", "ID=i", "FORCE=1")
    assert dry.returncode == 0, dry.stderr
    assert ('-m kit new --comp x --data "~/k x" --metric "rmsle" --target "a b" --id "i" --force'
            in dry.stdout.splitlines()[-1])


def test_bike_sharing_shape_the_user_story(tmp_path):
    """Kaggle's bike sharing: the id is the timestamp, casual + registered = count are in train only, RMSLE."""
    stamps = pd.date_range("2011-01-01", periods=48, freq="h").astype(str)
    train = {"datetime": stamps[:40], "season": [1, 2] * 20, "temp": [9.84 + i for i in range(40)],
             "casual": range(40), "registered": range(40), "count": [2 * i for i in range(40)]}
    test = {"datetime": stamps[40:], "season": [1] * 8, "temp": [1.0] * 8}
    data = write_comp(tmp_path / "bikes", train, test, {"datetime": stamps[40:], "count": 0})
    new = new_competition("bikes", data, tmp_path / "comps", metric="rmsle")
    config = load(new.path)
    assert config["data"]["id"] == "datetime" and config["target"] == {"column": "count", "type": "regression"}
    assert config["metric"] == "rmsle" and config["features"] == {"drop": ["casual", "registered"]}
    assert kinds_of(new) == {"season": "numeric", "temp": "numeric"} and new.id_is_date
    text = new.path.read_text()
    assert "#   datetime: id (its values are dates)" in text and "#   casual: drop (in train.csv but not" in text


def test_bad_tables_are_refused_before_anything_is_written(tmp_path):
    """The bad tables of issue 30: a semicolon-separated CSV, an ID= that repeats in test.csv, a sample submission
    that lists other ids; each is one KitError naming the problem and what to do, and no config is written."""
    comps = tmp_path / "comps"
    semi = tmp_path / "semi"
    semi.mkdir()
    (semi / "train.csv").write_text("id;x;y\n" + "".join(f"{i};{i % 7};{i % 2}\n" for i in range(30)))
    (semi / "test.csv").write_text("id;x\n" + "".join(f"{i};{i % 7}\n" for i in range(30, 40)))
    with pytest.raises(KitError, match=r"train.csv looks separated by ';', not by commas \(its header: 'id;x;y'\).*"
                                       r"sep=';'"):
        new_competition("semi", semi, comps)
    repeated = write_comp(tmp_path / "rep", {"id": range(30), "g": range(100, 130), "y": [0, 1] * 15},
                          {"id": range(30, 40), "g": [1, 1, 2, 3, 4, 5, 6, 7, 8, 9]})
    with pytest.raises(KitError, match=r"test.csv: the id column 'g' repeats \['1'\]; an id names one row.*ID=<column> "
                                       r"\(id\)"):
        new_competition("rep", repeated, comps, id_column="g")
    other = write_comp(tmp_path / "other", {"id": range(30), "x": range(30), "y": [0, 1] * 15},
                       {"id": range(30, 40), "x": range(10)}, {"id": range(100, 110), "y": 0})
    with pytest.raises(KitError, match=r"does not list the test ids: 10 of its ids are not in test.csv \(e.g. "
                                       r"\['100', '101', '102'\]\); 10 ids of test.csv are not in it"):
        new_competition("other", other, comps)
    assert not comps.exists() or not any(comps.iterdir())


def test_a_sample_of_other_ids_is_refused_by_train_before_a_run_folder(tmp_path):
    data = write_comp(tmp_path / "d", {"id": range(40), "x": range(40), "y": [0, 1] * 20},
                      {"id": range(40, 50), "x": range(10)}, {"id": range(40, 50), "y": 0})
    new = new_competition("d", data, tmp_path / "comps")
    pd.DataFrame({"id": range(41, 51), "y": 0}).to_csv(data / "sample_submission.csv", index=False)
    train = run_kit("train", "--comp", str(new.path.parent), "--runs", str(tmp_path / "runs"))
    assert train.returncode == 2 and "error: the sample submission" in train.stderr
    assert "1 of its ids are not in the test set (e.g. ['50'])" in train.stderr
    assert "1 ids of the test set are not in it (e.g. ['40'])" in train.stderr and "Traceback" not in train.stderr
    assert not (tmp_path / "runs").exists()


def test_a_column_of_numbers_with_inf_is_numeric_and_says_so(tmp_path):
    values = [str(i * 1.5) for i in range(28)] + ["inf", "1e999"]
    test = {"id": range(30, 35), "x": ["1", "-inf", "2", "3", ""]}
    data = write_comp(tmp_path / "d", {"id": range(30), "x": values, "y": [0, 1] * 15}, test)
    new = new_competition("d", data, tmp_path / "comps")
    assert new.kinds["x"] == {"kind": "numeric", "reason": "all 28 values are numbers (2 infinite or too large for "
                                                           "a float, e.g. 'inf', read as missing)"}
    where = ["--comp", str(new.path.parent), "--runs", str(tmp_path / "runs")]
    train = run_kit("train", *where, "--set", "learners=[gbdt,linear]")
    assert train.returncode == 0, train.stderr
    predict = run_kit("predict", *where)
    assert predict.returncode == 0, predict.stderr
    assert len(pd.read_csv(tmp_path / "runs" / "d" / "latest" / "submission.csv")) == 5
