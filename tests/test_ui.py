"""The Gradio app, launched for real on a free local port and driven by gradio_client (and Chromium)."""

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

from kit import runtime
from kit.errors import KitError
from ui.app import BACKENDS, build

# The browser test can point at real exports (e.g. the README screenshot):
#   KIT_UI_EXPORTS=exports KIT_UI_COMP=food101-10 KIT_SCREENSHOT=docs/ui.png pytest tests/test_ui.py -k browser
ROOT = Path(__file__).resolve().parent.parent
UI_EXPORTS = os.environ.get("KIT_UI_EXPORTS")
UI_COMP = os.environ.get("KIT_UI_COMP", "food11")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exports(image_export, titanic_export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    shutil.copytree(image_export[0] / "exports" / "food11", folder / "food11")
    shutil.copytree(titanic_export / "exports" / "titanic", folder / "titanic")
    return folder


@pytest.fixture(scope="module")
def app_url(exports):
    app = build(exports)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def classify(client, *paths, backend="ONNX Runtime", device="cpu"):
    return client.predict(files=[handle_file(str(p)) for p in paths], competition="food11", backend=backend,
                          device=device, top_k=3, api_name="/classify")


@pytest.mark.parametrize("backend", ["ONNX Runtime", "TorchScript"])
def test_app_answers_like_the_runtime(app_url, exports, image_export, backend):
    image = sorted((image_export[1] / "valid").glob("*.jpg"))[0]
    gallery, label, status = classify(Client(app_url, verbose=False), image, backend=backend, device="auto")
    # `auto` (the app's default) resolves the way kit.runtime does, and the status names the device it chose.
    predictor = runtime.load(exports / "food11", backend=BACKENDS[backend], device="auto")
    probs = predictor.predict_proba([image])[0]
    assert status.endswith(f"({backend}, {predictor.device}).") and predictor.device in ("cpu", "cuda")
    classes = runtime.read_meta(exports / "food11")["classes"]
    assert label["label"] == classes[int(probs.argmax())]
    top = label["confidences"][0]
    assert top["label"] == label["label"] and abs(top["confidence"] - float(probs.max())) < 1e-4
    assert len(label["confidences"]) == 3 and len(gallery) == 1 and "1 image(s) classified" in status


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


def test_single_picture_input_and_empty_drop(app_url, image_export):
    client = Client(app_url, verbose=False)
    image = sorted((image_export[1] / "valid").glob("*.jpg"))[2]
    gallery, label, status = client.predict(files=None, picture=handle_file(str(image)), top_k=2, api_name="/classify")
    assert len(gallery) == 1 and len(label["confidences"]) == 2
    _, _, status = client.predict(files=None, api_name="/classify")
    assert status == "Drop one or more images first."


def test_classify_api_has_named_optional_inputs_and_named_outputs(app_url, image_export, tmp_path):
    """Only `files` is required; the outputs have names; UI-internal events are not endpoints."""
    client = Client(app_url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == ["/classify", "/survival"]
    parameters = {p["parameter_name"]: p["parameter_has_default"] for p in endpoints["/classify"]["parameters"]}
    assert parameters == {"files": False, "picture": True, "competition": True, "backend": True, "device": True,
                          "top_k": True}
    assert [r["label"] for r in endpoints["/classify"]["returns"]] == [
        "Images and their top class", "First image: top classes", "status"]
    good = sorted((image_export[1] / "valid").glob("*.jpg"))[0]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    # Only `files`, a mixed drop: the image is answered, the text file gets its own line.
    gallery, label, status = client.predict(files=[handle_file(str(good)), handle_file(str(text))],
                                            api_name="/classify")
    assert len(gallery) == 1 and len(label["confidences"]) == 5
    assert status.startswith("1 image(s) classified") and "Skipped:\n- `notes.txt`: cannot read" in status


def test_titanic_form_gives_a_survival_probability(app_url):
    client = Client(app_url, verbose=False)
    woman = client.predict("1", "female", 30, 80.0, 1, 0, "C", "Mrs", "C85", "ONNX Runtime", "cpu",
                           api_name="/survival")[0]
    man = client.predict("3", "male", 30, 7.25, 0, 0, "S", "Mr", "", "TorchScript", "cpu", api_name="/survival")[0]
    p = {c["label"]: c["confidence"] for c in woman["confidences"]}
    q = {c["label"]: c["confidence"] for c in man["confidences"]}
    assert abs(p["survived"] + p["died"] - 1) < 1e-5 and p["survived"] > q["survived"]


def test_no_exports_is_a_clear_error(tmp_path):
    with pytest.raises(KitError, match="no usable exports in .*make export"):
        build(tmp_path)
    (tmp_path / "food11").mkdir()  # an export folder without meta.json is named, not served
    with pytest.raises(KitError, match="no usable exports"):
        build(tmp_path)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
def test_browser_upload_shows_the_label(app_url, exports, image_export, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    folder = Path(UI_EXPORTS) if UI_EXPORTS else exports
    if UI_EXPORTS:
        app = build(folder)
        port = free_port()
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}/"
        image = sorted((ROOT / "competitions" / UI_COMP / "data" / "test").glob("*.jpg"))[0]
    else:
        url, image = app_url, sorted((image_export[1] / "valid").glob("*.jpg"))[0]
    expected = runtime.load(folder / UI_COMP).predict_proba([image])[0]
    classes = runtime.read_meta(folder / UI_COMP)["classes"]
    shot = Path(os.environ.get("KIT_SCREENSHOT", tmp_path / "ui.png"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(image))
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("1 image(s) classified").wait_for(timeout=60_000)
        text = page.locator("body").inner_text()
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert classes[int(np.argmax(expected))] in text
    assert shot.stat().st_size > 10_000
