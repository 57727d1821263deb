"""Command line: `python -m kit train|predict --comp NAME [--set key=value ...]`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

from kit.errors import KitError


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kit", description="Kaggle-style competition toolkit.")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--comp", required=True, help="competition name (a folder in competitions/)")
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set cv.folds=10 (repeatable)")
    common.add_argument("--runs", type=Path, default=Path("runs"), help="folder holding training runs")
    train = sub.add_parser("train", parents=[common], help="k-fold cross-validated training")
    train.add_argument("--data", type=Path, help="training data (file or folder) instead of the config's")
    predict = sub.add_parser("predict", parents=[common], help="fold ensemble on the test set -> submission.csv")
    predict.add_argument("--run", help="run id or folder (default: runs/<comp>/latest)")
    predict.add_argument("--test", type=Path, help="test data (file or folder) instead of the config's")
    predict.add_argument("--out", type=Path, help="where submission.csv goes (default: the run folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    try:
        return run(args)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    from kit.config import load_config

    # Overrides may arrive as one space-separated string from `make ... SET="a=1 b=2"`.
    overrides = [item for arg in args.overrides for item in arg.split()]
    config = load_config(args.comp, overrides)
    if args.command == "train":
        from kit.cv import cross_validate

        cross_validate(config, args.data, args.runs)
    elif args.command == "predict":
        from kit import runs
        from kit.predict import predict_run

        run_dir = runs.find_run(config.competition, args.run, args.runs)
        path = predict_run(run_dir, args.test, args.out)
        print(path)
    return 0
