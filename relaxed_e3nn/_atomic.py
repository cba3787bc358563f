"""Atomic file writes: a file is either absent, the old version, or complete — never half-written."""
import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: Union[str, os.PathLike], mode: str = "wb") -> Iterator:
    """Open a temporary file next to ``path``; on success fsync it and rename it over ``path``.

    If the body raises (or the process dies), ``path`` is untouched and the temporary file
    is removed (or left as an ignorable ``.tmp`` sibling after a hard kill). An ``OSError``
    without a file name (a full disk on ``write``, ``flush`` or ``fsync``) is raised again as
    the same kind of ``OSError`` naming ``path``, so that the message says which file failed.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Its directory is created if needed.
    mode : {"wb", "w"}
        Binary or text mode.

    Raises
    ------
    OSError
        ``path`` is a directory or lies under a file, its directory cannot be created or
        written, or the disk is full (``errno.ENOSPC``); ``filename`` names ``path`` or the
        file in its way.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    _check_destination(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _sync_directory(path.parent)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename in (None, tmp) and err.errno is not None:
            # OSError(errno, ...) returns the matching subclass (PermissionError, ...)
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def _check_destination(path: Path) -> None:
    """Create ``path``'s directory; refuse a ``path`` that is a directory or lies under a file."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
            break
    path.parent.mkdir(parents=True, exist_ok=True)


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every file system allows it)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
