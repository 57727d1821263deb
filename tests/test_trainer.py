import torch
from torch import nn
from torch.utils.data import TensorDataset

from kit.config import TrainConfig
from kit.trainer import EarlyStopping, evaluate, fit


def test_early_stopping_counts_patience_and_min_delta():
    stopper = EarlyStopping(patience=2, min_delta=0.01, mode="max")
    assert stopper.step(0.5, 1)
    assert not stopper.step(0.505, 2)  # below min_delta: not an improvement
    assert not stopper.should_stop
    assert not stopper.step(0.4, 3)
    assert stopper.should_stop and stopper.best_epoch == 1


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
    result = fit(model, train, valid, cfg, seed=0)
    assert result.epochs_run == result.best_epoch + 3 < 30  # stopped after `patience` bad epochs
    best = result.history[result.best_epoch - 1]
    assert best["best"] and best["valid_loss"] == min(r["valid_loss"] for r in result.history)
    loader = torch.utils.data.DataLoader(valid, batch_size=64)
    loss, _ = evaluate(model, loader, nn.CrossEntropyLoss())
    assert abs(loss - best["valid_loss"]) < 1e-5  # the weights in the model are the best epoch's


def test_fit_is_reproducible_for_a_seed():
    train, valid = _conflicting_data()
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        fit(model, train, train, TrainConfig(epochs=3, batch_size=32), seed=7)
        outputs.append(model(valid.tensors[0]))
    assert torch.equal(outputs[0], outputs[1])
