"""Write files so that a crash never leaves a half-written one: temp file in the same folder, then rename.

Permissions: every file kit writes (run files, the decode cache, submissions, exports) gets what any ordinary new
file gets, 0666 less the user's umask (0644 under the usual 022). They are results meant to be read by others: a
submission uploaded from a shared machine, exports served by the app under another account, runs compared by a
team. Nothing kit writes is a secret. `tempfile.mkstemp` would make them 0600; a user who wants private files sets
a stricter umask, and kit follows it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _create_temp(path: Path) -> Path:
    """A new empty file `.<name>.<random>.tmp` beside `path`, mode 0666 less the umask (see the module docstring)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # another writer's name: draw again
            continue


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_torch(obj: object, path: str | os.PathLike) -> None:
    """torch.save(obj) to `path` atomically; a full disk raises its OSError (torch's zip writer would report
    "unexpected pos" instead of the write that failed)."""
    import torch  # here, not at the top: kit.runtime uses this module without torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        out = _WriteErrors(f)
        try:
            torch.save(obj, out)
        except RuntimeError:
            if out.error:
                raise out.error from None
            raise


class _WriteErrors:
    """A binary file that remembers the first OSError of its writes."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.file.flush()
