"""Writing an output file the way its user expects.

- A regular file (or a new one) is replaced atomically: a temporary file in the same folder, then a
  rename. After a failed write the old file is byte-for-byte unchanged and no partial file is left. An
  existing file keeps its permission bits; a new one gets the usual ones (0666 less the umask).
- A symbolic link is followed: the file it points to is written, and the link stays a link.
- Anything else that exists (a device such as /dev/null or /dev/stdout, a FIFO) cannot be replaced by a
  rename, and should not be: it is opened and written in place.

Errors name the path the caller gave, never a temporary file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path`: atomically for a regular file, in place for a device or FIFO."""
    target = Path(os.path.realpath(path))  # through any symlinks, to the file that is really written
    try:
        try:
            existing = os.stat(target)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            _write_in_place(target, data)
        else:
            mode = stat.S_IMODE(existing.st_mode) if existing is not None else 0o666 & ~_umask()
            _replace(target, data, mode)
    except OSError as error:
        if error.filename is None:  # e.g. a full disk: the message is about the data, not a name
            raise
        raise OSError(error.errno, error.strerror, os.fspath(path)) from None


def _replace(target: Path, data: bytes, mode: int) -> None:
    """A temporary file beside `target`, written, synced and given `mode`, then renamed over it."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def _write_in_place(target: Path, data: bytes) -> None:
    """Open for writing and write: what `>` in a shell does to a device or a FIFO."""
    with open(target, "wb") as stream:
        stream.write(data)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
