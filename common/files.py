"""Atomic writes: a file or folder appears complete under its name, or not at all.

Everything is first written under a temporary name beside its destination (same folder, so
same file system) and then renamed into place, which POSIX makes atomic: a crash, a kill or a
full disk never leaves half a file where a reader would take it for a whole one.

Temporary files get the mode ``open()`` would give (0666 minus the umask), not the 0600 of
:func:`tempfile.mkstemp`, which the rename would keep: written outputs are meant to be shared
like any other file the user writes.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from types import TracebackType
from typing import Optional, Union

PathLike = Union[str, os.PathLike]


def new_temporary_file(folder: PathLike, prefix: str, suffix: str = "") -> Path:
    """Create an empty, uniquely named file ``<folder>/<prefix><random><suffix>`` with mode 0666 & ~umask.

    Raises:
        FileExistsError: no free name after 100 tries.
    """
    for _ in range(100):
        path = Path(folder) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary file name in {folder}")


class AtomicFile:
    """A temporary file beside ``path`` that takes its place on :meth:`commit`.

    As a context manager it gives the temporary path, commits on a normal exit and removes the
    temporary file on an exception (``path`` is then left as it was)::

        with AtomicFile("out/tokenizer.json") as tmp:
            tokenizer.save(str(tmp))

    Args:
        path: the destination; its folder must exist.
        suffix: of the temporary name (default: ``path``'s own, so tools that infer the format
            from the extension, such as an mp4 muxer, still can).
    """

    def __init__(self, path: PathLike, suffix: Optional[str] = None) -> None:
        self.path = Path(path)
        self.tmp = new_temporary_file(self.path.parent, f".{self.path.name}.", self.path.suffix if suffix is None else suffix)

    def commit(self) -> Path:
        """Rename the temporary file onto ``path``; returns ``path``."""
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Remove the temporary file; ``path`` is left untouched."""
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind: Optional[type[BaseException]], value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        if kind is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns ``path``."""
    with AtomicFile(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return Path(path)


def replace_folder(new: PathLike, final: PathLike, aside: Optional[PathLike] = None) -> None:
    """Rename the finished folder ``new`` to ``final``; an existing ``final`` is removed after.

    The old ``final`` is first renamed to ``aside`` (default ``.<final name>.old-<pid>`` beside
    it), so at every moment ``final`` is either the old complete folder or the new one. A crash
    in between leaves ``aside`` behind; name it so that the caller's clean-up finds it.
    """
    new, final = Path(new), Path(final)
    if not final.exists():
        os.replace(new, final)
        return
    aside = Path(aside) if aside is not None else final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    os.replace(new, final)
    shutil.rmtree(aside, ignore_errors=True)
