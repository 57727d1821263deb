import numpy as np
import pandas as pd
import pytest

from kit.config import load_config
from kit.errors import KitError
from kit.submission import make_submission, write_submission

IDS = ["892", "893", "894"]


@pytest.fixture
def config():
    return load_config("titanic")


def good(config):
    return make_submission(IDS, np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), config)


def test_good_submission_is_written_atomically(config, tmp_path):
    path = write_submission(good(config), tmp_path / "submission.csv", IDS, config)
    assert path.read_text().splitlines() == ["PassengerId,Survived", "892,0", "893,1", "894,0"]
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]  # no temp file left behind


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.iloc[:2], "has 2 rows; the test set has 3"),
        (lambda f: f.assign(PassengerId=["892", "893", "999"]), "lacks test ids ['894']"),
        (lambda f: f.assign(PassengerId=["892", "892", "894"]), "repeats ids"),
        (lambda f: f.rename(columns={"Survived": "survived"}), "expected ['PassengerId', 'Survived']"),
        (lambda f: f.assign(Survived=[0, 2, 1]), "on row 2 is '2'; expected one of ['0', '1']"),
        (lambda f: f.assign(Survived=[0, -1, 1]), "on row 2 is '-1'; expected one of ['0', '1']"),
        (lambda f: f.assign(Survived=[0, 0.5, 1]), "on row 1 is '0.0'; expected one of ['0', '1']"),
        (lambda f: f.assign(Survived=[0.2, 0.9, 0.4]), "expected one of ['0', '1']"),  # accuracy scores labels
    ],
)
def test_validator_rejects_bad_submissions_and_writes_nothing(config, tmp_path, mutate, message):
    with pytest.raises(KitError, match=None) as err:
        write_submission(mutate(good(config)), tmp_path / "submission.csv", IDS, config)
    assert message in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_sorting_by_id_is_numeric_for_zero_padded_ids(config):
    """Numeric order where text order differs ("10" < "100" < "9" as text), zero padding kept as written."""
    config.submission.sort_by_id = True
    frame = make_submission(["10", "9", "100", "0002"], np.eye(2)[[0, 1, 1, 0]], config)
    assert frame["PassengerId"].tolist() == ["0002", "9", "10", "100"]
    assert isinstance(frame, pd.DataFrame) and frame["Survived"].tolist() == ["0", "1", "0", "1"]
    text_ids = make_submission(["b10", "a9", "b9"], np.eye(2)[[0, 1, 1]], config)  # not all numbers: text order
    assert text_ids["PassengerId"].tolist() == ["a9", "b10", "b9"]
