"""Image task: HW3-layout folders, the decoded-image cache, albumentations, timm models, TTA."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from kit import contract, image_csv
from kit.batches import DatasetBatches, DeviceImages
from kit.config import AugmentConfig, Config
from kit.device import available_cpus
from kit.distributed import SINGLE, Dist
from kit.ensemble import TTA, Blend, FoldEnsemble, TargetInverse, tta_passes
from kit.errors import KitError
from kit.images import cached_decode, list_labelled, list_unlabelled, split_folders
from kit.learners import get_learner
from kit.models import ImageClassifier, image_net, image_norm
from kit.target import Target, for_classes, get_target, settle, target_class
from kit.tasks import Samples

log = logging.getLogger(__name__)


class ImageTask:
    unit = "images"  # what a sample is, in logs and progress bars

    def __init__(self, config: Config):
        kind = self.known_kind(config)
        if config.target.type == "auto" and kind is not None:  # the config's classes settle it (HW3 layouts)
            config = dataclasses.replace(config, target=dataclasses.replace(config.target, type=kind.name))
        self.config = config

    @classmethod
    def check(cls, config: Config) -> None:
        if len(config.classes) < 2 and not image_csv.listed(config):
            raise KitError(f"classes {config.classes} must list at least two distinct names: an image competition "
                           "whose labels are in its file or folder names names its classes in the config")
        others = [name for name in config.learners if not get_learner(name).images]
        if others:
            raise KitError(f"config key 'learners' is {config.learners}; an image competition trains its network "
                           f"only: learners: [net] ({', '.join(others)} learn from tables)")
        if config.cv.groups or config.cv.time:
            raise KitError("cv.groups and cv.time need table columns; an image competition uses stratified folds")

    @classmethod
    def known_kind(cls, config: Config) -> type[Target] | None:
        """Set in the config, or settled by the number of classes in folder names (None: the labels CSV settles it,
        as its 0/1 columns may hold several 1s in a row)."""
        if config.target.type != "auto":
            return target_class(config.target.type)
        return for_classes(len(config.classes)) if config.classes and not image_csv.listed(config) else None

    @classmethod
    def label_names(cls, config: Config) -> list[str]:
        """A label submission writes the class name when the labels come from a CSV, else the class index (HW3)."""
        return list(config.classes) if image_csv.listed(config) else [str(i) for i in range(len(config.classes))]

    def resolve(self, path: Path | None = None) -> Config:
        """The config with the target kind (and, for a labels CSV, the classes) settled, as kit/target/ does."""
        config, columns = self.config, self.config.target.columns
        if image_csv.listed(config):
            labels_csv, _ = image_csv.training_files(config, path)
            frame = image_csv.read_ids(labels_csv, config.data.id, "labels")
            return settle(dataclasses.replace(config, classes=config.classes or columns),
                          image_csv.label_text(config, frame, labels_csv))
        return config

    def score_names(self) -> tuple[str, str]:
        """Epochs validate at the crop size without TTA (cheaper); the fold's OOF predictions run at test_size with
        the TTA views, as test predictions do, so the fold score is not the best epoch's number."""
        tta = "+TTA" if len(self.config.tta.views) > 1 else ""
        return f"valid@{self.config.image.size}", f"OOF@{self.config.image.test_size or self.config.image.size}{tta}"

    def load(self, split: str, path: Path | None = None) -> Samples:
        return self._load_train(path) if split == "train" else self._load_test(path)

    def _load_train(self, path: Path | None) -> Samples:
        paths, y, is_valid, ids = self.labelled(path)
        images, bad = self._decode(paths)
        keep = np.setdiff1d(np.arange(len(paths)), list(bad))
        if bad:
            log.warning("left out %d unreadable training image(s): %s", len(bad), describe_bad(paths, bad))
            images = images[keep]
        return Samples([ids[i] for i in keep], y[keep], images, None if is_valid is None else is_valid[keep])

    def labelled(self, path: Path | None = None) -> tuple[list[Path], np.ndarray, np.ndarray | None, list[str]]:
        """(image files, encoded labels, which are in the data's own valid/ split (None: no such split), ids) of the
        training images, before decoding: named by the labels CSV (kit/image_csv.py), or by folder and file names."""
        return self._listed(path) if image_csv.listed(self.config) else self._foldered(path)

    def _foldered(self, path: Path | None) -> tuple[list[Path], np.ndarray, np.ndarray, list[str]]:
        root = Path(path) if path else self.config.path(self.config.data.train)
        if not root.is_dir() and self.config.data.kaggle:
            from kit.download import manual_steps

            where = "DATA" if path else "the config's default folder; DATA=... points elsewhere"
            raise KitError(f"no {self.config.competition} data at {root} ({where}).\n{manual_steps(self.config, root)}")
        folders = split_folders(root)
        if self.config.cv.folds == "given" and "valid" not in folders:
            raise KitError(f"cv.folds=given needs a valid/ folder beside train/ in {root}")
        paths, labels, is_valid = [], [], []
        for split, folder in folders.items():
            found, found_labels, skipped = list_labelled(folder, self.config.classes)
            if skipped:
                log.warning("%s: skipped %d file(s): %s%s", folder, len(skipped), "; ".join(skipped[:5]),
                            " ..." if len(skipped) > 5 else "")
            if not found:
                raise KitError(f"{folder} holds no labelled images; expected {{label}}_{{idx}}.jpg files "
                               f"(label 0-{len(self.config.classes) - 1}) or one sub-folder per class")
            paths += found
            labels += found_labels
            is_valid += [split == "valid"] * len(found)
        ids = [str(p.relative_to(root)) for p in paths]
        return paths, np.asarray(labels, dtype=np.int64), np.asarray(is_valid), ids

    def _listed(self, path: Path | None) -> tuple[list[Path], np.ndarray, None, list[str]]:
        if self.config.cv.folds == "given":
            raise KitError("cv.folds=given needs train/ and valid/ folders; a labels CSV has no validation split")
        labels_csv, folder = image_csv.training_files(self.config, path)
        frame = image_csv.read_ids(labels_csv, self.config.data.id, "labels")
        labels, target = image_csv.label_text(self.config, frame, labels_csv), get_target(self.config)
        target.check_labels(labels, f"{labels_csv}: the label")
        ids = frame[self.config.data.id].tolist()
        return image_csv.find_images(folder, ids, "training"), target.encode(labels), None, ids

    def test_files(self, path: Path | None = None) -> tuple[list[str], list[Path]]:
        """(ids, image files) of the test split: the test folder's images, or those a CSV names."""
        if image_csv.listed(self.config):
            return image_csv.test_files(self.config, path)
        paths = list_unlabelled(Path(path) if path else self.config.path(self.config.data.test))
        return [p.stem for p in paths], paths

    def test_ids(self) -> list[str] | None:
        test = self.config.data.test
        return self.test_files()[0] if test and self.config.path(test).exists() else None

    def _load_test(self, path: Path | None) -> Samples:
        ids, paths = self.test_files(path)
        images, bad = self._decode(paths)
        if bad:
            raise KitError(f"cannot predict: {len(bad)} unreadable test image(s): {describe_bad(paths, bad)}; "
                           "every test image needs a prediction, so replace or remove them")
        return Samples(ids, None, images)

    def _decode(self, paths: list[Path]) -> tuple[np.ndarray, dict[int, str]]:
        cfg = self.config.image
        return cached_decode(paths, cfg.test_size or cfg.size, Path(cfg.cache_dir), decode_workers(cfg.decode_workers))

    def fit(self, train: Samples) -> dict:
        mean, std = image_norm(self.config.model)
        cfg = self.config.image
        state = {"size": cfg.test_size or cfg.size, "crop": cfg.size, "mean": cfg.mean or mean, "std": cfg.std or std}
        scale = get_target(self.config).fit_scale(train.y)  # values: the network fits standardised transform(y)
        return state | ({"target": scale} if scale is not None else {})

    def loader(self, samples: Samples, state: dict, train: bool, dist: Dist = SINGLE,
               device: torch.device | None = None) -> DeviceImages | DatasetBatches:
        """Training: augmented crops. Validation (every epoch): the whole image at the crop size, which is cheaper
        than test_size; the OOF predictions, test set and exports then run at test_size."""
        cfg, device = self.config, device or dist.device
        batch = cfg.train.batch_for() * (1 if train else 2)
        if augment_backend(cfg.augment.backend, device) == "tensor":
            return DeviceImages(samples.data, samples.y, batch, device, state["crop"], cfg.augment if train else None,
                                cfg.image.device_cache, dist)
        if train:
            transform = augmentation(cfg.augment, state["crop"])
        else:
            transform = A.Compose([A.Resize(state["crop"], state["crop"])]) if state["crop"] != state["size"] else None
        return DatasetBatches(CachedImages(samples.data, samples.y, transform), batch, device, shuffle=train,
                              workers=loader_workers(cfg.train.num_workers, device), dist=dist)

    def build_model(self, state: dict, pretrained: bool = False) -> torch.nn.Module:
        net = image_net(self.config.model, get_target(self.config).width, pretrained)
        return ImageClassifier(net, state["mean"], state["std"]).to(memory_format=torch.channels_last)

    def ensemble(self, folds: list[dict[str, torch.nn.Module]], states: list[dict],
                 weights: list[float] | None) -> torch.nn.Module:
        """Each fold's network under its target's link, averaged over its TTA views: class or tag probabilities, or
        values (back in transform(y) units); the served module (weights given) inverts transform(y)."""
        tta, target = self.config.tta, get_target(self.config)
        members = []
        for fold, state in zip(folds, states, strict=True):
            views = {name: TTA(target.link(m, state), tta.views, tta.blend) for name, m in fold.items()}
            members.append(Blend(views, weights))
        ensemble = FoldEnsemble(members)
        return TargetInverse(ensemble, target.transform) if weights is not None and target.predicts_values else ensemble

    def tta_meta(self) -> dict:
        """meta.json["tta"]; passes: images the graph runs per input image, which kit.runtime sizes its chunks by."""
        tta = self.config.tta
        return {**dataclasses.asdict(tta), "passes": len(tta_passes(tta.views, tta.blend))}

    def raw_test(self, path: Path | None = None) -> tuple[list[str], list[Path]]:
        """(ids, the image files) of the test split, as a serving program would pass them to kit.runtime."""
        return self.test_files(path)

    def write_contract(self, states: list[dict], width: int, folder: Path) -> dict:
        return contract.describe_images(states[0]["size"], states[0]["mean"], states[0]["std"])

    def batches(self, samples: Samples, states: list[dict]) -> Iterator[torch.Tensor]:
        step = self.config.image.batch_size
        for start in range(0, len(samples), step):
            yield torch.from_numpy(np.array(samples.data[start : start + step]))  # a writable copy of the cache rows


def describe_bad(paths: list[Path], bad: dict[int, str], shown: int = 5) -> str:
    text = "; ".join(f"{paths[i]} ({why})" for i, why in list(bad.items())[:shown])
    return text + (f"; and {len(bad) - shown} more" if len(bad) > shown else "")


class CachedImages(Dataset):
    """(uint8 HWC image, label) pairs read from the decoded cache, augmented when a transform is given: then items
    are fetched by (key, index), and sample i's draws come from (key, i), the same in any worker or rank."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: A.Compose | None):
        self.images, self.labels, self.transform = images, labels, transform
        self.keyed = transform is not None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        key, i = item if isinstance(item, tuple) else (0, item)
        image = np.asarray(self.images[i])
        if self.transform is not None:
            rng = np.random.default_rng([key, i])
            self.transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))
            image = self.transform(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.as_tensor(self.labels[i])  # a class, value or tags


def augment_backend(setting: str, device: torch.device) -> str:
    """`augment.backend`: auto is batched tensor code on a GPU and albumentations on the CPU, where it is faster
    (measured alone: 3,000-3,100 vs 770-1,060 images/s on 2 idle cores, 224 -> 160 px crops)."""
    if setting == "auto":
        return "tensor" if device.type == "cuda" else "albumentations"
    return setting


def decode_workers(setting: int | str) -> int:
    """`image.decode_workers`: auto decodes in one process per available CPU."""
    return available_cpus() if setting == "auto" else int(setting)


def loader_workers(setting: int | str, device: torch.device) -> int:
    """`train.num_workers`: auto gives albumentations its own CPU processes when a GPU does the model's work,
    and none on a CPU-only machine, where the model needs every core and augmentation is ~2% of a step."""
    if setting != "auto":
        return int(setting)
    return min(8, max(1, available_cpus() - 1)) if device.type == "cuda" else 0


def augmentation(cfg: AugmentConfig, size: int) -> A.Compose:
    """The training pipeline from config: random resized crop, flips, rotation, colour jitter."""
    steps = [A.RandomResizedCrop(size=(size, size), scale=tuple(cfg.scale), ratio=tuple(cfg.ratio))]
    if cfg.hflip > 0:
        steps.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.vflip > 0:
        steps.append(A.VerticalFlip(p=cfg.vflip))
    if cfg.rotate > 0:
        steps.append(A.Affine(rotate=(-cfg.rotate, cfg.rotate), p=0.5))
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=cfg.hue, p=0.8))
    return A.Compose(steps)
