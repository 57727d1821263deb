"""Rebuild data/ (the shipped sample) from the full food101-10 set: python make_sample.py SRC.

Takes the first 40 train and 10 valid images of each class and the first 50 test images (by name),
downscaled to a longest side of 144 px, so a fresh clone can train an image model in minutes.
"""

import sys
from pathlib import Path

from PIL import Image

PER_CLASS = {"train": 40, "valid": 10}
TEST_IMAGES = 50
LONGEST_SIDE = 144


def shrink(src: Path, dst: Path) -> None:
    image = Image.open(src).convert("RGB")
    image.thumbnail((LONGEST_SIDE, LONGEST_SIDE), Image.Resampling.LANCZOS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    image.save(dst, quality=85, optimize=True)


def main(src: Path, dst: Path) -> None:
    for split, count in PER_CLASS.items():
        files = sorted((src / split).glob("*.jpg"), key=lambda p: tuple(map(int, p.stem.split("_"))))
        taken: dict[str, int] = {}
        for path in files:
            label = path.stem.split("_")[0]
            if taken.get(label, 0) < count:
                taken[label] = taken.get(label, 0) + 1
                shrink(path, dst / split / path.name)
    for path in sorted((src / "test").glob("*.jpg"))[:TEST_IMAGES]:
        shrink(path, dst / "test" / path.name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).parent / "data")
