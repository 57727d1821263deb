"""Several processes under torchrun: which rank this is, its device, and the few collectives training needs.

`torchrun --nproc_per_node=N -m kit train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; a plain `python -m kit` run
is a world of one, where every method below is a no-op.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as td

from kit.errors import KitError

log = logging.getLogger(__name__)
T = TypeVar("T")
TIMEOUT_VARIABLE = "KIT_COLLECTIVE_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 360


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """This process's GPU (setup() made LOCAL_RANK's the current one), or the CPU."""
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    def barrier(self) -> None:
        if self.world > 1:
            td.barrier()

    def from_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and hand its (picklable) result to every rank."""
        if self.world == 1:
            return fn()
        box = [fn() if self.main else None]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's BatchNorm statistics (each rank updated its own on its shard)."""
        if self.world > 1:
            for buffer in model.buffers():
                td.broadcast(buffer, src=0)

    def all_concat(self, array: np.ndarray) -> np.ndarray:
        """Every rank's rows of `array`, rank after rank (validation outputs for the metric)."""
        if self.world == 1:
            return array
        parts: list = [None] * self.world
        td.all_gather_object(parts, array)
        return np.concatenate(parts)

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so every rank gets bit-identical totals)."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device if td.get_backend() == "nccl" else "cpu")
        td.all_reduce(tensor)
        return tensor.cpu().tolist()


SINGLE = Dist()


def setup() -> Dist:
    """Join the torchrun process group when there is one (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return SINGLE
    dist = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not td.is_initialized():
        if torch.cuda.is_available():
            check_nproc(int(os.environ.get("LOCAL_WORLD_SIZE", world)), visible_gpus())
            torch.cuda.set_device(dist.local_rank)
        minutes = collective_timeout()
        td.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=timedelta(minutes=minutes))
        if dist.main:
            log.info("torchrun: %d processes; a rank waits at most %d min for the others (%s)", world, minutes,
                     TIMEOUT_VARIABLE)
    return dist


def collective_timeout() -> int:
    """Minutes a rank may wait at a collective: long, since rank 0 decodes the image cache alone and, with
    PARALLEL=folds, a rank waits for the slowest fold (NCCL's own default, 10 min, would abort such runs)."""
    text = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT_MINUTES))
    if not text.isdigit() or int(text) < 1:
        raise KitError(f"{TIMEOUT_VARIABLE}={text!r}: give a whole number of minutes of at least 1, "
                       f"e.g. {DEFAULT_TIMEOUT_MINUTES}")
    return int(text)


def teardown() -> None:
    if td.is_initialized():
        td.destroy_process_group()


def visible_gpus() -> int:
    """How many GPUs this process may use. KIT_GPU_COUNT stands in for the count where tests need a GPU machine's
    answer on one without GPUs."""
    return int(os.environ["KIT_GPU_COUNT"]) if "KIT_GPU_COUNT" in os.environ else torch.cuda.device_count()


def check_nproc(nproc: int, gpus: int) -> None:
    """Refuse more processes per machine than visible GPUs (each process takes the GPU of its LOCAL_RANK; torch
    would stop with 'invalid device ordinal' after startup). No GPUs: CPU processes, any number."""
    if gpus and nproc > gpus:
        raise KitError(f"NPROC={nproc} processes per machine, but only {gpus} GPU(s) are visible and each process "
                       f"needs its own GPU; use NPROC={gpus} or fewer, or hide the GPUs "
                       f'(CUDA_VISIBLE_DEVICES="") to train in {nproc} CPU processes')


def launch(nproc: int, argv: list[str]) -> int:
    """`python -m kit <argv>` in `nproc` processes under torchrun on this machine, after checking that they fit the
    visible GPUs; torchrun's exit code."""
    if nproc < 1 or "LOCAL_RANK" in os.environ:
        raise KitError(f"NPROC={nproc}: give a number of processes of at least 1, outside torchrun")
    check_nproc(nproc, visible_gpus())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "kit", *argv]
    return subprocess.run(command, check=False).returncode
