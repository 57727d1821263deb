"""Eager prediction: TTA views batched into one model call, ensemble_probs, and `predict` on a device."""

import warnings

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import run_kit

from kit import runs, runtime
from kit.ensemble import TTA, FoldEnsemble, Softmax, view
from kit.errors import KitError
from kit.models import ImageClassifier
from kit.predict import batch_size, ensemble_probs

VIEWS = ["identity", "hflip", "vflip", "zoom", "zoom_hflip"]


def _fold_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=6, exportable=True)
    for module in net.modules():  # random BatchNorm statistics, so the views' probabilities differ clearly
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return ImageClassifier(net, [0.5] * 3, [0.25] * 3).eval()


def _per_view_loop(model: torch.nn.Module, x: torch.Tensor, views: list[str], blend: float) -> torch.Tensor:
    """The reference: one model call per view, as TTA did before views were batched."""
    probs = torch.stack([torch.softmax(model(view(x, v)).float(), dim=1) for v in views]).mean(0)
    return (1 - blend) * probs + blend * torch.softmax(model(x).float(), dim=1) if blend else probs


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize(("views", "blend"), [(VIEWS, 0.0), (["hflip", "zoom"], 0.3), (["identity", "vflip"], 0.5)])
def test_batched_tta_equals_the_per_view_loop(views, blend):
    model = _fold_model(0)
    tta = TTA(Softmax(model), views, blend).eval()
    x = _images(5)
    with torch.no_grad():
        batched, loop = tta(x), _per_view_loop(model, x, views, blend)
    assert batched.shape == (5, 6)
    assert (loop.max(1).values - loop.min(1).values).min() > 0.05  # not a near-uniform output that hides errors
    assert float((batched - loop).abs().max()) <= 1e-6


def test_batched_tta_traces_and_exports_to_onnx_equal_to_the_loop(tmp_path):
    import onnxruntime as ort

    model = _fold_model(1)
    members = [TTA(Softmax(model), VIEWS, 0.2), TTA(Softmax(_fold_model(2)), ["identity", "hflip"])]
    ensemble = FoldEnsemble(members).eval()
    x = _images(7, seed=1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(ensemble, x[:2], check_trace=False)  # traced at batch 2, run at 7
        torch.onnx.export(ensemble, (x[:2],), str(tmp_path / "m.onnx"), input_names=["images"],
                          output_names=["probs"], dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}},
                          opset_version=17, dynamo=False)
        loop = torch.stack([_per_view_loop(model, x, VIEWS, 0.2),
                            _per_view_loop(ensemble.members[1].model.model, x, ["identity", "hflip"], 0)]).mean(0)
        assert float((traced(x) - loop).abs().max()) <= 1e-6
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {"images": x.numpy()})[0]
    assert onnx_probs.shape == (7, 6) and np.abs(onnx_probs - loop.numpy()).max() <= 1e-5


def test_ensemble_probs_covers_every_batch_in_order_and_autocast_stays_close():
    ensemble = FoldEnsemble([TTA(Softmax(_fold_model(3)), ["identity", "hflip"])]).eval()
    x = _images(11, seed=2)
    batches = [x[i : i + 4] for i in range(0, 11, 4)]
    with torch.no_grad():
        expected = ensemble(x)
    probs = ensemble_probs(ensemble, iter(batches), 11, torch.device("cpu"))
    assert probs.dtype == torch.float32 and probs.shape == (11, 6)
    assert float((probs - expected).abs().max()) <= 1e-6
    bf16 = ensemble_probs(ensemble, iter(batches), 11, torch.device("cpu"), amp="bf16")
    assert bf16.dtype == torch.float32 and torch.allclose(bf16.sum(1), torch.ones(11), atol=1e-5)
    assert 0 < float((bf16 - expected).abs().max()) <= 0.05  # bf16 did run, and stayed near fp32
    with pytest.raises(KitError, match="amp 'fp8' is not one of off, bf16, fp16"):
        ensemble_probs(ensemble, iter(batches), 11, torch.device("cpu"), amp="fp8")


def test_ensemble_probs_passes_on_an_error_of_the_batch_reader():
    """The next batch is read in a background thread; its failure must reach the caller, not hang or vanish."""
    ensemble = FoldEnsemble([TTA(Softmax(_fold_model(4)), ["identity"])]).eval()

    def batches():
        yield _images(2)
        raise KitError("cannot read test image 7")

    with pytest.raises(KitError, match="cannot read test image 7"):
        ensemble_probs(ensemble, batches(), 4, torch.device("cpu"))


def test_predict_on_the_cpu_shows_progress_and_autocast_reports_agreement(image_export, tmp_path):
    tmp, food_dir, settings = image_export
    common = ["predict", "--comp", "food11", "--runs", str(tmp / "runs"), "--test", str(food_dir / "test")]
    fp32 = run_kit(*common, "--set", settings, "--device", "cpu", "--out", str(tmp_path / "fp32.csv"))
    assert fp32.returncode == 0, fp32.stderr
    assert "predict: 100%" in fp32.stderr and "images/s" in fp32.stderr  # the progress bar
    assert "predict: 6 images in" in fp32.stderr  # the throughput line
    bf16 = run_kit(*common, "--set", f"{settings} predict.amp=bf16 predict.batch_size=4", "--device", "auto",
                   "--out", str(tmp_path / "bf16.csv"))
    assert bf16.returncode == 0, bf16.stderr
    assert "bf16 vs fp32 on 6 test rows: same class for" in bf16.stderr and "on CPU" in bf16.stderr
    a, b = pd.read_csv(tmp_path / "fp32.csv"), pd.read_csv(tmp_path / "bf16.csv")
    assert list(a["Id"]) == list(b["Id"]) and len(a) == 6


@pytest.mark.parametrize("budget", [2 * 32 * 32, 7 * 32 * 32, 64 * 224 * 224])
def test_predict_batches_by_the_budget_that_chunks_the_export(image_export, monkeypatch, budget):
    """`make predict` (eager) and kit.runtime size a forward pass from one budget: the same images per pass."""
    tmp, _, _ = image_export
    monkeypatch.setitem(runtime.BUDGET_PIXELS, "cpu", budget)
    config = runs.run_config(runs.find_run("food11", None, tmp / "runs"))
    predictor = runtime.load(tmp / "exports" / "food11", device="cpu")
    passes = predictor.meta["tta"]["passes"]
    assert batch_size(config, torch.device("cpu")) == predictor.chunk == max(1, budget // (passes * 32 * 32))
