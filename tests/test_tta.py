"""TTA wiring: the servable module the image task builds (`task.ensemble`) gives, for the configured views and
blend, what the definition says, computed here by hand: the mean over folds of (1 - blend) x the mean over views
of softmax(model(view(x))) + blend x softmax(model(x)); and its ONNX export gives the same."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvf

from kit.config import load_config
from kit.export import check_parity, trace_and_save
from kit.models import ImageClassifier
from kit.tasks import Samples, get_task

SIZE, VIEWS, BLEND = 32, ["zoom", "zoom_hflip", "vflip"], 0.3


def _fold_model(seed: int) -> torch.nn.Module:
    """A tiny real image model (kit's uint8 NHWC classifier) whose answer depends on where things are in the
    picture (no global pooling), with logits large enough that every view changes the probabilities."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 15 * 15, 11))
    with torch.no_grad():
        net[3].weight.mul_(40)
    return ImageClassifier(net, [0.5] * 3, [0.25] * 3).eval()


def _by_hand(models: list[torch.nn.Module], x: torch.Tensor, views=VIEWS, blend=BLEND) -> torch.Tensor:
    """The definition, with torchvision's crop and resize (not kit's code): zoom is the centre 7/8 of each side
    (2 of 32 pixels cut from every edge) resized back to 32 x 32, bilinear."""
    cut = SIZE // 16
    nchw = x.permute(0, 3, 1, 2).float()
    zoom = tvf.resized_crop(nchw, cut, cut, SIZE - 2 * cut, SIZE - 2 * cut, [SIZE, SIZE],
                            InterpolationMode.BILINEAR, antialias=False)
    images = {"identity": nchw, "zoom": zoom, "zoom_hflip": tvf.hflip(zoom), "vflip": tvf.vflip(nchw)}
    folds = []
    with torch.no_grad():
        for model in models:
            probs = {name: torch.softmax(model(v.permute(0, 2, 3, 1)), 1) for name, v in images.items()}
            mean = torch.stack([probs[name] for name in views]).mean(0)
            folds.append((1 - blend) * mean + blend * probs["identity"])
    return torch.stack(folds).mean(0)


@pytest.fixture(scope="module")
def ensemble():
    config = load_config("food11", [f"tta.views=[{','.join(VIEWS)}]", f"tta.blend={BLEND}", f"image.size={SIZE}",
                                    "image.test_size=0"])
    task = get_task(config)
    models = [_fold_model(0), _fold_model(1)]
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8))
    state = task.fit(Samples([str(i) for i in range(5)], np.zeros(5, np.int64), x.numpy()))
    servable = task.ensemble([{"net": m} for m in models], [state, state], [1.0]).eval()
    return servable, models, x


def test_the_ensemble_is_the_fold_mean_of_the_blended_views(ensemble):
    servable, models, x = ensemble
    with torch.no_grad():
        out = servable(x)
    assert out.shape == (5, 11)
    torch.testing.assert_close(out, _by_hand(models, x), rtol=0, atol=1e-5)
    # The comparison can see every part: leaving out any view, the blend or a fold moves the answer far beyond it.
    others = [_by_hand(models, x, [v for v in VIEWS if v != left_out]) for left_out in VIEWS]
    others += [_by_hand(models, x, VIEWS, 0.0), _by_hand(models, x, ["identity"], 0.0), _by_hand(models[:1], x)]
    for other in others:
        assert (out - other).abs().max() > 0.02


def test_the_exported_views_answer_as_computed_by_hand(ensemble, tmp_path):
    """TorchScript trace + ONNX (opset 17, as `make export` writes them), kit's parity check, then ONNX Runtime
    against the hand computation; the zoom is an ONNX Resize in the graph."""
    servable, models, x = ensemble
    trace_and_save(servable, x[:2], tmp_path, "images")
    parity = check_parity(servable, tmp_path, x, "images")
    assert parity["onnx_max_abs_diff"] <= 1e-4 and parity["torchscript_max_abs_diff"] <= 1e-4
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert any(node.op_type == "Resize" for node in graph.node)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"images": x.numpy()})
    np.testing.assert_allclose(probs, _by_hand(models, x).numpy(), rtol=0, atol=1e-4)
