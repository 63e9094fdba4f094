"""``data.path`` as one or several places: files, folders and globs, comma-separated or a sequence.

Every loader that reads a folder expands ``data.path`` here, so a user can point a run (or
``research.score``) at new files beside the old ones without copying or symlinking them.
"""

from __future__ import annotations

import glob
import pathlib
from typing import Iterable, Sequence

from research.errors import InputError


def split_paths(value) -> list[str]:
    """The entries of ``data.path``: a comma-separated string or a sequence of strings."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def _matches(name: str, suffixes: Sequence[str] | None) -> bool:
    return suffixes is None or name.lower().endswith(tuple(s.lower() for s in suffixes))


def expand(value, suffixes: Sequence[str] | None = None, key: str = "data.path") -> list[pathlib.Path]:
    """Sorted, de-duplicated files of every entry: a file as given, a folder's files ending in one of
    ``suffixes`` (not recursive), a glob's matches (recursive with ``**``). An entry that names nothing,
    or yields no file of the wanted kind, is a one-line error naming it."""
    entries = split_paths(value)
    if not entries:
        raise InputError(f"config key {key}: no path given")
    files: dict[pathlib.Path, None] = {}
    for entry in entries:
        path = pathlib.Path(entry).expanduser()
        if any(c in entry for c in "*?["):
            found = [pathlib.Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
            found = [p for p in found if p.is_file() and _matches(p.name, suffixes)]
            if not found:
                raise InputError(f"{entry}: the pattern matches no file" + _kinds(suffixes))
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _matches(p.name, suffixes))
            if not found:
                raise InputError(f"{path}: no files in the folder" + _kinds(suffixes))
        elif path.is_file():
            found = [path]
        else:
            raise InputError(f"{path}: no such file or folder")
        files.update(dict.fromkeys(found))
    return list(files)


def _kinds(suffixes: Iterable[str] | None) -> str:
    return "" if suffixes is None else f" ({', '.join('*' + s for s in suffixes)})"


def describe(value) -> str:
    """The entries as one string for messages and ``run.json``."""
    return ",".join(split_paths(value))
