"""The Gradio app, launched for real (Gradio picks its port) and driven by gradio_client (and Chromium)."""

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, CPU_ENV, NO_BROWSER, TITANIC, browser_drop, run_kit
from gradio_client import Client, handle_file

from kit import runtime
from kit.errors import KitError
from ui.app import BACKENDS, api_name, build, serve

# The browser test can point at real exports (e.g. the README's screenshot, docs/ui.png):
#   KIT_UI_EXPORTS=exports KIT_UI_COMP=food101-10 KIT_SCREENSHOT=docs/ui.png pytest tests/test_ui.py -k browser
ROOT = Path(__file__).resolve().parent.parent
UI_EXPORTS = os.environ.get("KIT_UI_EXPORTS")
UI_COMP = os.environ.get("KIT_UI_COMP", "food11")

SHOP_CONFIG = """\
# A generated tabular competition with other columns than Titanic's and no feature code.
task: tabular
classes: [low, mid, high]
data: {train: train.csv, test: test.csv, id: id}
target: {column: label}
features:
  raw_numeric: [size, weight]
  raw_text: [colour, note]
  numeric: [size, weight]
  categorical: [colour]
model: {name: mlp, hidden: [8]}
"""


def write_shop(folder: Path) -> Path:
    """A competition folder: integer `size`, float `weight` (20% missing), categorical `colour`, free-text `note`,
    3 classes; the test set has missing weights too."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def frame(n: int, first_id: int) -> pd.DataFrame:
        size = rng.integers(1, 11, n)
        weight = np.round(size * 1.5 + rng.normal(0, 1, n), 2)
        weight[rng.random(n) < 0.2] = np.nan
        return pd.DataFrame({"id": np.arange(first_id, first_id + n), "colour": rng.choice(["red", "green", "blue"], n),
                             "size": size, "weight": weight, "note": [f"lot {i}" for i in rng.integers(0, 999, n)]})

    train = frame(90, 1)
    train["label"] = np.array(["low", "mid", "high"])[
        np.clip((train["size"] - 1) // 4 + (train["colour"] == "red"), 0, 2)]
    train.to_csv(folder / "train.csv", index=False)
    frame(12, 1001).to_csv(folder / "test.csv", index=False)
    (folder / "config.yaml").write_text(SHOP_CONFIG)
    return folder


@pytest.fixture(scope="module")
def shop_export(tmp_path_factory):
    """The generated competition, trained and exported with the CLI."""
    tmp = tmp_path_factory.mktemp("shop-export")
    comp = write_shop(tmp / "shop")
    train = run_kit("train", "--comp", str(comp), "--runs", str(tmp / "runs"), "--set", "train.epochs=2 cv.folds=2")
    assert train.returncode == 0, train.stderr
    export = run_kit("export", "--comp", str(comp), "--runs", str(tmp / "runs"), "--exports", str(tmp / "exports"))
    assert export.returncode == 0, export.stderr
    return tmp / "exports" / "shop", comp


@pytest.fixture(scope="module")
def exports(image_export, titanic_export, shop_export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    shutil.copytree(image_export[0] / "exports" / "food11", folder / "food11")
    shutil.copytree(titanic_export / "exports" / "titanic", folder / "titanic")
    shutil.copytree(shop_export[0], folder / "shop")
    return folder


@pytest.fixture(scope="module")
def app_url(exports):
    """The app as `make ui` runs it (--trust-code: the exports come from this checkout)."""
    app = build(exports, trust_code=True)
    yield serve(app)
    app.close()


def classify(client, *paths, backend="ONNX Runtime", device="cpu"):
    return client.predict(files=[handle_file(str(p)) for p in paths], competition="food11", backend=backend,
                          device=device, top_k=3, api_name="/classify")


@pytest.mark.parametrize("backend", ["ONNX Runtime", "TorchScript"])
def test_app_answers_like_the_runtime(app_url, exports, image_export, backend):
    image = sorted((image_export[1] / "valid").glob("*.jpg"))[0]
    gallery, label, status = classify(Client(app_url, verbose=False), image, backend=backend, device="auto")
    # `auto` (the app's default) resolves the way kit.runtime does. The status names the backend and device of the
    # Predictor the app loaded (predictor.backend / .device), not the ones asked for: an app that always loaded ONNX
    # would say "ONNX Runtime" here for TorchScript.
    predictor = runtime.load(exports / "food11", backend=BACKENDS[backend], device="auto")
    probs = predictor.predict_proba([image])[0]
    assert status.endswith(f"({backend}, {predictor.device}).") and predictor.device in ("cpu", "cuda")
    classes = runtime.read_meta(exports / "food11")["classes"]
    assert label["label"] == classes[int(probs.argmax())]
    top = label["confidences"][0]
    assert top["label"] == label["label"] and abs(top["confidence"] - float(probs.max())) < 1e-4
    assert len(label["confidences"]) == 3 and len(gallery) == 1 and "1 image(s) classified" in status


def raw_rows(csv: Path, columns: list[dict], count: int) -> list[dict]:
    """Rows with a missing value first, then complete ones: {column: value or None}, as a user would type them."""
    names = [c["name"] for c in columns]
    frame = pd.read_csv(csv, dtype={c["name"]: str for c in columns if c["type"] == "text"})[names]
    order = [*np.flatnonzero(frame.isna().any(axis=1).to_numpy()), *np.flatnonzero(frame.notna().all(axis=1))]
    return [{k: None if pd.isna(v) else v.item() if hasattr(v, "item") else v for k, v in frame.iloc[i].items()}
            for i in order[:count]]


@pytest.mark.parametrize("comp", ["titanic", "shop"])
def test_generated_form_predicts_like_the_runtime(app_url, exports, shop_export, comp):
    """Every tabular export gets a form generated from meta.json["input"]["columns"]; its endpoint
    /predict_<comp> takes the column values in that order (then backend, device) and answers what kit.runtime
    answers for the same raw row. Titanic runs its exported feature code; the generated `shop` has none."""
    meta = runtime.read_meta(exports / comp)
    columns = meta["input"]["columns"]
    names = [c["name"] for c in columns]
    client = Client(app_url, verbose=False)
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"][f"/{api_name(comp)}"]
    parameters = endpoint["parameters"]
    assert [p["parameter_name"] for p in parameters] == [*names, "backend", "device"]
    for column, parameter in zip(columns, parameters, strict=False):  # the form's input kinds and defaults
        kind = parameter["python_type"]["type"]
        if column["type"] == "number":
            assert kind == ("int" if column["integer"] else "float")
            assert parameter["parameter_default"] == column["default"]
        elif column["categories"]:
            assert kind.startswith("Literal[") and all(repr(c) in kind for c in column["categories"])
            assert ("''" in kind) == column["missing"]  # the empty choice only where training saw missing values
        else:
            # a mostly-missing column (Titanic's Cabin) defaults to missing: an empty box
            assert kind == "str" and parameter["parameter_default"] == (column["default"] or "")
    test_csv = TITANIC / "test.csv" if comp == "titanic" else shop_export[1] / "test.csv"
    rows = raw_rows(test_csv, columns, 3)
    assert any(v is None for v in rows[0].values())  # a row with missing values is among them
    for i, row in enumerate(rows):
        backend = ["ONNX Runtime", "TorchScript"][i % 2]
        # A missing text value is typed as a blank field (the app makes it None), a missing number left empty (None).
        values = [" " if v is None and c["type"] == "text" else v for c, v in zip(columns, row.values(), strict=True)]
        label, status = client.predict(*values, backend, "cpu", api_name=f"/{api_name(comp)}")
        predictor = runtime.load(exports / comp, backend=BACKENDS[backend], device="cpu", trust_code=True)
        expected = predictor.predict_proba(row)[0]
        got = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert sorted(got) == sorted(meta["classes"])
        assert max(abs(got[c] - float(p)) for c, p in zip(meta["classes"], expected, strict=True)) < 1e-5
        assert status.endswith(f"({backend}, cpu).")  # the backend really loaded


def test_titanic_form_reads_its_inputs_by_name(app_url):
    """Named column parameters; those not given take the form's defaults (the export's most common values)."""
    client = Client(app_url, verbose=False)
    woman = client.predict(Pclass=1, Sex="female", Age=30, Fare=80.0, SibSp=1, Name="Smith, Mrs. Jane",
                           Embarked="C", Cabin="C85", api_name="/predict_titanic")[0]
    man = client.predict(Pclass=3, Sex="male", Age=30, Fare=7.25, Cabin="", backend="TorchScript", device="cpu",
                         api_name="/predict_titanic")[0]
    p = {c["label"]: c["confidence"] for c in woman["confidences"]}
    q = {c["label"]: c["confidence"] for c in man["confidences"]}
    assert abs(p["0"] + p["1"] - 1) < 1e-5 and p["1"] > q["1"]


def test_feature_code_needs_trust_code_and_the_tab_says_so(exports):
    """Without --trust-code the app still starts; the Titanic tab (its export carries features.py) shows the
    runtime's refusal naming the opt-in, from the start and on Predict; exports without code still serve."""
    app = build(exports)
    try:
        url = serve(app)
        config = httpx.get(f"{url}config", timeout=30).json()
        shown = [c["props"].get("value") or "" for c in config["components"] if c["type"] == "markdown"]
        assert any("Cannot load the export" in s and "--trust-code" in s for s in shown)
        client = Client(url, verbose=False)
        label, status = client.predict(api_name="/predict_titanic")
        assert not label or not label.get("confidences")
        assert "trust_code=True" in status and "--trust-code" in status and "features.py" in status
        label, status = client.predict(api_name="/predict_shop")  # no feature code: no opt-in needed
        assert len(label["confidences"]) == 3 and status.startswith("Answered")
    finally:
        app.close()


def test_cli_trust_code_flag_and_port_it_picks(exports, app_url):
    """`python -m ui.app --trust-code` as `make ui` runs it, without --port: it takes the first free port from
    7860 by starting its server there (app_url already holds one) and prints the address it got."""
    env = {k: v for k, v in CPU_ENV.items() if k != "GRADIO_SERVER_PORT"}
    proc = subprocess.Popen([sys.executable, "-m", "ui.app", "--exports", str(exports), "--trust-code"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines, deadline = [""], time.monotonic() + 120
        while not lines[-1].startswith("kit app: ") and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "no address within 120 s:\n" + "".join(lines)
            lines.append(proc.stdout.readline())
        assert lines[-1].startswith("kit app: http://127.0.0.1:"), "".join(lines)
        url = lines[-1].split()[-1]
        assert url != app_url
        label, status = Client(url, verbose=False).predict(api_name="/predict_titanic")
        assert status.startswith("Answered"), status
        assert len(label["confidences"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_files_get_a_message_and_the_server_keeps_serving(app_url, image_export, tmp_path):
    client = Client(app_url, verbose=False)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    gallery, label, status = classify(client, corrupt)
    assert "corrupt.jpg" in status and "cannot read" in status and gallery == []
    _, _, status = classify(client, text)  # not refused by Gradio for its type: kit names the file and the reason
    assert "notes.txt" in status and "cannot read" in status
    renamed = tmp_path / "notes.jpg"  # a text file in disguise passes that check and reaches kit.runtime
    renamed.write_text("hello")
    _, _, status = classify(client, renamed)
    assert "notes.jpg" in status and "cannot read" in status
    good = sorted((image_export[1] / "valid").glob("*.jpg"))[1]
    gallery, label, status = classify(client, good, corrupt)  # one good, one bad: the good one is answered
    assert len(gallery) == 1 and label["label"] and "Skipped" in status


def test_one_file_where_a_list_is_expected(app_url, image_export):
    """`files` takes a list. One upload on its own is a one-item list; a path string (a client that skipped
    handle_file) gets a message naming the fix and is never read; a plain Gradio File fails both with a server
    exception."""
    client = Client(app_url, verbose=False)
    image = sorted((image_export[1] / "valid").glob("*.jpg"))[0]
    gallery, label, status = client.predict(files=handle_file(str(image)), api_name="/classify")
    assert len(gallery) == 1 and status.startswith("1 image(s) classified")
    for files in (str(image), [str(image)]):
        gallery, label, status = client.predict(files=files, api_name="/classify")
        assert gallery == [] and f"`{image.name}`: not an uploaded file" in status and "handle_file" in status
    gallery, _, status = client.predict(files=[handle_file(str(image)), "/etc/hostname"], api_name="/classify")
    assert len(gallery) == 1 and "`hostname`: not an uploaded file" in status  # the upload is still answered


def test_single_picture_input_and_empty_drop(app_url, image_export):
    client = Client(app_url, verbose=False)
    image = sorted((image_export[1] / "valid").glob("*.jpg"))[2]
    gallery, label, status = client.predict(files=None, picture=handle_file(str(image)), top_k=2, api_name="/classify")
    assert len(gallery) == 1 and len(label["confidences"]) == 2
    _, _, status = client.predict(files=None, api_name="/classify")
    assert status == "Drop one or more images first."


def test_classify_api_has_named_optional_inputs_and_named_outputs(app_url, image_export, tmp_path):
    """Only `files` is required; the outputs have names; UI-internal events (classify on drop too) are not
    endpoints; each tabular export has its form's endpoint."""
    client = Client(app_url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == ["/classify", "/predict_shop", "/predict_titanic"]
    parameters = {p["parameter_name"]: p["parameter_has_default"] for p in endpoints["/classify"]["parameters"]}
    assert parameters == {"files": False, "picture": True, "competition": True, "backend": True, "device": True,
                          "top_k": True}
    assert [r["label"] for r in endpoints["/classify"]["returns"]] == [
        "Images and their answer", "First image: top classes, its tags or its value", "status"]
    assert [r["label"] for r in endpoints["/predict_shop"]["returns"]] == ["Class probabilities", "status"]
    good = sorted((image_export[1] / "valid").glob("*.jpg"))[0]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    # Only `files`, a mixed drop: the image is answered, the text file gets its own line.
    gallery, label, status = client.predict(files=[handle_file(str(good)), handle_file(str(text))],
                                            api_name="/classify")
    assert len(gallery) == 1 and len(label["confidences"]) == 5
    assert status.startswith("1 image(s) classified") and "Skipped:\n- `notes.txt`: cannot read" in status


def test_dropping_images_classifies_without_a_click(app_url):
    """A change of the drop zone (or of the picture) runs the same inputs through the same outputs as the Classify
    button. The browser test below drops a file for real and never clicks."""
    config = httpx.get(f"{app_url}config", timeout=30).json()
    ids = {c["props"].get("label"): c["id"] for c in config["components"]}
    button = next(d for d in config["dependencies"] if d["api_name"] == "classify")
    drop = [d for d in config["dependencies"] if [ids["Drop images here"], "change"] in d["targets"]]
    assert len(drop) == 1 and [ids["Picture"], "change"] in drop[0]["targets"]
    assert drop[0]["inputs"] == button["inputs"] and drop[0]["outputs"] == button["outputs"]
    assert drop[0]["api_visibility"] == "private"


def test_no_exports_is_a_clear_error(tmp_path):
    with pytest.raises(KitError, match="no usable exports in .*make export"):
        build(tmp_path)
    (tmp_path / "food11").mkdir()  # an export folder without meta.json is named, not served
    with pytest.raises(KitError, match="no usable exports"):
        build(tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_browser_drop_shows_the_label(app_url, exports, image_export, tmp_path):
    """Chromium sets a file on the drop zone and, without clicking Classify, sees the top class."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    folder = Path(UI_EXPORTS) if UI_EXPORTS else exports
    app = None
    if UI_EXPORTS:
        app = build(folder)
        url = serve(app)
        image = sorted((ROOT / "competitions" / UI_COMP / "data" / "test").glob("*.jpg"))[0]
    else:
        url, image = app_url, sorted((image_export[1] / "valid").glob("*.jpg"))[0]
    expected = runtime.load(folder / UI_COMP).predict_proba([image])[0]
    classes = runtime.read_meta(folder / UI_COMP)["classes"]
    shot = Path(os.environ.get("KIT_SCREENSHOT", tmp_path / "ui.png"))
    try:
        text = browser_drop(url, image, shot)
    finally:
        if app is not None:
            app.close()
    assert classes[int(np.argmax(expected))] in text
    assert shot.stat().st_size > 10_000
