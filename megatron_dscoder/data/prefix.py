"""Output prefixes (``PREFIX.bin`` + ``PREFIX.idx``): checked before any work, replaced under a
lock.

Two concerns of a *pair* of files that must always be read together:

- :func:`check_output_prefix` refuses a prefix that cannot name files (ends in ``/``, names a
  directory, sits under a regular file) before a long run starts, not after it.
- :func:`prefix_lock` serialises everyone who replaces or reads a pair. A writer holds it
  exclusively while it removes the old ``.idx`` and renames its ``.bin`` then its ``.idx`` into
  place, so two writers finalising the same prefix at once leave one writer's complete pair,
  never one run's ``.bin`` beside the other's ``.idx``. :func:`~.indexed.check_prefix` holds it
  shared while it checks a pair, so it never sees a half-replaced one.

The lock is ``flock`` on ``PREFIX.lock``, created by a writer and removed by the writer when it
releases it (whoever opened the removed file re-opens the new one: the inode is compared after
locking), so no lock file stays behind. A reader never creates it (dataset directories may be
read-only): with no lock file no writer is in its critical section, and ``check_prefix`` also
compares the pair's inodes before and after its check. ``flock`` holds between processes of one
machine and on shared file systems that support it (NFSv4, Lustre with ``-o flock``); a killed
holder releases it at once. What the lock cannot cover: a training job maps the files by name after
the check, so replacing a dataset under a running job is not supported (its open maps keep the old
files).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from megatron_dscoder.paths import OutputPathError, check_output_path


def check_output_prefix(prefix: str, flag: str = "--output-prefix") -> None:
    """Refuse a prefix ending in a separator, naming a directory, or under a regular file
    (:class:`~megatron_dscoder.paths.OutputPathError`, the message says why)."""
    if not prefix or prefix.endswith((os.sep, "/")) or os.path.basename(prefix) in (".", ".."):
        raise OutputPathError(
            f"{flag} {prefix!r} must end in a file name prefix (PREFIX writes PREFIX.bin and "
            "PREFIX.idx), not a directory"
        )
    if os.path.isdir(prefix):
        raise OutputPathError(
            f"{flag} {prefix!r} is a directory; give a file name prefix inside it, e.g. "
            f"{os.path.join(prefix, 'data')}"
        )
    for suffix in (".bin", ".idx"):
        check_output_path(prefix + suffix, flag, directory=False)


@contextlib.contextmanager
def prefix_lock(prefix: str, *, shared: bool = False) -> Iterator[None]:
    """Hold ``flock`` on ``PREFIX.lock`` (exclusive for writers, ``shared`` for readers)."""
    path = f"{prefix}.lock"
    while True:
        try:
            flags = os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT
            fd = os.open(path, flags | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            if not shared:
                raise
            yield  # no writer holds it now; check_prefix also sees any replacement
            return
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (
            opened.st_ino,
            opened.st_dev,
        ):
            break
        os.close(fd)  # the holder removed it after we opened it: take the new one
    try:
        yield
    finally:
        if not shared:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)
