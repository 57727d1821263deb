"""`make bench` on a tiny image set: the real loop against the model-only ceiling, ending with the efficiency line."""

import re

from conftest import run_kit


def test_bench_measures_training_and_prediction_against_the_ceiling(tmp_path, food_dir):
    settings = ("image.size=32 image.test_size=40 model.name=hw3_cnn model.freeze=[] model.pretrained=none "
                "train.batch_size=8 cv.folds=2 tta.views=[identity,hflip]")
    result = run_kit("bench", "--comp", "food11", "--data", str(food_dir), "--set", settings, "--device", "cpu",
                     "--exports", str(tmp_path / "none"), "--rounds", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"efficiency train \d+\.\d\d infer \d+\.\d\d \(device CPU \(\d+ threads\)\)", lines[-1])
    rates = {name: float(re.search(rf"^  {name}\s+([\d.]+) images/s", result.stdout, re.M).group(1))
             for name in ("model-only ceiling", "kit pipeline", "naive PIL loader", "kit predict")}
    assert all(rate > 0 for rate in rates.values())
    train, infer = (float(x) for x in re.findall(r"\d+\.\d\d", lines[-1]))
    kit_rows = re.findall(r"\(([\d.]+)x ceiling", result.stdout)
    assert [float(r) for r in kit_rows[::2]] == [train, infer]  # the line's ratios are the measured ones
    assert re.search(r"augmentation alone +albumentations \d+ images/s .*tensor \d+ images/s", result.stdout)
    assert "66 from" in result.stdout and "66 images x 2 TTA pass(es) x 2 folds" in result.stdout  # train/ + valid/


def test_bench_reads_a_labels_csv_competition_with_its_targets_loss(tmp_path):
    """A Planet-layout competition (tags in train.csv): the images the CSV names, trained on the tags' own loss."""
    from test_multilabel import write_planet

    data = write_planet(tmp_path / "planet")
    assert run_kit("new", "--comp", "planet", "--data", str(data), "--competitions", str(tmp_path)).returncode == 0
    settings = ("image.size=32 image.test_size=40 model.name=hw3_cnn model.freeze=[] model.pretrained=none "
                "train.batch_size=8 cv.folds=2")
    result = run_kit("bench", "--comp", str(tmp_path / "planet"), "--set", settings, "--device", "cpu",
                     "--exports", str(tmp_path / "none"), "--rounds", "1")
    assert result.returncode == 0, result.stderr
    assert f"30 from {data / 'train-jpg'}" in result.stdout and "30 images x 2 TTA pass(es) x 2 folds" in result.stdout
    assert re.search(r"^efficiency train \d+\.\d\d infer \d+\.\d\d", result.stdout, re.M)


def test_table_bench_prints_each_learner_against_its_bare_estimator(tmp_path):
    result = run_kit("bench", "--comp", "titanic", "--device", "cpu", "--rounds", "1",
                     "--exports", str(tmp_path / "none"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"efficiency gbdt \d+\.\d\d linear \d+\.\d\d net \d+\.\d\d \(device CPU \(\d+ threads?\)\)",
                        lines[-1])
    rows = re.findall(r"^learner (\w+).*?kit ([\d,]+) rows/s, (?:the estimator alone|model-only ceiling) "
                      r"([\d,]+) rows/s \(([\d.]+)x", result.stdout, re.M)
    assert [name for name, *_ in rows] == ["gbdt", "linear", "net"]
    for name, kit_rate, bare_rate, ratio in rows:
        measured = float(kit_rate.replace(",", "")) / float(bare_rate.replace(",", ""))
        assert abs(measured - float(ratio)) < 0.01 + 0.01 * measured, name  # the printed ratio is the measured one
    assert re.findall(r"\d+\.\d\d", lines[-1]) == [ratio for *_, ratio in rows]
    assert "891 x " in result.stdout and "skipped: no export" in result.stdout
