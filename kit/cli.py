"""Command line: `python -m kit train|predict|export|data|bench --comp NAME [--set key=value ...]`, and
`python -m kit doctor`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

from kit.errors import KitError, describe_os_error


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _train_and_predict(sub, common: argparse.ArgumentParser, device: argparse.ArgumentParser) -> None:
    """The `train` and `predict` commands."""
    train = sub.add_parser("train", parents=[common], help="k-fold cross-validated training")
    train.add_argument("--data", type=Path, help="training data (file or folder) instead of the config's")
    train.add_argument("--resume", nargs="?", const="latest", metavar="RUN",
                       help="continue an interrupted run (default: the latest) from its last epoch checkpoint")
    train.add_argument("--time", help="the time for training and the prediction after it, e.g. 10m, 1h (TIME=: "
                       "kit/budget.py; default: the recipe as configured)")
    train.add_argument("--parallel", choices=["data", "folds"], default="data",
                       help="under torchrun: all ranks train each fold (data) or ranks train different folds")
    train.add_argument("--nproc_per_node", type=int, metavar="N",
                       help="train in N processes under torchrun on this machine (at most one per visible GPU)")
    predict = sub.add_parser("predict", parents=[common, device],
                             help="fold ensemble on the test set -> submission.csv")
    predict.add_argument("--run", help="run id or folder (default: the latest finished run)")
    predict.add_argument("--test", type=Path, help="test data (file or folder) instead of the config's")
    predict.add_argument("--out", type=Path,
                         help="where submission.csv goes (default: the run's folder; --from export: the exported run)")
    predict.add_argument("--from", dest="source", choices=["run", "export"], default="run",
                         help="the eager fold ensemble of a run (default) or the exported model")
    predict.add_argument("--backend", choices=["onnx", "torchscript"], default="onnx", help="with --from export")
    predict.add_argument("--exports", type=Path, default=Path("exports"), help="folder holding exports")
    predict.add_argument("--trust-code", action="store_true",
                         help="with --from export: let the export run its feature code (needed only when it differs "
                              "from this competition's own features.py)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kit", description="Kaggle-style competition toolkit.")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--comp", required=True, help="competition name (a folder in competitions/)")
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set cv.folds=10 (repeatable)")
    common.add_argument("--runs", type=Path, default=Path("runs"), help="folder holding training runs")
    common.add_argument("--recipe", help="a recipe file beside the config, laid over it (e.g. gpu: gpu.yaml)")
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the model runs: auto (the GPU when there is one), cpu or cuda")
    _train_and_predict(sub, common, device)
    export = sub.add_parser("export", parents=[common, device],
                            help="TorchScript + ONNX of the fold ensemble, parity-checked")
    export.add_argument("--run", help="run id or folder (default: the latest finished run)")
    export.add_argument("--data", type=Path, help="training data for the parity samples (default: the run's)")
    export.add_argument("--exports", type=Path, default=Path("exports"), help="folder to write <comp>/ into")
    data = sub.add_parser("data", parents=[common], help="download the competition data (Kaggle API)")
    data.add_argument("--data", type=Path, help="where to put it (default: the config's training folder)")
    compare = sub.add_parser("compare", parents=[common],
                             help="B's CV gain over A on the same folds, against the noise of the difference")
    compare.add_argument("a", help="run id or folder (the baseline)")
    compare.add_argument("b", help="run id or folder (the candidate)")
    tune = sub.add_parser("tune", parents=[common], help="search each learner's settings with Optuna by CV; write "
                                                         "tuned.yaml beside the config (RECIPE=tuned)")
    tune.add_argument("--trials", type=int, help="trials per learner (default: 20, or as many as --time allows)")
    tune.add_argument("--time", help="time for the whole search, e.g. 90s, 10m, 2h (split over the learners)")
    tune.add_argument("--storage", help="Optuna storage URL shared by workers (default: SQLite in runs/<comp>/tune/)")
    bench = sub.add_parser("bench", parents=[common, device],
                           help="training and prediction images/s against the model-only ceiling")
    bench.add_argument("--data", type=Path, help="image data folder (default: the config's)")
    bench.add_argument("--limit", type=int, help="training images to use (default: 320, or 3 batches if more)")
    bench.add_argument("--rounds", type=int, default=2, help="interleaved measuring rounds; the best counts")
    bench.add_argument("--threads", type=int, help="threads for the export section (default: the CPUs available)")
    bench.add_argument("--exports", type=Path, default=Path("exports"), help="folder holding exports")
    new = sub.add_parser("new", help="write competitions/NAME/config.yaml from a folder with train.csv and test.csv")
    new.add_argument("--comp", required=True, help="name of the competition folder to create")
    new.add_argument("--data", required=True, help="folder holding train.csv, test.csv (and a sample submission)")
    new.add_argument("--metric", help="the competition's metric (default: the usual one for the target type)")
    new.add_argument("--target", help="the target column (default: inferred)")
    new.add_argument("--id", dest="id_column", help="the id column (default: inferred)")
    new.add_argument("--force", action="store_true", help="rewrite an existing config.yaml")
    new.add_argument("--images", help="image competitions: the folder of DATA holding the training images "
                                      "(default: found by looking)")
    new.add_argument("--test", help="image competitions: the folder of DATA holding the test images (default: "
                                    "where the sample submission's or test.csv's ids are, else the test* folder)")
    new.add_argument("--competitions", type=Path, help="folder holding the competitions (default: competitions/)")
    sub.add_parser("doctor", help="this machine's torch, CUDA and ONNX Runtime, then kit's paths end to end on the "
                                  "shipped sample in a temporary folder (under 5 minutes)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a torchrun launch hands its processes
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    try:
        return run(args)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or missing folder
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # training raises it again with the command that continues the run
        print(f"interrupted; {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    from kit.config import load_config

    if args.command == "new":  # before load_config: the competition does not exist yet
        from kit.config import COMPETITIONS_DIR
        from kit.scaffold import new_competition

        print(new_competition(args.comp, args.data, args.competitions or COMPETITIONS_DIR, args.metric, args.target,
                              args.id_column, args.force, images=args.images, test=args.test).summary())
        return 0
    if args.command == "doctor":
        from kit.doctor import main as doctor

        return doctor()
    # Overrides may arrive as one space-separated string from `make ... SET="a=1 b=2"`.
    overrides = [item for arg in args.overrides for item in arg.split()]
    if args.command == "train" and args.time:
        overrides.append(f"budget='{args.time}'")  # quoted: TIME=600 is a duration text like 10m
    config = load_config(args.comp, overrides, args.recipe)
    if getattr(args, "device", None):
        from kit.device import resolve

        resolve(args.device)  # a device that is not there is refused before anything is read or logged
    if args.command == "train" and args.nproc_per_node is not None:
        from kit.distributed import launch

        return launch(args.nproc_per_node, without_option(args.argv, "--nproc_per_node"))
    COMMANDS[args.command](config, args)
    return 0


def _train(config, args: argparse.Namespace) -> None:
    from kit.cv import cross_validate

    cross_validate(config, args.data, args.runs, args.resume, args.parallel)


def _predict(config, args: argparse.Namespace) -> None:
    if args.source == "export":
        from kit.predict import predict_export

        print(predict_export(args.exports / config.competition, config, args.backend, args.test, args.out,
                             args.device, args.trust_code))
        return
    from kit import runs
    from kit.predict import predict_run

    run_dir = runs.find_run(config.competition, args.run, args.runs, finished=True, comp=runs.comp_arg(config))
    print(predict_run(run_dir, args.test, args.out, args.device, config.predict))


def _export(config, args: argparse.Namespace) -> None:
    from kit import runs
    from kit.export import export_run

    run_dir = runs.find_run(config.competition, args.run, args.runs, finished=True, comp=runs.comp_arg(config))
    print(export_run(run_dir, args.exports, args.data, args.device))


def _compare(config, args: argparse.Namespace) -> None:
    from kit import runs
    from kit.compare import report

    print(report(*(runs.find_run(config.competition, r, args.runs, comp=runs.comp_arg(config))
                   for r in (args.a, args.b))))


def _bench(config, args: argparse.Namespace) -> None:
    from kit.bench import report

    print(report(config, args.data, args.limit, args.device, args.rounds, args.exports, args.threads))


def _tune(config, args: argparse.Namespace) -> None:
    from kit.config import parse_duration
    from kit.tune import tune

    if args.trials is not None and args.trials < 1:
        raise KitError(f"TRIALS={args.trials}: give at least 1 trial per learner")
    seconds = parse_duration(args.time) if args.time else None
    print(f"wrote {tune(config, args.trials, seconds, args.storage, args.runs)}")


def _data(config, args: argparse.Namespace) -> None:
    from kit.download import fetch

    print(fetch(config, args.data))


COMMANDS = {"train": _train, "predict": _predict, "export": _export, "compare": _compare, "bench": _bench,
            "data": _data, "tune": _tune}


def without_option(argv: list[str], name: str) -> list[str]:
    """`argv` less option `name` and its value (`name V`, `name=V`, or an abbreviation argparse accepted)."""
    out, value_next = [], False
    for item in argv:
        key = item.split("=", 1)[0]
        if value_next:
            value_next = False
        elif len(key) > 2 and key.startswith("--") and name.startswith(key):
            value_next = "=" not in item
        else:
            out.append(item)
    return out
