"""The one exception type a user sees: a readable message that names the problem and the fix."""

import errno


class KitError(Exception):
    """Bad input or a missing artifact; the CLI prints the message without a traceback."""


def describe_os_error(exc: OSError) -> str:
    """A failed read or write (full disk, read-only folder, missing path) as one line with the fix."""
    where = f" {exc.filename}" if exc.filename else ""
    fix = {
        errno.ENOSPC: "free some disk space or write elsewhere (--runs, --exports, OUT=...)",
        errno.EFBIG: "the file size limit was reached; free space or raise the limit (ulimit -f)",
        errno.EACCES: "that folder is not writable for you; choose another (--runs, --exports, OUT=...)",
        errno.EPERM: "that folder is not writable for you; choose another (--runs, --exports, OUT=...)",
        errno.EROFS: "that file system is read-only; write elsewhere (--runs, --exports, OUT=...)",
        errno.ENOENT: "check the path",
    }.get(exc.errno, "check the path, its permissions and the free disk space")
    return f"cannot access{where}: {exc.strerror or exc}; {fix}"
