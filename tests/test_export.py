"""Export round trips (eager -> TorchScript, eager -> ONNX Runtime), parity enforcement, and the runtime's checks."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TITANIC, run_kit

from kit import export as kit_export
from kit import runs, runtime
from kit.errors import KitError
from kit.tasks import get_task


def test_image_export_writes_the_documented_contract(image_export):
    tmp, _, _ = image_export
    folder = tmp / "exports" / "food11"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["input"]["name"] == "images" and meta["input"]["dtype"] == "uint8"
    assert meta["input"]["layout"] == "NHWC" and meta["input"]["shape"] == ["N", 32, 32, 3]
    assert meta["output"]["name"] == "probs" and len(meta["classes"]) == 11 and meta["folds"] == 2
    assert meta["tta"]["views"] == ["identity", "hflip"] and "oof" in meta["cv"]
    assert meta["parity"]["onnx_max_abs_diff"] <= 1e-4 and meta["parity"]["batch_sizes"] == [1, 7]
    assert meta["files"]["model.onnx"]["sha256"] == runtime.sha256(folder / "model.onnx")


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_image_round_trip_matches_eager_at_batch_1_and_7(image_export, backend):
    tmp, food_dir, settings = image_export
    run_dir = runs.find_run("food11", None, tmp / "runs")
    config = runs.run_config(run_dir)
    task = get_task(config)
    eager, states = runs.load_ensemble(run_dir, task)
    samples = task.load("train", food_dir)
    predictor = runtime.load(tmp / "exports" / "food11", backend=backend, device="cpu")  # where eager ran
    for n in (1, 7):
        x = torch.from_numpy(np.ascontiguousarray(samples.data[:n]))
        with torch.no_grad():
            expected = eager(x).numpy()
        got = predictor.run(x.numpy())
        assert got.shape == (n, 11)
        assert np.abs(got - expected).max() <= 1e-4
        assert np.allclose(got.sum(1), 1, atol=1e-5)
    # From files, as a user would call it: decoding the way meta.json says gives the same input.
    files = sorted((food_dir / "train").glob("*.jpg"))[:3]
    assert np.array_equal(predictor.prepare(files), np.stack([np.asarray(samples.data[i]) for i in range(3)]))


def test_onnx_needs_nothing_but_onnxruntime_and_meta(image_export):
    """A client with onnxruntime, Pillow and meta.json alone gets the eager ensemble's probabilities."""
    import onnxruntime as ort
    from PIL import Image

    tmp, food_dir, _ = image_export
    folder = tmp / "exports" / "food11"
    meta = json.loads((folder / "meta.json").read_text())
    size = meta["input"]["size"]
    session = ort.InferenceSession(str(folder / "model.onnx"))
    files = sorted((food_dir / "valid").glob("*.jpg"))[:5]
    images = [np.asarray(Image.open(p).convert("RGB").resize(size, Image.Resampling.BILINEAR)) for p in files]
    probs = session.run(["probs"], {meta["input"]["name"]: np.stack(images)})[0]
    run_dir = runs.find_run("food11", None, tmp / "runs")
    eager, _ = runs.load_ensemble(run_dir, get_task(runs.run_config(run_dir)))
    with torch.no_grad():
        expected = eager(torch.from_numpy(np.stack(images))).numpy()
    assert probs.shape == (5, 11) and np.abs(probs - expected).max() <= 1e-4
    assert np.abs(probs - runtime.load(folder, device="cpu").predict_proba(files)).max() <= 1e-4


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_titanic_round_trip_and_raw_passenger_rows(titanic_export, backend):
    """Raw test rows through kit.runtime equal the run's eager ensemble at batch 1 and 7."""
    folder = titanic_export / "exports" / "titanic"
    run_dir = runs.find_run("titanic", None, titanic_export / "runs")
    task = get_task(runs.run_config(run_dir))
    eager, states = runs.load_ensemble(run_dir, task)
    samples = task.load("test")
    test = pd.read_csv(TITANIC / "test.csv")
    model = runtime.load(folder, backend=backend, device="cpu", trust_code=True)
    for n in (1, 7):
        with torch.no_grad():
            expected = eager(next(task.batches(samples.subset(np.arange(n)), states))).numpy()
        got = model.predict_proba(test.head(n))
        assert got.shape == (n, 2) and np.abs(got - expected).max() <= 1e-4
    one = model.predict_proba(test.iloc[0].to_dict())
    assert np.abs(one - expected[:1]).max() <= 1e-5  # a raw dict gives the same as its row in a frame
    rich = {"Pclass": 1, "Name": "Smith, Mrs. Jane", "Sex": "female", "Age": 30, "SibSp": 1, "Parch": 0,
            "Ticket": "PC 1", "Fare": 80.0, "Cabin": "C85", "Embarked": "C"}
    poor = {**rich, "Pclass": 3, "Name": "Doe, Mr. John", "Sex": "male", "Fare": 7.25, "Cabin": None,
            "Embarked": "S"}
    assert model.predict_proba(rich)[0, 1] > model.predict_proba(poor)[0, 1]


@pytest.mark.parametrize("comp", ["titanic", "food11"])
def test_submission_from_export_equals_the_eager_one(image_export, titanic_export, tmp_path, comp):
    if comp == "titanic":
        base, extra = titanic_export, []
    else:
        base, food_dir, settings = image_export
        extra = ["--test", str(food_dir / "test"), "--set", settings]
    common = ["--comp", comp, "--runs", str(base / "runs"), *extra]
    eager = run_kit("predict", *common, "--out", str(tmp_path / "eager.csv"))
    assert eager.returncode == 0, eager.stderr
    for backend in ("onnx", "torchscript"):
        out = tmp_path / f"{backend}.csv"
        result = run_kit("predict", *common, "--from", "export", "--backend", backend,
                         "--exports", str(base / "exports"), "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert out.read_text() == (tmp_path / "eager.csv").read_text()


def test_parity_failure_blocks_the_export_and_keeps_the_previous_one(titanic_export, monkeypatch):
    exports = titanic_export / "exports"
    before = (exports / "titanic" / "meta.json").read_text()
    real = kit_export.trace_and_save

    def trace_then_perturb(module, example, folder, input_name):
        real(module, example, folder, input_name)
        with torch.no_grad():  # the eager model drifts after tracing: what parity is there to catch
            for tensor in [*module.parameters(), *module.buffers()]:  # every learner (a blend weight may be 0)
                if tensor.is_floating_point():
                    tensor.add_(0.5)

    monkeypatch.setattr(kit_export, "trace_and_save", trace_then_perturb)
    with pytest.raises(KitError, match="export parity failed: torchscript differs from the eager ensemble by"):
        kit_export.export_run(runs.find_run("titanic", None, titanic_export / "runs"), exports)
    assert (exports / "titanic" / "meta.json").read_text() == before
    assert sorted(p.name for p in exports.iterdir()) == ["titanic"]  # no temp folders left


def test_tampered_missing_or_inconsistent_exports_are_refused(titanic_export, tmp_path):
    source = titanic_export / "exports" / "titanic"

    def copy(name):
        folder = tmp_path / name
        shutil.copytree(source, folder)
        return folder

    tampered = copy("tampered")
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (tampered / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(KitError, match="does not match the sha256"):
        runtime.load(tampered, backend="onnx", trust_code=True)

    missing = copy("missing")
    (missing / "model.ts").unlink()
    with pytest.raises(KitError, match="model.ts is missing"):
        runtime.load(missing, backend="torchscript", trust_code=True)

    wrong = copy("wrong")
    meta = json.loads((wrong / "meta.json").read_text())
    meta["classes"] = ["died", "survived", "unknown"]
    (wrong / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(KitError, match="returns 2 classes but meta.json lists 3"):
        runtime.load(wrong, backend="onnx", trust_code=True)

    with pytest.raises(KitError, match="no export at"):
        runtime.load(tmp_path / "nothing-here")
    broken = copy("broken")
    (broken / "meta.json").write_text("{not json")
    with pytest.raises(KitError, match="not valid JSON"):
        runtime.load(broken)


def test_export_without_a_run_says_what_to_do(tmp_path):
    result = run_kit("export", "--comp", "titanic", "--runs", str(tmp_path / "runs"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "make train COMP=titanic" in result.stderr


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_an_edited_input_size_in_meta_json_is_named_at_load(image_export, tmp_path, backend):
    tmp, _, _ = image_export
    folder = tmp_path / "food11"
    shutil.copytree(tmp / "exports" / "food11", folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["input"]["shape"], meta["input"]["size"] = ["N", 160, 160, 3], [160, 160]
    (folder / "meta.json").write_text(json.dumps(meta))
    expected = r"gives the input shape \[160, 160, 3\] but model.(onnx|ts) takes \[32, 32, 3\]; meta.json was edited"
    with pytest.raises(KitError, match=expected):
        runtime.load(folder, backend=backend, device="cpu")


@pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                    reason="this onnxruntime can run on CUDA; the test needs one that falls back")
def test_parity_records_the_device_onnx_really_ran_on(titanic_export):
    """Asked for CUDA, ONNX Runtime falls back to the CPU without an error: the export's parity record and the
    runtime read the session's providers, never the request."""
    import onnxruntime as ort

    model = titanic_export / "exports" / "titanic" / "model.onnx"
    session = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert kit_export.onnx_device(session) == "cpu"
    parity = json.loads((model.parent / "meta.json").read_text())["parity"]
    assert parity["devices"] == ["torchscript on cpu", "onnx on cpu"]
