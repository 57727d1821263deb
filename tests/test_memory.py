"""Memory does not grow with the number of inputs: the runtime, `predict FROM=export` and the app answer a long list
under an address-space limit (RLIMIT_AS) that one pass over the whole list exceeds, equal to a small single pass.

Each check runs in a subprocess: it loads and warms up, then limits its address space to the most it has used so far
(VmPeak) plus MARGIN, and makes the same call with the default chunking (it must answer) and with an unbounded
budget (one pass over everything: it must run out of memory, or the limit proves nothing)."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import CPU_ENV, ROOT, TITANIC

from kit import runtime

MANY = 300  # images per long list: one pass over them needs ~0.75 MB each at 32 px with 2 TTA passes
SMALL = 16  # distinct images, one chunk: the single pass the long list must agree with
MARGIN = 64 << 20  # bytes of address space above the warmed-up peak
UNBOUNDED = 10**12  # a budget no list reaches: the whole list in one pass

# Prepended to each check: `limit()` caps the address space, `failure(call)` says how a call ran out of memory.
HARNESS = f"""
import json, resource, sys
from pathlib import Path

def limit():
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmPeak:"))
    resource.setrlimit(resource.RLIMIT_AS, (peak * 1024 + {MARGIN}, resource.RLIM_INFINITY))

def failure(call):
    try:
        call()
    except Exception as exc:  # MemoryError from numpy, onnxruntime's Fail ("Failed to allocate memory")
        return f"{{type(exc).__name__}}: {{exc}}"[:300]
    return None

export, small, many, out = (Path(arg) for arg in sys.argv[1:5])
budget = int(sys.argv[5])
"""


def check(script: str, *args) -> dict:
    """Run HARNESS + script (its last line prints a JSON object) with the arguments; that object."""
    env = {**CPU_ENV, "MALLOC_ARENA_MAX": "2", "GRADIO_ANALYTICS_ENABLED": "False"}  # steadier address space
    result = subprocess.run([sys.executable, "-c", HARNESS + script, *map(str, args)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def out_of_memory(message: str | None) -> bool:
    return message is not None and ("memoryerror" in message.lower() or "allocate" in message.lower())


@pytest.fixture(scope="module")
def folders(image_export, tmp_path_factory):
    """(export, `small`: SMALL distinct photos, `many`: MANY photos cycling through them, hard links)."""
    base, food_dir, _ = image_export
    tmp = tmp_path_factory.mktemp("memory")
    sources = sorted((food_dir / "valid").glob("*.jpg"))[:SMALL]
    for name, count in (("small", SMALL), ("many", MANY)):
        (tmp / name).mkdir()
        for i in range(count):
            os.link(sources[i % SMALL], tmp / name / f"{i:05d}.jpg")
    export = base / "exports" / "food11"
    budget = SMALL * runtime.load(export).meta["tta"]["passes"] * 32 * 32  # SMALL images per pass
    return export, tmp / "small", tmp / "many", tmp, budget


RUNTIME = f"""
import numpy as np
from PIL import Image
import kit.runtime

chunked = kit.runtime.load(export, device="cpu", budget_pixels=budget)
unbounded = kit.runtime.load(export, device="cpu", budget_pixels={UNBOUNDED})
files = sorted(small.glob("*.jpg"))
single = unbounded.outputs(files)
inputs = sorted(many.glob("*.jpg"))
inputs[1], inputs[2] = Image.open(inputs[1]), np.asarray(Image.open(inputs[2]).convert("RGB"))  # any input form
chunked.outputs(files + files[:3])  # warm up: two chunks
limit()
got = chunked.outputs(inputs)
reference = single[np.arange(len(inputs)) % len(files)]
print(json.dumps({{"chunk": chunked.chunk, "rows": len(got), "diff": float(np.abs(got - reference).max()),
                  "unbounded": failure(lambda: unbounded.outputs(inputs))}}))
"""


def test_runtime_predicts_a_long_list_in_bounded_memory(folders):
    result = check(RUNTIME, *folders)
    assert result["chunk"] == SMALL and result["rows"] == MANY
    assert result["diff"] <= 1e-6
    assert out_of_memory(result["unbounded"]), result["unbounded"]


PREDICT = f"""
from kit import runtime
from kit.config import load_config
from kit.predict import predict_export

config = load_config("food11", sys.argv[6].split())
runtime.BUDGET_PIXELS["cpu"] = budget
predict_export(export, config, test=small, out=out / "small.csv", device="cpu")  # also the warm-up
limit()
predict_export(export, config, test=many, out=out / "many.csv", device="cpu")
runtime.BUDGET_PIXELS["cpu"] = {UNBOUNDED}
print(json.dumps({{"unbounded": failure(lambda: predict_export(export, config, test=many, out=out / "no.csv",
                                                                 device="cpu"))}}))
"""


def test_predict_from_export_writes_a_long_submission_in_bounded_memory(folders, image_export):
    _, small, many, out, _ = folders
    result = check(PREDICT, *folders, image_export[2])
    assert out_of_memory(result["unbounded"]), result["unbounded"]
    first, whole = (pd.read_csv(out / name, dtype=str) for name in ("small.csv", "many.csv"))
    label = {int(i): c for i, c in zip(first.iloc[:, 0], first.iloc[:, 1], strict=True)}  # ids: the files' numbers
    assert len(first) == SMALL and len(whole) == MANY
    assert whole.iloc[:, 1].tolist() == [label[int(i) % SMALL] for i in whole.iloc[:, 0]]


APP = f"""
from kit import runtime
from ui.app import build

classify = next(f.fn for f in build(export.parent).fns.values() if f.api_name == "classify")
files, inputs = [str(p) for p in sorted(small.glob("*.jpg"))], [str(p) for p in sorted(many.glob("*.jpg"))]
runtime.BUDGET_PIXELS["cpu"] = budget
single = classify(files, device="cpu")  # loads the predictor the app keeps for device "cpu"
runtime.BUDGET_PIXELS["cpu"] = {UNBOUNDED}
classify(files, device="auto")  # and another for "auto" (the CPU here) with an unbounded budget
classify(files + files[:3], device="cpu")  # warm up: two chunks
limit()
gallery, _, status = classify(inputs, device="cpu")
print(json.dumps({{"single": [c for _, c in single[0]], "many": [c for _, c in gallery], "status": status,
                  "unbounded": failure(lambda: classify(inputs, device="auto"))}}))
"""


def test_app_classifies_a_large_drop_in_bounded_memory(folders):
    result = check(APP, *folders)
    assert result["status"].startswith(f"{MANY} image(s) classified"), result["status"]
    assert result["many"] == [result["single"][i % SMALL] for i in range(MANY)]
    assert out_of_memory(result["unbounded"]), result["unbounded"]


@pytest.mark.parametrize("rows", [1, 5, 1000])
def test_table_rows_go_through_in_chunks_equal_to_one_pass(titanic_export, rows):
    """Any row count, as a DataFrame or a list of dicts, in chunks of `chunk_rows`: the one-pass answer."""
    folder = titanic_export / "exports" / "titanic"
    frame = pd.concat([pd.read_csv(TITANIC / "test.csv")] * 3, ignore_index=True).iloc[:rows]
    frame.index = frame.index * 7 + 3  # chunks are cut by position, whatever the index
    one_pass = runtime.load(folder, trust_code=True, chunk_rows=10**9)
    chunked = runtime.load(folder, trust_code=True, chunk_rows=64)
    expected = one_pass.predict_proba(frame)
    assert expected.shape == (rows, 2)
    for given in (frame, frame.to_dict("records")):
        assert np.abs(chunked.predict_proba(given) - expected).max() <= 1e-6
