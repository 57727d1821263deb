"""`make bench`: the kit's cached image pipeline vs a naive per-epoch PIL-decode loader, same model, same run."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from kit.config import Config
from kit.errors import KitError
from kit.images import cached_decode, list_labelled, split_folders
from kit.tasks.image import CachedImages, augmentation

log = logging.getLogger(__name__)


class NaiveImages(Dataset):
    """What a first HW3 notebook does: open, decode at full size and resize every image, every epoch."""

    def __init__(self, paths: list[Path], labels: list[int], size: int, transform):
        self.paths, self.labels, self.size, self.transform = paths, labels, size, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = Image.open(self.paths[i]).convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        image = self.transform(image=np.asarray(image))["image"]
        return torch.from_numpy(np.ascontiguousarray(image)), self.labels[i]


def train_images_per_second(model: torch.nn.Module, data: Dataset, batch_size: int, workers: int) -> float:
    """Images/s of training steps (forward, backward, AdamW) over one pass of `data`, first batch excluded."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, None
    for x, y in loader:
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if start is None:  # warm-up batch: allocator, thread pools, first-touch of the cache
            start = time.perf_counter()
            continue
        seen += len(y)
    return seen / (time.perf_counter() - start)


def image_pipeline(config: Config, data: Path | None, limit: int) -> list[tuple[str, str]]:
    """Rows of (measure, value) comparing the kit's loader with the naive one on the same model."""
    from kit.tasks import get_task

    if config.task != "image":
        raise KitError(f"make bench measures image pipelines; {config.competition} is a {config.task} task")
    root = Path(data) if data else config.path(config.data.train)
    paths, labels, _ = list_labelled(split_folders(root)["train"], config.classes)
    paths, labels = paths[:limit], labels[:limit]
    size, batch, workers = config.image.size, config.train.batch_size, config.train.num_workers
    if len(paths) < 3 * batch:
        raise KitError(f"bench needs at least {3 * batch} training images in {root}; found {len(paths)}")
    task = get_task(config)
    transform = augmentation(config.augment, size)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        images, _ = cached_decode(paths, size, Path(cache), config.image.decode_workers)
        build = time.perf_counter() - start
        start = time.perf_counter()
        cached_decode(paths, size, Path(cache), config.image.decode_workers)
        reuse = time.perf_counter() - start
        y = np.asarray(labels)
        results = {}
        for name, dataset in (("naive", NaiveImages(paths, labels, size, transform)),
                              ("kit", CachedImages(images, y, transform))):
            torch.manual_seed(0)
            model = task.build_model(task.fit(None), pretrained=False)
            log.info("measuring %s pipeline on %d images", name, len(paths))
            results[name] = train_images_per_second(model, dataset, batch, workers)
            # The same without the model: how fast each loader alone can feed images.
            loader = DataLoader(dataset, batch_size=batch, num_workers=workers)
            start = time.perf_counter()
            count = sum(len(b[1]) for b in loader)
            results[f"{name}-loader"] = count / (time.perf_counter() - start)
    rows += [
        ("images", f"{len(paths)} from {root} at {size}px, model {config.model.name}, batch {batch}"),
        ("decode cache build",
         f"{build:.1f} s ({len(paths) / build:.0f} images/s, {config.image.decode_workers} workers)"),
        ("decode cache reuse", f"{reuse * 1000:.0f} ms"),
        ("loader alone: naive PIL decode", f"{results['naive-loader']:.0f} images/s"),
        ("loader alone: kit cache", f"{results['kit-loader']:.0f} images/s "
                                    f"({results['kit-loader'] / results['naive-loader']:.1f}x)"),
        ("training: naive PIL decode", f"{results['naive']:.1f} images/s"),
        ("training: kit cache", f"{results['kit']:.1f} images/s ({results['kit'] / results['naive']:.2f}x)"),
    ]
    return rows


def inference(export_dir: Path, threads: int, repeats: int = 30) -> list[tuple[str, str]]:
    """Latency at batch 1 (p50/p95) and throughput at batch 32: eager (the run the export came from),
    TorchScript and ONNX Runtime, same thread count, warm-up excluded."""
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
                "torchscript": runtime.load(export_dir, "torchscript", threads=threads).run,
                "onnxruntime": runtime.load(export_dir, "onnx", threads=threads).run}
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
    import socket
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    from ui.app import build

    app = build(export_root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"

    def client_loop(_: int) -> tuple[list[float], int]:
        client = Client(url, verbose=False)
        times, errors = [], 0
        for _ in range(requests):
            start = time.perf_counter()
            try:
                _, label, status = client.predict([handle_file(str(image))], None, competition, "ONNX Runtime",
                                                  "cpu", 3, api_name="/classify")
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
