"""`make bench`: kit's image training and prediction against the model alone on the same device (the ceiling),
and a naive per-epoch PIL-decode loader, all measured in the same run; then export and app throughput. For a
tabular competition: each learner's fit inside kit against its bare estimator, and the MLP against the model alone."""

from __future__ import annotations

import dataclasses
import logging
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from kit import augment, runs
from kit.batches import DatasetBatches
from kit.config import Config, TrainConfig
from kit.device import available_cpus, describe, resolve
from kit.errors import KitError
from kit.images import cached_decode
from kit.learners.net import objective
from kit.tasks import Samples
from kit.tasks.image import augment_backend, augmentation, decode_workers, loader_workers
from kit.trainer import TrainState, train_epoch

log = logging.getLogger(__name__)


class NaiveImages(Dataset):
    """What a first HW3 notebook does: open, decode at full size and resize every image, every epoch, then the
    same albumentations pipeline as kit's CPU path (fetched by (key, index) like kit's datasets)."""

    keyed = True

    def __init__(self, paths: list[Path], labels: list[int], size: int, transform):
        self.paths, self.labels, self.size, self.transform = paths, labels, size, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]):
        _, i = item
        image = Image.open(self.paths[i]).convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        image = self.transform(image=np.asarray(image))["image"]
        return torch.from_numpy(np.ascontiguousarray(image)), self.labels[i]


class SyntheticBatches:
    """The model-only ceiling's input: one batch already on the device, served `steps` times per epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, steps: int):
        self.x, self.y, self.steps = x, y, steps

    def set_epoch(self, seed: int, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter([(self.x, self.y)] * self.steps)


def training_rate(state: TrainState, batches, cfg: TrainConfig, epochs: list[int], min_seconds: float,
                  criterion: torch.nn.Module | None = None) -> float:
    """Samples/s of whole training epochs through the real loop (trainer.train_epoch), until `min_seconds` pass."""
    criterion = criterion or torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    seen, start = 0, time.perf_counter()
    while True:
        epochs[0] += 1
        batches.set_epoch(cfg.seed, epochs[0])
        loss, count = train_epoch(state, batches, criterion, cfg, cfg.seed, epochs[0])
        loss.item()  # waits for the device: the epoch is done
        seen += count
        if time.perf_counter() - start >= min_seconds:
            return seen / (time.perf_counter() - start)


def training(config: Config, task, samples: Samples, paths: list[Path], device: torch.device,
             rounds: int) -> tuple[list[tuple[str, str]], float]:
    """Model-only ceiling vs kit's loader vs the naive loader, interleaved round by round, best round each."""
    state_pre = task.fit(samples)
    cfg, crop = config.train, state_pre["crop"]
    model = task.build_model(state_pre, pretrained=False).to(device)
    kit = task.loader(samples, state_pre, train=True, device=device)
    state = TrainState(model, cfg, len(kit))
    transform = augmentation(config.augment, crop)
    naive = DatasetBatches(NaiveImages(paths, list(samples.y), state_pre["size"], transform), cfg.batch_for(),
                           device, shuffle=True, workers=loader_workers(cfg.num_workers, device))
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(cfg.batch_for(), crop, crop, 3, generator=g) * 255).to(device)
    y = torch.as_tensor(samples.y[np.arange(cfg.batch_for()) % len(samples)]).to(device)  # the target's own labels
    criterion = objective(config, samples, state_pre).criterion(device)  # the target's own loss
    pipelines = {"ceiling": SyntheticBatches(x, y, len(kit)), "kit": kit, "naive": naive}
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    epochs, min_seconds = [0], 2.0 if device.type == "cuda" else 0.0
    training_rate(state, SyntheticBatches(x, y, 3), cfg, epochs, 0.0, criterion)  # warm-up: allocator, kernels
    for r in range(rounds):
        for name, batches in pipelines.items():
            log.info("bench round %d/%d: training through the %s pipeline", r + 1, rounds, name)
            rates[name].append(training_rate(state, batches, cfg, epochs, min_seconds, criterion))
    best = {name: max(values) for name, values in rates.items()}
    backend = augment_backend(config.augment.backend, device)
    alone = augmentation_rates(config, samples, crop, device)
    rows = [
        ("training", f"{config.model.name} {crop}px batch {cfg.batch_for()}, freeze {config.model.freeze or 'none'}, "
                     f"amp {state.amp_dtype or 'fp32'}, best of {rounds} interleaved rounds"),
        ("  model-only ceiling", f"{best['ceiling']:.1f} images/s (synthetic batch already on the device)"),
        ("  kit pipeline", f"{best['kit']:.1f} images/s ({best['kit'] / best['ceiling']:.2f}x ceiling; "
                           f"augment.backend {backend}, rounds {' '.join(f'{v:.1f}' for v in rates['kit'])})"),
        ("  naive PIL loader", f"{best['naive']:.1f} images/s ({best['naive'] / best['ceiling']:.2f}x ceiling)"),
        ("  augmentation alone", f"albumentations {alone['albumentations']:.0f} images/s (one CPU process), tensor "
                                 f"{alone['tensor']:.0f} images/s (batches of {cfg.batch_for()}, {device.type})"),
    ]
    return rows, best["kit"] / best["ceiling"]


def augmentation_rates(config: Config, samples: Samples, crop: int, device: torch.device) -> dict[str, float]:
    """Images/s of the augmentation alone, each backend twice in alternation, best kept: albumentations one sample
    at a time in this process, the tensor code a training batch at a time on `device`."""
    transform, batch = augmentation(config.augment, crop), config.train.batch_for()
    images = torch.from_numpy(samples.data).to(device)
    index = torch.arange(len(images), device=device)

    def albumentations() -> None:
        for i, image in enumerate(samples.data):
            rng = np.random.default_rng([1, i])
            transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))
            transform(image=image)

    def tensor() -> None:
        for start in range(0, len(images), batch):
            out = augment.augment(images[start : start + batch], index[start : start + batch], config.augment, 1, crop)
        out.sum().item()  # wait for the device

    rates: dict[str, float] = {}
    for _ in range(2):
        for name, run in (("albumentations", albumentations), ("tensor", tensor)):
            start = time.perf_counter()
            run()
            rates[name] = max(rates.get(name, 0.0), len(images) / (time.perf_counter() - start))
    return rates


def prediction(config: Config, task, samples: Samples, device: torch.device,
               rounds: int) -> tuple[list[tuple[str, str]], float]:
    """`make predict`'s path (fresh fold models, TTA, fold averaging) in images x views x folds per second,
    against one bare model's forward passes of the same size on synthetic input."""
    from kit.predict import AMP_DTYPES, batch_size, ensemble_probs

    state = task.fit(samples)
    folds = 1 if config.cv.folds == "given" else config.cv.folds
    models = [task.build_model(state).to(device) for _ in range(folds)]
    ensemble = task.ensemble([{config.learners[0]: m} for m in models], [state] * folds, [1.0]).to(device).eval()
    batch = batch_size(config, device)
    predictor = type(task)(dataclasses.replace(config, image=dataclasses.replace(config.image, batch_size=batch)))
    # TTA views, plus the plain view when a blend needs it
    passes = len(next(iter(ensemble.members[0].learners.values())).passes)
    amp = config.predict.amp
    kit_rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        ensemble_probs(ensemble, predictor.batches(samples, [state] * folds), len(samples), device, amp, "bench")
        kit_rates.append(len(samples) * passes * folds / (time.perf_counter() - start))
    x = (torch.rand(batch * passes, state["size"], state["size"], 3) * 255).to(device)
    dtype = AMP_DTYPES[amp]

    def forward() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            models[0](x).float().sum().item()  # .item(): wait for the device

    forward()
    start, steps = time.perf_counter(), 0
    while steps < 3 or time.perf_counter() - start < 1.0:
        forward()
        steps += 1
    ceiling = steps * len(x) / (time.perf_counter() - start)
    kit = max(kit_rates)
    rows = [("prediction", f"{len(samples)} images x {passes} TTA pass(es) x {folds} folds at {state['size']}px, "
                           f"batch {batch}, amp {amp}, fresh weights, best of {rounds}"),
            ("  model-only ceiling", f"{ceiling:.1f} images/s (one model, {len(x)} images per forward pass)"),
            ("  kit predict", f"{kit:.1f} images/s ({kit / ceiling:.2f}x ceiling)")]
    return rows, kit / ceiling


def report(config: Config, data: Path | None, limit: int | None, device_name: str, rounds: int,
           exports: Path, threads: int | None) -> str:
    """`make bench`: the competition's pipeline against its ceiling, its export when there is one, and one
    efficiency line."""
    from kit.tasks import task_class

    pipeline = {"images": image_pipeline, "rows": table_pipeline}[task_class(config.task).unit]
    rows, ratios = pipeline(config, data, limit, device_name, rounds)
    export_dir = exports / config.competition
    if (export_dir / "meta.json").is_file():
        rows += inference(export_dir, threads or available_cpus())
        if pipeline is image_pipeline:
            rows += ui_load(exports, config.competition, task_class(config.task)(config).test_files()[1][0])
    else:
        rows.append(("inference", f"skipped: no export in {export_dir} (make export COMP={runs.comp_arg(config)})"))
    width = max(len(k) for k, _ in rows)
    line = "efficiency " + " ".join(f"{k} {v:.2f}" for k, v in ratios.items()) + f" (device {dict(rows)['device']})"
    return "\n".join([*(f"{k:<{width}}  {v}" for k, v in rows), line])


def image_pipeline(config: Config, data: Path | None, limit: int | None, device_name: str = "auto",
                   rounds: int = 2) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """Training and prediction throughput of kit's image pipeline against the model alone on the same device;
    the rows, and the efficiency ratios (kit / ceiling) for train and infer."""
    from kit.tasks import get_task

    device = resolve(device_name)
    torch.backends.cudnn.benchmark = not config.train.deterministic  # as kit.cv trains
    config = get_task(config).resolve(data)  # a labels CSV settles the target kind and classes
    task = get_task(config)
    paths, labels, _, _ = task.labelled(data)  # folders, or a labels CSV
    root = paths[0].parent if paths else data
    batch = config.train.batch_for()
    limit = limit or max(320, 3 * batch)  # at least three training steps
    paths, labels = paths[:limit], labels[:limit]
    if len(paths) < 3 * batch:
        raise KitError(f"bench needs at least {3 * batch} training images in {root}; found {len(paths)}")
    size = config.image.test_size or config.image.size
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        images, _ = cached_decode(paths, size, Path(cache), decode_workers(config.image.decode_workers))
        build = time.perf_counter() - start
    samples = Samples([str(p) for p in paths], labels, np.array(images))
    rows = [("device", describe(device)),
            ("images", f"{len(paths)} from {root}, cached at {size}px"),
            ("decode cache build", f"{build:.1f} s ({len(paths) / build:.0f} images/s, "
                                   f"{decode_workers(config.image.decode_workers)} workers)")]
    train_rows, train_eff = training(config, task, samples, paths, device, rounds)
    infer_rows, infer_eff = prediction(config, task, samples, device, rounds)
    return [*rows, *train_rows, *infer_rows], {"train": train_eff, "infer": infer_eff}


def table_pipeline(config: Config, data: Path | None, limit: int | None, device_name: str = "auto",
                   rounds: int = 2) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """A tabular competition's fits inside kit against the same work done directly, on one training split of up
    to `limit` rows (default 50,000): each scikit-learn learner's fit through kit (column choice, fit, compile)
    against the same estimator fitted directly on the same encoded arrays, and the MLP's training rows/s through
    kit's batches against the model alone on a batch already on the device. Best of `rounds` each."""
    from kit.learners import get_learner
    from kit.tasks import get_task

    device = resolve(device_name)
    config = get_task(config).resolve(data)
    task = get_task(config)
    samples = task.load("train", data)
    samples = samples.subset(np.arange(min(len(samples), limit or 50_000)))
    start = time.perf_counter()
    state = task.fit(samples)
    x = task.features(samples, state, train=True)
    encode = time.perf_counter() - start
    rows = [("device", describe(device)), ("rows", f"{len(samples)} x {x.shape[1]} encoded features"),
            ("encoding (fit + encode)", f"{encode:.2f} s ({len(samples) / encode:,.0f} rows/s)")]
    ratios, compiled = {}, [get_learner(n) for n in config.learners if get_learner(n).compiled]
    for learner in compiled:
        kit_rate, direct_rate = learner_rates(task, learner, samples, state, x, rounds)
        ratios[learner.name] = kit_rate / direct_rate
        rows.append((f"learner {learner.name}", f"kit {kit_rate:,.0f} rows/s, the estimator alone "
                                                f"{direct_rate:,.0f} rows/s ({ratios[learner.name]:.2f}x)"))
    for name in (n for n in config.learners if not get_learner(n).compiled):
        kit_rate, ceiling = mlp_rates(task, config, samples, state, device, rounds)
        ratios[name] = kit_rate / ceiling
        rows.append((f"learner {name} (MLP)", f"kit {kit_rate:,.0f} rows/s, model-only ceiling {ceiling:,.0f} rows/s "
                                              f"({ratios[name]:.2f}x; batch {config.train.batch_for(len(samples))})"))
    return rows, ratios


def learner_rates(task, learner, samples: Samples, state: dict, x: np.ndarray, rounds: int) -> tuple[float, float]:
    """Fit rows/s of a compiled learner through kit (column choice, fit, compile) and of its bare estimator on the
    same arrays, interleaved."""
    from kit.encoding import learner_columns
    from kit.target import get_target

    target = get_target(task.config)
    y = target.forward(samples.y)
    columns = learner_columns(state, learner.reads)
    direct_x = x if columns is None else x[:, columns]
    kit_times, direct_times = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        learner.fit_arrays(task.config, target, x if columns is None else x[:, columns], y, 0)
        kit_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        learner.fit_estimator(task.config, target, direct_x, y, 0)
        direct_times.append(time.perf_counter() - start)
    return len(x) / min(kit_times), len(x) / min(direct_times)


def mlp_rates(task, config: Config, samples: Samples, state: dict, device: torch.device,
              rounds: int) -> tuple[float, float]:
    """Training rows/s of the MLP through kit's batches and on one synthetic batch already on the device."""
    from kit.learners.net import prepare_fit

    cfg = dataclasses.replace(config.train, batch_size=config.train.batch_for(len(samples)))
    parts = prepare_fit(task, config, samples, None, state, device=device)
    kit = parts.train
    train_state = TrainState(parts.model, cfg, len(kit))
    x0, y0 = next(iter(kit))
    synthetic = SyntheticBatches(torch.randn_like(x0), y0.clone(), len(kit))
    rates: dict[str, list[float]] = {"kit": [], "ceiling": []}
    epochs = [0]
    criterion = parts.objective.criterion(device)
    training_rate(train_state, kit, cfg, epochs, 0.0, criterion)  # warm-up: allocator, autograd, optimizer state
    for _ in range(rounds):
        for name, batches in (("ceiling", synthetic), ("kit", kit)):  # at least a second each: small tables too
            rates[name].append(training_rate(train_state, batches, cfg, epochs, 1.0, criterion))
    return max(rates["kit"]), max(rates["ceiling"])


def inference(export_dir: Path, threads: int, repeats: int = 30) -> list[tuple[str, str]]:
    """On the CPU, at the same thread count: latency at batch 1 (p50/p95) and throughput at batch 32 of eager (the run
    the export came from), TorchScript and ONNX Runtime, warm-up excluded."""
    from kit import runs, runtime
    from kit.tasks import get_task

    run_dir = Path(runtime.read_meta(export_dir)["run"])
    config = runs.run_config(run_dir)
    torch.set_num_threads(threads)
    task = get_task(config)
    eager, states = runs.load_ensemble(run_dir, task)
    samples = task.load("train")
    x32 = next(task.batches(samples.subset(np.arange(min(32, len(samples)))), states))
    x32 = x32.repeat((32 + len(x32) - 1) // len(x32), *([1] * (x32.dim() - 1)))[:32]

    def eager_run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return eager(torch.from_numpy(x)).numpy()

    backends = {"eager": eager_run,
                "torchscript": runtime.load(export_dir, "torchscript", device="cpu", threads=threads).run,
                "onnxruntime": runtime.load(export_dir, "onnx", device="cpu", threads=threads).run}
    results = {}
    for name, run in backends.items():
        one, batch = x32[:1].numpy(), x32.numpy()
        for _ in range(3):  # warm-up, not timed
            run(one)
            run(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(one)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(max(3, repeats // 5)):
            run(batch)
        per_batch = (time.perf_counter() - start) / max(3, repeats // 5)
        results[name] = (np.percentile(times, 50) * 1000, np.percentile(times, 95) * 1000, 32 / per_batch)
    base = results["eager"]
    rows = [("inference", f"{config.competition}, {threads} thread(s), {repeats} timed runs after 3 warm-up")]
    for name, (p50, p95, rate) in results.items():
        rows.append((f"  {name}", f"batch 1 p50 {p50:.1f} ms ({p50 / base[0]:.2f}x eager), p95 {p95:.1f} ms; "
                                  f"batch 32 {rate:.0f} items/s ({rate / base[2]:.2f}x eager)"))
    return rows


def ui_load(export_root: Path, competition: str, image: Path, clients: int = 4,
            requests: int = 8) -> list[tuple[str, str]]:
    """`clients` threads, each sending `requests` classify calls to the app on 127.0.0.1: rate, latency, errors."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    from ui.app import build, serve

    app = build(export_root)
    url = serve(app)  # Gradio picks the port its server really starts on

    def client_loop(_: int) -> tuple[list[float], int]:
        client = Client(url, verbose=False)
        times, errors = [], 0
        for _ in range(requests):
            start = time.perf_counter()
            try:
                _, label, status = client.predict(files=[handle_file(str(image))], competition=competition,
                                                  device="cpu", top_k=3, api_name="/classify")
                if not label:
                    raise RuntimeError(status)
            except Exception as exc:  # noqa: BLE001 - any failed request counts as an error, and is logged
                log.warning("ui request failed: %s", exc)
                errors += 1
            times.append(time.perf_counter() - start)
        return times, errors

    try:
        client_loop(0)  # warm-up: model load and first request
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(client_loop, range(clients)))
        wall = time.perf_counter() - start
    finally:
        app.close()
    times = [t for ts, _ in results for t in ts]
    errors = sum(e for _, e in results)
    return [("ui", f"{clients} concurrent clients x {requests} requests on 127.0.0.1, one image each"),
            ("  throughput", f"{len(times) / wall:.1f} requests/s"),
            ("  latency", f"p50 {np.percentile(times, 50) * 1000:.0f} ms, "
                          f"p95 {np.percentile(times, 95) * 1000:.0f} ms"),
            ("  errors", str(errors))]
