"""An export is a self-contained, safe artifact: it serves from any folder with only a runtime installed, and it
runs its feature code only with the caller's consent and only as recorded."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CPU_ENV, ROOT, TITANIC

from kit import runs, runtime
from kit.errors import KitError
from kit.tasks import get_task

# A serving machine: no torch, no training stack. The blocker makes any import of them fail loudly.
SERVE = """
import importlib.abc, json, sys
BLOCKED = ("torch", "torchvision", "timm", "albumentations", "gradio", "sklearn", "scipy")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed on this serving machine")
sys.meta_path.insert(0, Block())
import pandas as pd
import kit.runtime
titanic = kit.runtime.load("titanic", trust_code=True)
rows = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False).head(7)
food = kit.runtime.load("food11")
images = sorted(__import__("pathlib").Path(sys.argv[2]).glob("*.jpg"))[:3]
print(json.dumps({"titanic": titanic.predict_proba(rows).tolist(), "food": food.predict_proba(images).tolist(),
                  "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _eager(base, comp, samples_of):
    run_dir = runs.find_run(comp, None, base / "runs")
    task = get_task(runs.run_config(run_dir))
    eager, states = runs.load_ensemble(run_dir, task)
    with torch.no_grad():
        return eager(next(task.batches(samples_of(task), states))).numpy()


def test_a_copied_export_serves_without_torch_or_the_checkout(titanic_export, image_export, tmp_path):
    """Exports and the kit package copied elsewhere (as `pip install --no-deps` puts it), the checkout's competition
    folder out of reach, torch and the training stack unimportable: raw rows and photos still give the eager
    ensemble's probabilities."""
    image_base, food_dir, _ = image_export
    serve, site = tmp_path / "serve", tmp_path / "site"
    shutil.copytree(titanic_export / "exports" / "titanic", serve / "titanic")
    shutil.copytree(image_base / "exports" / "food11", serve / "food11")
    shutil.copytree(ROOT / "kit", site / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-c", SERVE, str(TITANIC / "test.csv"), str(food_dir / "valid")],
                            cwd=serve, capture_output=True, text=True, timeout=300,
                            env={**CPU_ENV, "PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert not {"torch", "timm", "albumentations", "gradio", "sklearn"} & set(out["modules"])
    titanic = _eager(titanic_export, "titanic", lambda task: task.load("test").subset(np.arange(7)))
    assert np.abs(np.array(out["titanic"]) - titanic).max() <= 1e-4

    def first_valid(task):
        samples = task.load("train", food_dir)
        names = sorted(p.name for p in (food_dir / "valid").glob("*.jpg"))[:3]
        return samples.subset(np.array([samples.ids.index(f"valid/{n}") for n in names]))

    food = _eager(image_base, "food11", first_valid)
    assert np.abs(np.array(out["food"]) - food).max() <= 1e-4


def test_feature_code_runs_only_with_consent_and_as_recorded(titanic_export, tmp_path):
    source = titanic_export / "exports" / "titanic"
    meta = json.loads((source / "meta.json").read_text())
    assert meta["input"]["code"]["file"] == "features.py" and "competitions" not in json.dumps(meta["input"])

    def copy(name, edit=None):
        folder = tmp_path / name
        shutil.copytree(source, folder)
        if edit:
            changed = json.loads((folder / "meta.json").read_text())
            edit(changed)
            (folder / "meta.json").write_text(json.dumps(changed))
        return folder

    with pytest.raises(KitError, match=r"runs its feature code features.py .* trust_code=True"):
        runtime.load(copy("no-consent"))
    assert runtime.load(copy("consent"), trust_code=True).predict_proba(
        pd.read_csv(TITANIC / "test.csv").head(2)).shape == (2, 2)

    tampered = copy("tampered")
    with open(tampered / "features.py", "a") as f:
        f.write("\nraise SystemExit('this must never run')\n")
    with pytest.raises(KitError, match="does not match the sha256 in meta.json .* refusing to run it"):
        runtime.load(tampered, trust_code=True)

    (tmp_path / "outside.py").write_text((source / "features.py").read_text())
    for name in ("../outside.py", str(tmp_path / "outside.py")):
        pointed = copy(f"points-outside-{len(name)}", lambda m, n=name: m["input"]["code"].update(file=n))
        with pytest.raises(KitError, match="outside the export folder"):
            runtime.load(pointed, trust_code=True)


def test_image_exports_need_no_code_and_tabular_ones_name_their_columns(image_export, titanic_export):
    image_base, _, _ = image_export
    assert runtime.load(image_base / "exports" / "food11").meta["input"]["kind"] == "image"  # no trust_code
    columns = {c["name"]: c for c in runtime.read_meta(titanic_export / "exports" / "titanic")["input"]["columns"]}
    train = pd.read_csv(TITANIC / "train.csv")
    assert columns["Sex"]["categories"] == ["female", "male"] and columns["Sex"]["default"] == "male"
    assert columns["Embarked"]["missing"] and columns["Name"]["categories"] is None
    assert (columns["Age"]["min"], columns["Age"]["max"]) == (train["Age"].min(), train["Age"].max())
    assert columns["Pclass"]["integer"] and not columns["Fare"]["integer"]


def test_a_text_column_reads_a_number_as_training_wrote_it(tmp_path):
    """Rows from pandas' own read (1 -> 1.0) or a typed test table reach a text column's categories as training's
    text: the float 1.0 is the category "1", as the typed reader writes it back."""
    from kit.contract import TableInput
    from kit.encoding import fit_encoding

    class Spec:  # the automatic encoding
        raw_numeric, raw_text, numeric, categorical, drop = [], [], [], [], []

    train = pd.DataFrame({"code": ["1", "2", "x", "2.5"] * 10, "v": [str(i) for i in range(40)]})
    state = fit_encoding(train, Spec, np.array([0, 1] * 20), 2)
    contract = {"columns": [{"name": "code", "type": "text"}, {"name": "v", "type": "number"}],
                "encoding": {"folds": [state]}}
    table = TableInput(contract, tmp_path, trust_code=False)
    as_written = table.prepare([{"code": "1", "v": 3}, {"code": "2.5", "v": 4}, {"code": None, "v": 5}])
    as_floats = table.prepare(pd.DataFrame({"code": [1.0, 2.5, np.nan], "v": [3, 4, 5]}))
    np.testing.assert_array_equal(as_written, as_floats)
    assert not np.array_equal(as_written[:1], table.prepare([{"code": "x", "v": 3}]))  # the category matters
