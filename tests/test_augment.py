"""Batched tensor augmentation (kit/augment.py) and the batch sources (kit/batches.py), on the CPU."""

import numpy as np
import pytest
import torch

from kit import augment
from kit.batches import DatasetBatches, DeviceImages, epoch_order
from kit.config import AugmentConfig
from kit.distributed import Dist
from kit.errors import KitError
from kit.tasks.image import CachedImages, augmentation

CPU = torch.device("cpu")


def _images(n: int = 8, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)


def test_draws_are_uniform_and_depend_on_key_index_and_stream_only():
    index = torch.arange(20000)
    draws = augment.uniform(7, index, 2)
    u = draws[:, 0]
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 12**-0.5) < 0.01
    assert torch.equal(augment.uniform(7, index.flip(0), 2), draws.flip(0))  # order of the batch does not matter
    assert torch.equal(augment.uniform(7, index, 5)[:, :2], draws)  # more streams leave the first ones alone
    for other in (augment.uniform(8, index, 1)[:, 0], draws[:, 1]):
        assert abs(np.corrcoef(u.numpy(), other.numpy())[0, 1]) < 0.03  # another key or stream: independent


def test_a_sample_is_augmented_the_same_in_any_batch():
    images, cfg = _images(), AugmentConfig(rotate=15, vflip=0.5, color_jitter=0.4, hue=0.1)
    whole = augment.augment(images, torch.arange(8), cfg, key=11, size=32)
    order = torch.tensor([5, 2, 7])
    part = augment.augment(images[order], order, cfg, key=11, size=32)
    assert part.shape == (3, 32, 32, 3)
    torch.testing.assert_close(part, whole[order], atol=1e-4, rtol=0)
    assert not torch.allclose(augment.augment(images, torch.arange(8), cfg, key=12, size=32), whole)  # new epoch


def test_a_full_crop_without_flips_is_the_identity():
    images = _images()
    cfg = AugmentConfig(scale=[1.0, 1.0], ratio=[1.0, 1.0], hflip=0.0, color_jitter=0.0)
    out = augment.augment(images, torch.arange(8), cfg, key=3, size=48)
    torch.testing.assert_close(out, images.float(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("flip, dim", [("hflip", 2), ("vflip", 1)])
def test_flips_flip(flip, dim):
    images = _images()
    cfg = AugmentConfig(scale=[1.0, 1.0], ratio=[1.0, 1.0], color_jitter=0.0, **{"hflip": 0.0, flip: 1.0})
    out = augment.augment(images, torch.arange(8), cfg, key=3, size=48)
    torch.testing.assert_close(out, images.flip(dim).float(), atol=1e-3, rtol=0)


def test_crops_zoom_in_and_colour_jitter_stays_in_range():
    # A left-dark, right-bright image: a small crop sees a narrower range of columns than the whole image.
    ramp = torch.linspace(0, 255, 64).round().to(torch.uint8).view(1, 1, 64, 1).expand(4, 64, 64, 3).contiguous()
    cfg = AugmentConfig(scale=[0.1, 0.1], ratio=[1.0, 1.0], hflip=0.0, color_jitter=0.0)
    out = augment.augment(ramp, torch.arange(4), cfg, key=1, size=64)
    spans = out[..., 0].amax(dim=(1, 2)) - out[..., 0].amin(dim=(1, 2))
    assert (spans < 255 * 0.45).all()  # side sqrt(0.1) = 0.32 of the image
    jitter = AugmentConfig(color_jitter=0.8, hue=0.2)
    out = augment.augment(_images(), torch.arange(8), jitter, key=1, size=48)
    assert out.min() >= 0 and out.max() <= 255 and out.is_contiguous()  # NHWC memory: channels-last for the model


def test_training_order_deals_each_sample_to_one_rank_and_evaluation_covers_all():
    ranks = [epoch_order(50, 8, seed=1, epoch=3, shuffle=True, dist=Dist(r, 2)) for r in range(2)]
    dealt = [np.concatenate(batches) for batches in ranks]
    assert all(len(b) == 4 for batches in ranks for b in batches)  # the global batch of 8 split over 2 ranks
    assert not set(dealt[0]) & set(dealt[1]) and len(dealt[0]) + len(dealt[1]) == 48  # ragged tail dropped
    assert not np.array_equal(np.concatenate(epoch_order(50, 8, 1, 4, True, Dist())), np.concatenate(
        epoch_order(50, 8, 1, 3, True, Dist())))  # a new permutation every epoch
    evaluation = [np.concatenate(epoch_order(50, 8, 1, 3, False, Dist(r, 2))) for r in range(2)]
    assert sorted(np.concatenate(evaluation)) == list(range(50))
    with pytest.raises(KitError, match=r"train.batch_size 8 does not divide among 3 processes.*batch_size=6"):
        epoch_order(50, 8, 1, 3, True, Dist(0, 3))  # 8 on 3 ranks would silently train batches of 6


def test_an_epoch_of_at_most_epoch_rows_draws_a_fresh_subset_and_evaluation_sees_every_row():
    """train.epoch_rows: a training epoch of 24 of the 50 rows (3 batches of 8), another 24 the next epoch; the
    validation pass ignores the limit."""
    epochs = [np.concatenate(epoch_order(50, 8, 1, e, True, Dist(), limit=24)) for e in (3, 4)]
    assert [len(set(rows)) for rows in epochs] == [24, 24] and set(epochs[0]) != set(epochs[1])
    assert sorted(np.concatenate(epoch_order(50, 8, 1, 3, False, Dist(), limit=24))) == list(range(50))
    assert len(np.concatenate(epoch_order(50, 8, 1, 3, True, Dist(), limit=0))) == 48  # 0: every row


def _epoch(batches, epoch: int = 2) -> list:
    batches.set_epoch(5, epoch)
    return [(x.clone(), y.clone()) for x, y in batches]


def test_albumentations_batches_do_not_depend_on_loader_workers():
    images, labels = _images(24).numpy(), np.arange(24) % 3
    data = CachedImages(images, labels, augmentation(AugmentConfig(rotate=10), 32))
    runs = [_epoch(DatasetBatches(data, 8, CPU, shuffle=True, workers=w)) for w in (0, 2)]
    assert len(runs[0]) == 3
    for (xa, ya), (xb, yb) in zip(*runs, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_device_images_give_the_same_samples_whatever_the_batch_size():
    images, labels = _images(16).numpy(), np.arange(16)
    cfg = AugmentConfig(color_jitter=0.3)
    by_label = []
    for batch in (4, 16):
        out = _epoch(DeviceImages(images, labels, batch, CPU, 32, cfg))
        x, y = torch.cat([b[0] for b in out]), torch.cat([b[1] for b in out])
        by_label.append(x[y.argsort()])
    torch.testing.assert_close(by_label[0], by_label[1], atol=1e-4, rtol=0)
    valid = _epoch(DeviceImages(images, labels, 8, CPU, 24, None))
    assert [b[1].tolist() for b in valid] == [list(range(8)), list(range(8, 16))]  # in order, resized
    assert valid[0][0].shape == (8, 24, 24, 3)


@pytest.mark.gpu
def test_gpu_batches_match_whether_the_cache_is_resident_or_streamed_and_match_the_cpu():
    cuda = torch.device("cuda")
    images, labels, cfg = _images(16).numpy(), np.arange(16), AugmentConfig(rotate=10, color_jitter=0.3)
    resident = DeviceImages(images, labels, 8, cuda, 32, cfg, share=1.0)
    streamed = DeviceImages(images, labels, 8, cuda, 32, cfg, share=1e-12)  # never fits: pinned host memory
    assert resident.images.is_cuda and not streamed.images.is_cuda and streamed.images.is_pinned()
    on_cpu = _epoch(DeviceImages(images, labels, 8, CPU, 32, cfg))
    for a, b, c in zip(_epoch(resident), _epoch(streamed), on_cpu, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        torch.testing.assert_close(a[0].cpu(), c[0], atol=0.5, rtol=0)  # same draws; kernels may round apart


@pytest.mark.gpu
def test_a_training_epoch_on_the_gpu_never_waits_for_the_device():
    from kit.config import TrainConfig
    from kit.metrics import get_metric
    from kit.models import HW3CNN, ImageClassifier
    from kit.objective import Objective
    from kit.trainer import TrainState, train_epoch

    cuda = torch.device("cuda")
    cfg = TrainConfig(batch_size=8, mixup=0.4, cutmix=1.0, grad_clip=1.0, label_smoothing=0.1)
    model = ImageClassifier(HW3CNN(11), [0.5] * 3, [0.5] * 3).to(cuda).to(memory_format=torch.channels_last)
    batches = DeviceImages(_images(32).numpy(), np.arange(32) % 11, 8, cuda, 32, AugmentConfig(rotate=10))
    # The food11 recipe's loss: class-weighted and label-smoothed (torch's own weighted CE would sync here).
    accuracy = get_metric("accuracy", "multiclass")
    objective = Objective(accuracy, {}, class_weights=torch.rand(11) + 0.5, label_smoothing=0.1)
    state, criterion = TrainState(model, cfg, len(batches)), objective.criterion(cuda)
    batches.set_epoch(0, 1)
    train_epoch(state, batches, criterion, cfg, 0, 1)  # warm-up: lazy CUDA initialisation may synchronise
    batches.set_epoch(0, 2)
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call in the epoch raises
    try:
        loss, seen = train_epoch(state, batches, criterion, cfg, 0, 2)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert seen == 32 and torch.isfinite(loss)


def test_the_gpu_cache_budget_counts_every_cache_against_the_total_and_leaves_room_for_the_model():
    from kit.batches import cache_fits

    gb = 10**9
    assert cache_fits(3 * gb, usable=70 * gb, total=80 * gb, resident=0, share=0.5)[0]
    # the valid cache after a 30 GB train cache: free memory alone (50 GB) would take it, the share of 40 GB not
    fits, why = cache_fits(15 * gb, usable=50 * gb, total=80 * gb, resident=30 * gb, share=0.5)
    assert not fits and "30.00 GB already cached" in why and "image.device_cache = 0.5" in why
    # room left for the model and its batches: 25% of the total stays free
    fits, why = cache_fits(10 * gb, usable=25 * gb, total=80 * gb, resident=0, share=0.5)
    assert not fits and "stay for the model" in why
    assert cache_fits(10 * gb, usable=31 * gb, total=80 * gb, resident=0, share=0.5)[0]
