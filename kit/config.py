"""Typed configuration: competitions/<name>/config.yaml plus `--set key=value` overrides.

Every key is documented where it is declared, and `make docs` builds the configuration reference from it: a
section's meaning is its dataclass docstring; a key's is its trailing comment and the comment block right above
it. Comment lines right below a key with a trailing comment continue it when the next key has a trailing comment
of its own (a blank line above a block gives it to the key below). Ranges come from `_range_rules` and
`_learner_rules`. A key without a meaning fails the build.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kit.errors import KitError
from kit.learners import LEARNERS

COMPETITIONS_DIR = Path(__file__).resolve().parent.parent / "competitions"


@dataclass
class DataConfig:
    """Where the competition's data is and which columns hold the ids and the labels."""

    train: str = "data/train.csv"  # tabular: a CSV; image: a folder with train/ (+ valid/). Relative to the comp.
    # tabular: a CSV; image: a folder of unlabeled images, or with `labels` a CSV naming them by `id` (their images
    # in `images`)
    test: str = "data/test.csv"
    id: str = "id"  # the id column of the CSVs (tabular; image with `labels`)
    # image: a CSV naming each training image by `id` with its label(s) (Kaggle's train.csv) in place of labels in
    # the file or folder names; `train` is then unused
    labels: str | None = None
    images: str | None = None  # image, with `labels`: the folder holding the images it names (and test.csv's)
    sample: str | None = None  # the competition's sample_submission.csv: submission.csv takes its header and ids
    kaggle: str | None = None  # Kaggle competition slug that `make data` downloads


@dataclass
class TargetConfig:
    """What to predict: the training file's target column and its type."""

    column: str = "target"  # the label column of train.csv (tables, and images listed by data.labels)
    columns: list[str] = field(default_factory=list)  # images listed by data.labels: one 0/1 column per class or tag
    # multilabel, binary, ordinal, multiclass or regression (kit/target/), or auto: image folders -> binary or
    # multiclass by the number of classes; labels -> space-separated tags (or multi-hot columns) are multilabel,
    # 2 values binary, 3-20 whole numbers ordinal under qwk, other few whole numbers or text multiclass, other
    # numbers regression (the rule is logged)
    type: str = "auto"
    # regression: the learners fit transform(y) and predictions are inverted; auto is log1p for rmsle, else none
    transform: Literal["auto", "none", "log1p"] = "auto"


@dataclass
class FeaturesConfig:
    """Tabular: the raw columns a row needs and the features made from them (fitted per training fold). Listed
    columns (raw_numeric / raw_text given, as Titanic does) or, when none are listed, every column's kind inferred
    on each training fold (kit/columns.py); then numeric / categorical / drop only force kinds."""

    code: str | None = None  # file in the competition folder defining engineer(df) -> df (row-wise, label-free)
    raw_numeric: list[str] = field(default_factory=list)  # required input columns parsed as numbers
    raw_text: list[str] = field(default_factory=list)  # required input columns kept as text
    numeric: list[str] = field(default_factory=list)  # engineered columns: imputed, standardised
    categorical: list[str] = field(default_factory=list)  # engineered columns: one-hot, vocabulary from the fold
    drop: list[str] = field(default_factory=list)  # columns left out (inferred kinds only)
    impute_by: dict[str, str] = field(default_factory=dict)  # numeric column -> group column for median imputation
    counts: dict[str, str] = field(default_factory=dict)  # new column -> key column whose frequency it counts

    # new column -> key column: the label shares of the *other* training-fold rows sharing the row's key (for
    # binary tasks the positive share; one column per class after the first) and how many such rows there are.
    # Fitted in each training fold; a row's own label never reaches its own features (kit/encoding.py).
    group_rates: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageConfig:
    """Image decoding, its cache and the sizes images are trained and predicted at."""

    size: int = 160  # training crops are size x size

    # Images are decoded once at test_size x test_size (aspect squashed) and cached; OOF predictions, the test
    # set and exports run at that size (per-epoch validation at `size`, which is cheaper). Larger than `size`
    # helps: random-resized-crop training shows objects bigger than a whole-image resize does, and testing
    # at ~1.2-1.4x the crop size makes up for it (FixRes).
    test_size: int = 0  # 0: the same as size
    mean: list[float] | None = None  # normalisation; None takes the model's own (timm pretrained_cfg)
    std: list[float] | None = None  # normalisation; None takes the model's own (timm pretrained_cfg)
    cache_dir: str = ".cache/kit"  # relative to the working directory
    decode_workers: int | Literal["auto"] = "auto"  # processes decoding into the cache; auto: one per CPU
    batch_size: int = 64  # OOF predictions and export parity batches (`make predict` uses predict.batch_size)
    device_cache: float = 0.5  # CUDA training: keep the fold's train and valid images on the GPU when together
    # they fit in this share of its total memory with a quarter left for the model; else copy from pinned memory


@dataclass
class AugmentConfig:
    """Training augmentation of images."""

    scale: list[float] = field(default_factory=lambda: [0.35, 1.0])  # random resized crop: area range
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333])  # random resized crop: aspect ratio range
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip
    rotate: float = 0.0  # max degrees
    color_jitter: float = 0.2  # brightness/contrast/saturation strength; 0 disables
    hue: float = 0.02  # hue jitter strength (turns of the colour circle); 0 disables

    # Where and how: `tensor` augments whole batches on the training device (kit/augment.py), `albumentations`
    # augments each sample on the CPU in loader workers. auto: tensor on CUDA, albumentations on the CPU
    # (faster there: 3,000-3,100 vs 770-1,060 images/s on 2 idle cores, 224 -> 160 px).
    backend: Literal["auto", "tensor", "albumentations"] = "auto"


@dataclass
class TTAConfig:
    """Test-time augmentation: the views each fold model sees, inside the served module."""

    # each view's probabilities are averaged; zoom: a central crop of 7/8 of the side, resized back
    views: list[Literal["identity", "hflip", "vflip", "zoom", "zoom_hflip"]] = field(
        default_factory=lambda: ["identity"]
    )
    blend: float = 0.0  # weight of the plain view blended with the mean of the views


@dataclass
class PredictConfig:
    """`make predict` on the eager fold ensemble."""

    # Autocast for `predict` (eager ensemble); the log then reports agreement with fp32. Exports stay fp32.
    amp: Literal["off", "bf16", "fp16"] = "off"
    # Test images per batch; each forward pass carries batch x TTA passes images. 0: auto, so that a pass holds
    # kit.runtime.BUDGET_PIXELS (the pixels of 256 224-px images on a GPU, 32 on the CPU; 2 cores: 32 ran as fast
    # as 64 or faster, 8-16 up to 2x slower), the same budget an export's chunks use.
    batch_size: int = 0


@dataclass
class CVConfig:
    """Stratified k-fold cross-validation."""

    folds: int | Literal["given"] = 5  # "given": the data's train/valid split as a single fold
    seed: int = 42  # seed of the fold split
    groups: str | None = None  # a column: rows sharing its value stay in one fold (stratified where possible)
    time: str | None = None  # a column to order by: each fold trains on the past and validates on the next block

    # Repeated CV: the k-fold split again with seeds seed, seed+1, ...; scores get mean ± sd over repeats, and
    # the test predictions average every repeat's folds. Compare recipes with `make compare` on such runs.
    repeats: int = 1


@dataclass
class ModelConfig:
    """The network: the `net` learner of a tabular competition, the model of an image one."""

    name: str = "mlp"  # mlp (tabular), hw3_cnn, or any timm model name
    pretrained: str = "none"  # auto | none | path to a state_dict file
    hidden: list[int] = field(default_factory=lambda: [64])  # mlp only
    dropout: float = 0.2  # dropout rate (timm models: before the classifier; mlp: after each hidden layer)
    drop_path: float = 0.0  # timm models only
    freeze: list[str] = field(default_factory=list)  # modules kept at pretrained weights: [conv_stem, blocks.0]


@dataclass
class TrainConfig:
    """The training loop shared by every task: AdamW, linear warm-up then cosine decay, early stopping."""

    epochs: int = 30  # epochs per fold at most (early stopping may end a fold sooner)

    # training samples per step (under torchrun data-parallel: the global batch); 0: auto, sized to the rows for
    # tables (rows / 50 as a power of two, from 32 to 4096: a 1M-row table takes ~250 steps an epoch, not
    # 15,000), 64 for images
    batch_size: int = 0
    # tables: training rows an epoch draws at most, a fresh random subset each epoch (0: all). On the million-row
    # table 400,000 of a fold's 800,000 cut the network's 70 s to 44 s, its CV ROC AUC 0.8558 -> 0.8545 and the
    # blend's 0.8759 -> 0.8758 (docs/tables.md, Scale)
    epoch_rows: int = 0
    lr: float = 3e-3  # peak learning rate of AdamW
    weight_decay: float = 1e-2  # AdamW weight decay
    warmup_epochs: float = 1.0  # linear warm-up from 0 to lr, then cosine decay to 0 by the last epoch
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    label_smoothing: float = 0.0  # share of each label spread evenly over the classes
    mixup: float = 0.0  # Beta(alpha, alpha) for mixup; 0 disables
    cutmix: float = 0.0  # Beta(alpha, alpha) for cutmix (images); 0 disables; with both, each batch picks one
    class_weights: bool = False  # weight the loss by inverse class frequency (imbalanced data)
    amp: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on CUDA, fp32 on CPU
    monitor: Literal["metric", "loss"] = "metric"  # what picks the best epoch and stops early: the metric or loss
    patience: int = 5  # epochs without improvement before stopping
    min_epochs: int = 0  # patience starts counting only after this many epochs (let a decaying schedule finish)
    min_delta: float = 0.0  # smallest change of the monitored value that counts as improvement
    seed: int = 42  # fold k seeds Python, NumPy and torch with seed + k
    deterministic: bool = False  # torch.use_deterministic_algorithms (GPU kernels; CPU runs repeat anyway)
    num_workers: int | Literal["auto"] = "auto"  # DataLoader processes; auto: min(8, CPUs - 1) when
    # training on a GPU, none on a CPU-only machine (kit/tasks/image.py loader_workers)
    compile: bool = False  # torch.compile the model for training (CUDA: faster steps after a compile per fold)

    def batch_for(self, rows: int | None = None) -> int:
        """The training batch: batch_size, or for 0 (auto) one sized to `rows` (tables) or 64 (images: None)."""
        if self.batch_size:
            return self.batch_size
        if rows is None:
            return 64
        return int(min(4096, max(32, 2 ** round(math.log2(max(rows, 1) / 50)))))


@dataclass
class SubmissionConfig:
    """The columns of submission.csv (with data.sample, the sample's header wins)."""

    id_column: str = ""  # header of the id column; "": data.id
    target_column: str = ""  # header of the predicted column; "": target.column
    sort_by_id: bool = False  # False keeps the test file's order


@dataclass
class Config:
    """A competition's config.yaml: top-level keys and one section per part of the pipeline."""

    competition: str  # the competition's name (default: its folder's name)
    task: str  # required: the data type, which decides the task code in kit/tasks/ (tabular, image)

    # class names in output order. Image: required. Tabular classification: [] takes the sorted training labels
    # (binary: the last is the positive class); regression: none
    classes: list[str] = field(default_factory=list)
    metric: str = "accuracy"  # the competition's metric (kit/metrics.py), or a .py file in the competition folder
    target: TargetConfig = field(default_factory=TargetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tta: TTAConfig = field(default_factory=TTAConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # Tabular: every learner trains on the same folds and fitted preprocessing, then they are blended on their
    # out-of-fold predictions. net: the `model` section, trained by the shared loop; the others (kit/learners/):
    # gbdt, linear: scikit-learn; catboost: CatBoost; xgboost: XGBoost; each has the section of its name
    learners: list[str] = field(default_factory=lambda: ["net"])
    # auto: weights fitted on the OOF predictions when they beat the plain mean by more than the noise, else mean;
    # then ensemble selection (greedy, Caruana et al.: weights that optimise the metric itself) when it beats that
    blend: Literal["auto", "weights", "mean", "greedy"] = "auto"
    train: TrainConfig = field(default_factory=TrainConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    folder: str = ""  # set for a competition given as a folder path (--comp path/to/folder)
    recipe: str = ""  # the recipe file laid over config.yaml (RECIPE=gpu: gpu.yaml), recorded in the run
    # TIME=: the minutes `make train predict` may take, e.g. 10m or 1h (kit/budget.py): more repeats of the folds
    # fill them, each kept only beyond the noise; none: the recipe as configured
    budget: str | None = None

    @property
    def root(self) -> Path:
        """The competition folder; relative paths in the config resolve against it."""
        return Path(self.folder) if self.folder else COMPETITIONS_DIR / self.competition

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p


def _with_learner_sections(base: type) -> type:
    """`base` with one section per registered learner that has settings (kit/learners/), named as the learner."""
    sections = [(name, cls.settings, field(default_factory=cls.settings)) for name, cls in LEARNERS.items()
                if cls.settings is not None]
    config = dataclasses.make_dataclass(base.__name__, sections, bases=(base,))
    config.__doc__, config.__module__ = base.__doc__, base.__module__
    return config


Config = _with_learner_sections(Config)


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 90, 90s, 10m, 1.5h (TIME=)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", str(text))
    if not match or float(match[1]) <= 0:
        raise KitError(f"TIME={text!r} is not a duration; give seconds, or minutes or hours: 90s, 10m, 1.5h")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def known_competitions() -> list[str]:
    return sorted(p.parent.name for p in COMPETITIONS_DIR.glob("*/config.yaml"))


def load_config(competition: str, overrides: list[str] | tuple[str, ...] = (), recipe: str | None = None) -> Config:
    """Read competitions/<competition>/config.yaml (or <folder>/config.yaml for a path), lay the recipe file
    <recipe>.yaml beside it over it (e.g. gpu.yaml), then apply the overrides."""
    folder = Path(competition).expanduser()
    is_path = "/" in competition or competition.startswith(".")
    path = (folder if is_path else COMPETITIONS_DIR / competition) / "config.yaml"
    if not path.is_file():
        known = ", ".join(known_competitions()) or "none"
        if is_path:
            raise KitError(f"no config.yaml in {folder}; a competition folder holds config.yaml and its data")
        raise KitError(f"unknown competition {competition!r}; known competitions: {known} "
                       "(or give a folder path holding a config.yaml)")
    raw = _read_yaml(path)
    where = str(path)
    if recipe:
        recipe_path = path.parent / f"{recipe}.yaml"
        if not recipe_path.is_file():
            found = sorted(p.stem for p in path.parent.glob("*.yaml") if p.name != "config.yaml")
            raise KitError(f"no recipe {recipe!r} for {raw.get('competition', folder.name)}: {recipe_path} does not "
                           f"exist; recipes there: {', '.join(found) or 'none'} (or leave RECIPE out)")
        raw = _merge(raw, _read_yaml(recipe_path))
        raw["recipe"] = recipe
        where = f"{path} + {recipe_path.name}"
    raw.setdefault("competition", folder.resolve().name if is_path else competition)
    if is_path:
        raw["folder"] = str(folder.resolve())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KitError(f"override {item!r} is not of the form key=value (e.g. cv.folds=10)")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise KitError(f"override {item!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)}); "
                           "quote it, e.g. key='[text'") from None
        _set_path(raw, key.strip(), parsed, item)
    config = build(Config, raw, where=where)
    check_ranges(config)
    check_learners(config)
    check_target(config)
    return config


def check_learners(config: Config) -> None:
    """The learners list, repeats and the learners' settings."""
    from kit.learners import get_learner

    if not config.learners or len(set(config.learners)) != len(config.learners):
        raise KitError(f"config key 'learners' is {config.learners}; list each learner once, e.g. [net, gbdt, linear]")
    for name in config.learners:
        get_learner(name)  # an unknown name is refused with the known ones listed
    for key, value, low, high in _learner_rules(config):
        if not low <= value <= high:  # also refuses NaN
            raise KitError(f"config key {key!r} is {value}; it must be in [{low:g}, {high:g}]")
    if config.cv.repeats > 1 and config.cv.folds == "given":
        raise KitError("cv.repeats > 1 needs cv.folds as a number: the given split is the same every time")


def _learner_rules(config: Config) -> list[tuple[str, Any, float, float]]:
    """(key, value, low, high) for repeats and each learner's settings (both ends included)."""
    from kit.learners import LEARNERS

    rules = [("cv.repeats", config.cv.repeats, 1, 100)]
    for name, learner in LEARNERS.items():
        if learner.settings is not None:
            rules += [(f"{name}.{key}", value, low, high) for key, value, low, high in getattr(config, name).ranges()]
    return rules


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise KitError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise KitError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def _merge(base: dict, top: dict) -> dict:
    """`top` laid over `base`, section by section (a recipe changes only the keys it names)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


# Keys of older configs and where they went, so an old config is told what to write instead.
MOVED = {"data.target": "target.column (target: {column: <name>, type: binary | multiclass | regression})",
         "logreg": "the section `linear` (learner `linear`)"}
SEED_MAX = 2**31 - 1  # seeds feed NumPy (below 2**32) with the fold number added
MAX_SIDE = 4096  # pixels: a larger decode cache would not fit any machine's memory
MAX_WORKERS = 256  # processes


def check_ranges(config: Config) -> None:
    """Reject values of the right type but outside what makes sense: every number must be finite and in its range
    (the learners' settings are checked by check_learners)."""
    for key, value, ok, expected in _range_rules(config):
        if not ok(value):
            raise KitError(f"config key {key!r} is {value}; it must be {expected}")
    if not config.tta.views:
        raise KitError("tta.views is empty; list at least one view, e.g. [identity]")
    if len(set(config.classes)) != len(config.classes) or len(config.classes) == 1:
        raise KitError(f"classes {config.classes} must list at least two distinct names")


def check_target(config: Config) -> None:
    """The task, target type, metric and CV options fit together (refused before any run folder exists)."""
    from kit.metrics import get_metric
    from kit.target import target_class
    from kit.tasks import task_class

    task, cv = task_class(config.task), config.cv
    if config.target.type != "auto" and config.classes:  # else the labels give the classes, where the kind has any
        target_class(config.target.type)(config.classes).check_classes()
    task.check(config)
    kind = task.known_kind(config)
    if kind is not None:
        get_metric(config.metric, kind.name, config.root)
    if cv.groups and cv.time:
        raise KitError("set cv.groups or cv.time, not both")
    if cv.time and (cv.repeats > 1 or cv.folds == "given"):
        raise KitError("cv.time makes one split (the past, then the next block): use cv.repeats=1 and a number of "
                       "folds")
    if config.budget is not None:
        parse_duration(config.budget)
        if cv.time or cv.folds == "given":
            raise KitError("TIME= (budget) spends its time on repeats of the k-fold split, which cv.time and "
                           "cv.folds=given do not have; leave TIME out")


def _range_rules(config: Config) -> list[tuple[str, Any, Any, str]]:
    """(key, value, test, what the test wants) for every numeric key of the sections check_ranges covers."""
    n, image, aug, model, train = _in_range, config.image, config.augment, config.model, config.train
    rate = (lambda v: n(v, 0, 1), "from 0 to 1")
    return [
        ("cv.folds", config.cv.folds, lambda v: v == "given" or n(v, 2), "at least 2 (or 'given')"),
        ("cv.seed", config.cv.seed, lambda v: n(v, 0, SEED_MAX), f"from 0 to {SEED_MAX}"),
        ("image.size", image.size, lambda v: n(v, 16, MAX_SIDE), f"from 16 to {MAX_SIDE}"),
        ("image.test_size", image.test_size, lambda v: v == 0 or n(v, 16, MAX_SIDE),
         f"from 16 to {MAX_SIDE} (or 0: the same as size)"),
        ("image.mean", image.mean, lambda v: v is None or _numbers(v, 3, 0, 1),
         "three numbers from 0 to 1, one per RGB channel (or null: the model's own)"),
        ("image.std", image.std, lambda v: v is None or _numbers(v, 3, 0, 1, low_open=True),
         "three numbers above 0 and at most 1, one per RGB channel (or null: the model's own)"),
        ("image.decode_workers", image.decode_workers, lambda v: v == "auto" or n(v, 1, MAX_WORKERS),
         f"from 1 to {MAX_WORKERS} (or 'auto')"),
        ("image.batch_size", image.batch_size, lambda v: n(v, 1), "at least 1"),
        ("image.device_cache", image.device_cache, lambda v: n(v, 0, 1, low_open=True), "in (0, 1]"),
        ("augment.scale", aug.scale, lambda v: _numbers(v, 2, 0, 1, low_open=True) and v[0] <= v[1],
         "two numbers [min, max] with 0 < min <= max <= 1 (shares of the image area)"),
        ("augment.ratio", aug.ratio, lambda v: _numbers(v, 2, 0.1, 10) and v[0] <= v[1],
         "two numbers [min, max] with 0.1 <= min <= max <= 10 (crop width / height)"),
        ("augment.hflip", aug.hflip, *rate),
        ("augment.vflip", aug.vflip, *rate),
        ("augment.rotate", aug.rotate, lambda v: n(v, 0, 180), "from 0 to 180 (degrees)"),
        ("augment.color_jitter", aug.color_jitter, lambda v: n(v, 0, 1), "from 0 (off) to 1"),
        ("augment.hue", aug.hue, lambda v: n(v, 0, 0.5), "from 0 (off) to 0.5 (turns of the colour circle)"),
        ("tta.blend", config.tta.blend, *rate),
        ("predict.batch_size", config.predict.batch_size, lambda v: n(v, 0), "0 (auto) or more"),
        ("model.hidden", model.hidden, lambda v: all(n(h, 1) for h in v), "a list of layer widths of at least 1"),
        ("model.dropout", model.dropout, lambda v: n(v, 0, 1, high_open=True), "in [0, 1)"),
        ("model.drop_path", model.drop_path, lambda v: n(v, 0, 1, high_open=True), "in [0, 1)"),
        ("train.epochs", train.epochs, lambda v: n(v, 1), "at least 1"),
        ("train.epoch_rows", train.epoch_rows, lambda v: n(v, 0), "0 (all) or more"),
        ("train.batch_size", train.batch_size, lambda v: v == 0 or n(v, 2),
         "0 (auto) or at least 2 (BatchNorm needs two samples a batch)"),
        ("train.lr", train.lr, lambda v: n(v, 0, low_open=True), "a positive finite number"),
        ("train.weight_decay", train.weight_decay, lambda v: n(v, 0), "a finite number, 0 or more"),
        ("train.warmup_epochs", train.warmup_epochs, lambda v: n(v, 0), "a finite number of epochs, 0 or more"),
        ("train.grad_clip", train.grad_clip, lambda v: n(v, 0), "a finite number, 0 (off) or more"),
        ("train.label_smoothing", train.label_smoothing, lambda v: n(v, 0, 1, high_open=True), "in [0, 1)"),
        ("train.mixup", train.mixup, lambda v: n(v, 0, 100), "from 0 (off) to 100 (Beta(alpha, alpha))"),
        ("train.cutmix", train.cutmix, lambda v: n(v, 0, 100), "from 0 (off) to 100 (Beta(alpha, alpha))"),
        ("train.patience", train.patience, lambda v: n(v, 1), "at least 1"),
        ("train.min_epochs", train.min_epochs, lambda v: n(v, 0), "0 or more"),
        ("train.min_delta", train.min_delta, lambda v: n(v, 0), "a finite number, 0 or more"),
        ("train.seed", train.seed, lambda v: n(v, 0, SEED_MAX), f"from 0 to {SEED_MAX}"),
        ("train.num_workers", train.num_workers, lambda v: v == "auto" or n(v, 0, MAX_WORKERS),
         f"from 0 to {MAX_WORKERS} (or 'auto')"),
    ]


def _in_range(value: Any, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> bool:
    """A finite number from `low` to `high` (an open end excluded); NaN and infinities never are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)


def _numbers(values: Any, count: int, low: float, high: float, low_open: bool = False) -> bool:
    return (isinstance(values, list) and len(values) == count
            and all(_in_range(v, low, high, low_open=low_open) for v in values))


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any], where: str) -> Config:
    return build(Config, data, where=where)


def _set_path(raw: dict, key: str, value: Any, item: str) -> None:
    parts = key.split(".")
    target_cls: Any = Config
    node = raw
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(target_cls)
        if part not in hints:
            prefix = ".".join(parts[:depth])
            valid = ", ".join(f"{prefix}.{k}" if prefix else k for k in hints)
            raise KitError(f"unknown config key {key!r} in --set {item!r};{_did_you_mean(key)} "
                           f"valid keys here: {valid}")
        if depth == len(parts) - 1:
            # Checked here so that a bad value is blamed on the override, not on config.yaml.
            _coerce(value, hints[part], key, f"--set {item!r}")
            node[part] = value
            return
        target_cls = hints[part]
        if not dataclasses.is_dataclass(target_cls):
            raise KitError(f"config key {'.'.join(parts[: depth + 1])!r} is a value, not a section, in --set {item!r}")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KitError(f"config section {part!r} must be a mapping")


def _did_you_mean(key: str) -> str:
    """' did you mean train.epochs?' for the closest known key to `key` (a typo), or ''."""
    match = difflib.get_close_matches(key, _all_keys(Config), n=1, cutoff=0.6)
    return f" did you mean {match[0]}?" if match else ""


def _all_keys(cls: Any, prefix: str = "") -> list[str]:
    """Every dotted key of dataclass `cls`, sections and their keys alike."""
    keys = []
    for name, tp in typing.get_type_hints(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, f"{prefix}{name}.")
    return keys


def build(cls: Any, data: Any, where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from plain data, rejecting unknown keys and ill-typed values."""
    if not isinstance(data, dict):
        raise KitError(f"{where}: {prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        if name in MOVED:
            raise KitError(f"{where}: config key {name!r} is now {MOVED[name]}")
        raise KitError(f"{where}: unknown config key {name!r};{_did_you_mean(name)} valid keys: {', '.join(hints)}")
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], name, where)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        raise KitError(f"{where}: {prefix or 'config'}: {exc}") from None


def _coerce(value: Any, tp: Any, name: str, where: str) -> Any:
    def fail(expected: str) -> KitError:
        return KitError(f"{where}: config key {name!r} has value {value!r}; expected {expected}")

    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, where, name)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name, where)
            except KitError:
                continue
        raise fail(" or ".join(_describe(a) for a in args))
    if origin is Literal:
        if value not in args:
            raise fail("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise fail(_describe(tp))
        return [_coerce(v, args[0], f"{name}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail(_describe(tp))
        return {_coerce(k, args[0], name, where): _coerce(v, args[1], f"{name}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise fail("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise fail("a string")
        return str(value)
    raise fail(_describe(tp))  # pragma: no cover - a type the config does not use


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))
