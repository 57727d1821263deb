import math
import time

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kit.batches import DatasetBatches
from kit.budget import Deadline
from kit.config import TrainConfig
from kit.errors import KitError
from kit.metrics import get_metric
from kit.objective import Objective
from kit.trainer import EarlyStopping, evaluate, fit

CPU = torch.device("cpu")


def test_early_stopping_counts_patience_and_min_delta():
    stopper = EarlyStopping(patience=2, min_delta=0.01, mode="max")
    assert stopper.step(0.5, 1)
    assert not stopper.step(0.505, 2)  # below min_delta: not an improvement
    assert not stopper.should_stop
    assert not stopper.step(0.4, 3)
    assert stopper.should_stop and stopper.best_epoch == 1


def test_patience_counts_only_after_min_epochs_and_nan_is_never_best():
    stopper = EarlyStopping(patience=1, mode="min", min_epochs=3)
    assert stopper.step(1.0, 1)
    assert not stopper.step(2.0, 2) and not stopper.step(math.nan, 3)
    assert not stopper.should_stop  # epochs 2 and 3 are inside min_epochs
    assert not stopper.step(math.nan, 4)
    assert stopper.should_stop and stopper.best == 1.0 and stopper.best_epoch == 1


def _batches(data, batch_size=32, shuffle=True):
    return DatasetBatches(data, batch_size, CPU, shuffle=shuffle, workers=0)


def _conflicting_data():
    # Validation labels are the opposite of the training labels: the better the fit, the worse validation.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y), TensorDataset(x[:64], 1 - y[:64])


def test_fit_stops_early_and_restores_the_best_epoch():
    train, valid = _conflicting_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    cfg = TrainConfig(epochs=30, batch_size=32, lr=1e-2, warmup_epochs=0, monitor="loss", patience=3)
    result = fit(model, _batches(train), _batches(valid, 64, False), cfg, seed=0)
    assert result.epochs_run == result.best_epoch + 3 < 30  # stopped after `patience` bad epochs
    best = result.history[result.best_epoch - 1]
    assert best["best"] and best["valid_loss"] == min(r["valid_loss"] for r in result.history)
    accuracy = Objective(get_metric("accuracy", "multiclass"), {})
    loss, _ = evaluate(model, _batches(valid, 64, False), nn.CrossEntropyLoss(), accuracy)
    assert abs(loss - best["valid_loss"]) < 1e-5  # the weights in the model are the best epoch's


def test_min_epochs_lets_the_schedule_run_before_patience_counts():
    train, valid = _conflicting_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    cfg = TrainConfig(epochs=12, batch_size=32, lr=1e-2, warmup_epochs=0, monitor="loss", patience=3, min_epochs=9)
    result = fit(model, _batches(train), _batches(valid, 64, False), cfg, seed=0)
    assert result.best_epoch < 9 and result.epochs_run == 12  # without min_epochs it stops at best + 3


def test_a_deadline_starts_no_epoch_that_would_end_past_it():
    train, valid = _conflicting_data()
    cfg = TrainConfig(epochs=6, batch_size=32, lr=1e-2, warmup_epochs=0, patience=100)
    torch.manual_seed(0)
    free = fit(nn.Linear(4, 2), _batches(train), _batches(valid, 64, False), cfg, seed=0)
    late = Deadline(time.perf_counter())  # already passed: the first epoch runs, no other starts
    torch.manual_seed(0)
    cut = fit(nn.Linear(4, 2), _batches(train), _batches(valid, 64, False), cfg, seed=0, deadline=late)
    assert free.epochs_run == 6 and cut.epochs_run == 1 and cut.best_epoch == 1 and late.hit
    far = Deadline(time.perf_counter() + 3600)
    torch.manual_seed(0)
    assert fit(nn.Linear(4, 2), _batches(train), _batches(valid, 64, False), cfg, seed=0, deadline=far).epochs_run == 6
    assert not far.hit


class BlowsUp(nn.Module):
    """A real linear model whose output turns NaN after `after` training forward passes."""

    def __init__(self, after: int):
        super().__init__()
        self.linear, self.after = nn.Linear(4, 2), after
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        out = self.linear(x)
        return out * math.nan if self.calls > self.after else out


def test_a_nan_loss_never_becomes_the_best_epoch():
    train, _ = _conflicting_data()
    torch.manual_seed(0)
    model = BlowsUp(after=8)  # 8 steps per epoch: epoch 1 is finite, epoch 2 is not
    cfg = TrainConfig(epochs=5, batch_size=32, lr=1e-2, warmup_epochs=0, monitor="metric", patience=5)
    result = fit(model, _batches(train), _batches(train, 64, False), cfg, seed=0)
    assert result.best_epoch == 1 and result.epochs_run == 2  # stopped at the first non-finite epoch
    assert not result.history[1]["best"] and math.isnan(result.history[1]["train_loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())  # epoch 1's weights are back

    diverged = BlowsUp(after=0)
    with pytest.raises(KitError, match="diverged in epoch 1"):
        fit(diverged, _batches(train), _batches(train, 64, False), cfg, seed=0)


def test_fit_is_reproducible_for_a_seed():
    train, valid = _conflicting_data()
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        fit(model, _batches(train), _batches(train, 64, False), TrainConfig(epochs=3, batch_size=32), seed=7)
        outputs.append(model(valid.tensors[0]))
    assert torch.equal(outputs[0], outputs[1])


def test_train_compile_trains_and_keeps_plain_state_dict_keys():
    train, _ = _conflicting_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    before = model[0].weight.detach().clone()
    result = fit(model, _batches(train), _batches(train, 64, False), TrainConfig(epochs=2, compile=True), seed=0)
    assert result.history[-1]["valid_score"] > 0.6 and not torch.equal(before, model[0].weight)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # checkpoints and exports load


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_class_weighted_loss_equals_torchs_weighted_cross_entropy_and_its_gradient(smoothing):
    torch.manual_seed(0)
    weights = torch.rand(11) + 0.2
    logits, y = torch.randn(37, 11, requires_grad=True), torch.randint(0, 11, (37,))
    accuracy = get_metric("accuracy", "multiclass")
    ours = Objective(accuracy, {}, class_weights=weights, label_smoothing=smoothing).criterion(torch.device("cpu"))
    assert not isinstance(ours, nn.CrossEntropyLoss)  # torch's weighted, smoothed loss syncs with the GPU
    theirs = nn.CrossEntropyLoss(weight=weights, label_smoothing=smoothing)
    (grad_ours,) = torch.autograd.grad(ours(logits, y), logits)
    (grad_theirs,) = torch.autograd.grad(theirs(logits, y), logits)
    torch.testing.assert_close(ours(logits, y), theirs(logits, y), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad_ours, grad_theirs, atol=1e-7, rtol=1e-5)
