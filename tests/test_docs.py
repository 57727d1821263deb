"""The documentation cannot drift from the code: the configuration reference lists exactly kit/config.py's keys,
every config key in an example exists, and Getting started's commands run with the console lines it quotes."""

import dataclasses
import importlib.util
import re
import subprocess
import sys
import typing
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import CPU_ENV, ROOT

from kit.config import Config, build, check_ranges

PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def load_generator():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "docs" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_keys(cls: type = Config, prefix: str = "") -> tuple[set[str], set[str]]:
    """(value keys, section keys) of a config dataclass, dotted."""
    values, sections = set(), set()
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            sections.add(prefix + name)
            more_values, more_sections = config_keys(tp, f"{prefix}{name}.")
            values |= more_values
            sections |= more_sections
        else:
            values.add(prefix + name)
    return values, sections


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


# (a) The reference lists every key of kit/config.py, and only those; a key without a meaning stops the build.

def test_reference_lists_exactly_the_config_keys():
    page = load_generator().kit_reference()
    rows = re.findall(r"^\| `([^`]+)` \| (.+) \|$", page, flags=re.M)
    values, sections = config_keys()
    assert {key for key, _ in rows} == values
    assert len(rows) == len(values)
    assert set(re.findall(r"^## `([^`]+)`$", page, flags=re.M)) == sections
    cells = {key: rest.split(" | ") for key, rest in rows}
    assert cells["tta.blend"][:3] == ["float", "`0.0`", "from 0 to 1"]
    assert cells["cv.repeats"][:3] == ["int", "`1`", "from 1 to 100"]
    assert cells["augment.backend"][0] == "one of: auto, tensor, albumentations"
    assert all(cell[-1].strip() for cell in cells.values())


UNDOCUMENTED = '''
from dataclasses import dataclass, field


@dataclass
class Inner:
    """A section."""

    a: int = 1  # trailing,
    # continued
    b: float = 0.5  # b's own

    # above c
    c: str = "x"  # and trailing

    # above d
    d: list[int] = field(default_factory=list)  # d's own
    # above f, which has no comment of its own
    f: int = 0


@dataclass
class Root:
    """Top."""

    inner: Inner = field(default_factory=Inner)
    e: bool = False
'''


def test_meanings_come_from_the_comments_and_an_undocumented_key_stops_the_build(tmp_path, monkeypatch):
    generator = load_generator()
    assert generator.field_comments(UNDOCUMENTED) == {
        ("Inner", "a"): "trailing, continued", ("Inner", "b"): "b's own", ("Inner", "c"): "above c and trailing",
        ("Inner", "d"): "above d d's own", ("Inner", "f"): "above f, which has no comment of its own",
        ("Root", "inner"): "", ("Root", "e"): ""}
    (tmp_path / "undocumented_config.py").write_text(UNDOCUMENTED)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__("undocumented_config")
    with pytest.raises(generator.UndocumentedError, match=r"config key 'e' \(Root.e\) has no comment"):
        generator.markdown(module.Root, {})
    (tmp_path / "no_docstring_config.py").write_text(
        UNDOCUMENTED.replace('"""A section."""', "").replace("e: bool = False", "e: bool = False  # e"))
    with pytest.raises(generator.UndocumentedError, match=r"section 'inner' \(Inner\) has no docstring"):
        generator.markdown(__import__("no_docstring_config").Root, {})


# (b) Every config key in an example on the pages exists (and a whole config in an example loads).

def unknown_keys(data: dict, cls: type = Config, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    unknown = []
    for key, value in data.items():
        if key not in hints:
            unknown.append(prefix + key)
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            unknown += unknown_keys(value, hints[key], f"{prefix}{key}.")
    return unknown


def test_every_config_key_in_an_example_exists():
    values, sections = config_keys()
    checked = 0
    for page in PAGES:
        text = page.read_text()
        for block in fenced(text, "yaml"):
            data = yaml.safe_load(block)
            assert unknown_keys(data) == [], f"{page.name}: unknown config keys in\n{block}"
            if "task" in data:  # a whole competition config: it must load and pass the range checks
                check_ranges(build(Config, {"competition": "example", **data}, where=page.name))
            checked += 1
        for overrides in re.findall(r'SET="([^"]+)"', text) + re.findall(r"--set (\S+=\S+)", text):
            for item in overrides.split():
                key = item.partition("=")[0]
                assert "=" not in item or key in values | sections, f"{page.name}: unknown key {key!r} in {item!r}"
    assert checked >= 3


# (c) Getting started's commands run on the shipped data, and the console lines quoted there and in the README
# have the shape of the real output (numbers, times and paths may differ; the words may not).

NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]\d+)?"
TOKEN = re.compile(rf"\S*/\S*|{NUMBER}")


def shape(line: str) -> str:
    """A regex for `line` with its numbers and paths left open."""
    parts, end = [], 0
    for m in TOKEN.finditer(line):
        parts += [re.escape(line[end:m.start()]), r"\S*/\S*" if "/" in m.group() else NUMBER]
        end = m.end()
    return "".join(parts) + re.escape(line[end:])


def quoted_console_lines() -> list[str]:
    pages = [ROOT / "docs" / "getting-started.md", ROOT / "README.md"]
    lines = [line for page in pages for block in fenced(page.read_text(), "console") for line in block.splitlines()]
    return [line for line in lines if line.strip() and not line.startswith("$ ") and line != "..."]


def test_shape_keeps_words_and_frees_numbers_and_paths():
    line = "03:38:06 CV accuracy 0.8473 ± 0.0158 over 5 folds; OOF accuracy 0.8474  (runs/titanic/20261202-033548)"
    real = "10:01:02 CV accuracy 0.8100 ± 0.0200 over 2 folds; OOF accuracy 0.8111  (/tmp/x/r)"
    assert re.fullmatch(shape(line), real)
    assert not re.fullmatch(shape(line), real.replace("OOF accuracy", "OOF score"))


def test_getting_started_commands_run_and_print_the_quoted_lines(tmp_path):
    command = "make train predict export COMP=titanic"
    assert any(command in block for block in fenced((ROOT / "docs" / "getting-started.md").read_text(), "bash"))
    venv = ROOT / ".venv"
    result = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), f"VENV={venv}",
                             "-o", f"{venv}/.installed", *command.split()[1:], "SET=cv.folds=2"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600, env=CPU_ENV)
    assert result.returncode == 0, result.stderr
    output = (result.stdout + result.stderr).replace("\r", "\n").splitlines()
    quoted = quoted_console_lines()
    assert len(quoted) >= 10
    missing = [line for line in quoted if not any(re.fullmatch(shape(line), real) for real in output)]
    assert missing == [], "quoted lines no run printed:\n" + "\n".join(missing)
    submission = pd.read_csv(next((tmp_path / "runs" / "titanic").glob("*/submission.csv")))
    assert list(submission.columns) == ["PassengerId", "Survived"] and len(submission) == 418
    assert {p.name for p in (tmp_path / "exports" / "titanic").iterdir()} >= {"model.onnx", "model.ts", "meta.json"}


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    # Not --quiet: it hides the warnings that --strict would count, and the build then passes.
    result = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**CPU_ENV, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert "<code>train.num_workers</code>" in page and "generated: config reference" not in page


def test_readme_links_reach_existing_pages_and_headings():
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", (ROOT / "README.md").read_text())
    assert len(links) >= 15
    for path, anchor in links:
        target = ROOT / path
        assert target.is_file(), path
        headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M) if target.suffix == ".md" else []
        slugs = {re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", h.strip().lower())) for h in headings}
        assert not anchor or anchor in slugs, f"README links to {path}#{anchor}; headings there: {sorted(slugs)}"
