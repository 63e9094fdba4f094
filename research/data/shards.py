"""Spectra in fixed-size ArrayRecord shards on one common grid, indexed by a Parquet catalogue.

A shard folder holds, per ingestion task ``t`` of ``T``:

* ``task-TTTTT-of-NNNNN-shard-SSSSS.array_record``: up to ``shard_size`` records; a record is one
  spectrum on the grid in the folder's ``layout`` (:data:`LAYOUTS`): ``spectrum`` (SDSS) is float32
  flux, float32 ivar and uint8 mask (1 = good pixel) back to back, ``x`` (RF frames, audio spectra)
  float32 values only;
* ``task-TTTTT-of-NNNNN.parquet``: its catalogue rows (one row group per shard) with ``shard``
  (file name) and ``row`` (record number in it);
* ``task-TTTTT-of-NNNNN.json``: its grid, options and skipped files.

:func:`merge` joins the tasks into ``catalogue.parquet`` and ``manifest.json``; :class:`Shards`
reads a merged folder. Memory while writing is one shard's catalogue rows, never the spectra.
ArrayRecord gives random access to any record (what a shuffled grain loader needs) and every
process opens only the files it reads. :func:`ingest_files` is the task loop of the RF and audio
ingestion (:mod:`research.data.rf_shards`, :mod:`research.data.audio_shards`): a block of files read
by worker processes, one or many records per file, written in file order.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from array_record.python import array_record_module

from research.errors import InputError

WRITER_OPTIONS = "group_size:1"  # one record per chunk: random access reads one record
MANIFEST = "manifest.json"
CATALOGUE = "catalogue.parquet"
FLOAT_COLUMNS = ("z", "ra", "dec", "norm", "good_fraction")
INT_COLUMNS = ("plate", "mjd", "fiberid", "zwarning", "row", "file_index")


def task_name(task: int, num_tasks: int) -> str:
    return f"task-{task:05d}-of-{num_tasks:05d}"


# record layouts: the arrays of one record, in order, each n_pixels of its dtype
LAYOUTS = {"spectrum": (("flux", np.float32), ("ivar", np.float32), ("mask", np.uint8)),
           "x": (("x", np.float32),)}


def _layout(layout: str):
    if layout not in LAYOUTS:
        raise InputError(f"record layout {layout!r}: unknown; one of {sorted(LAYOUTS)}")
    return LAYOUTS[layout]


def describe_layout(layout: str) -> str:
    return ", ".join(f"{np.dtype(t).name} {k}" for k, t in _layout(layout))


def encode(*arrays: np.ndarray, layout: str = "spectrum") -> bytes:
    """One record: the layout's arrays (``spectrum``: float32 flux, float32 ivar, uint8 mask) back to back."""
    fields = _layout(layout)
    if len(arrays) != len(fields):
        raise ValueError(f"layout {layout!r} holds {len(fields)} arrays, got {len(arrays)}")
    return b"".join(np.ascontiguousarray(a, t).tobytes() for a, (_, t) in zip(arrays, fields))


def decode(record: bytes, n_pixels: int, layout: str = "spectrum") -> dict[str, np.ndarray]:
    fields = _layout(layout)
    size = n_pixels * sum(np.dtype(t).itemsize for _, t in fields)
    if len(record) != size:
        raise InputError(f"record of {len(record)} bytes does not hold {n_pixels} pixels (expected {size})")
    buf, out, start = np.frombuffer(record, np.uint8), {}, 0
    for name, kind in fields:
        end = start + n_pixels * np.dtype(kind).itemsize
        out[name] = buf[start:end].astype(bool) if name == "mask" else buf[start:end].view(kind)
        start = end
    return out


def _column_type(name: str) -> pa.DataType:
    if name in FLOAT_COLUMNS:
        return pa.float64()
    if name in INT_COLUMNS:
        return pa.int64()
    return pa.string()


def _cell(value, kind: pa.DataType):
    if value is None:
        return None
    if kind == pa.float64():
        return float(value)
    if kind == pa.int64():
        return int(value)
    return str(value)


class ShardWriter:
    """Writes one task's records into shards of ``shard_size`` and its catalogue, one shard at a time."""

    def __init__(self, folder, task: int, num_tasks: int, shard_size: int, n_pixels: int,
                 columns: Sequence[str], layout: str = "spectrum", column_types: dict | None = None):
        """``column_types`` (name -> ``float``/``int``/``str``) types columns beyond the SDSS ones (others: string)."""
        _layout(layout)
        if shard_size < 1:
            raise InputError(f"--shard-size: must be >= 1, got {shard_size}")
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = task_name(task, num_tasks)
        self.shard_size, self.n_pixels, self.layout = shard_size, n_pixels, layout
        self.columns = tuple(columns) + ("shard", "row")
        kinds = {float: pa.float64(), int: pa.int64(), str: pa.string()}
        types = {c: kinds[t] for c, t in (column_types or {}).items()}
        self.schema = pa.schema([(c, types.get(c) or _column_type(c)) for c in self.columns])
        self.shards: list[str] = []
        self.n_records = 0
        self._writer = None
        self._rows: list[dict] = []
        self._catalogue = pq.ParquetWriter(self.folder / f"{self.name}.parquet.partial", self.schema)

    def add(self, *arrays: np.ndarray, row: dict) -> None:
        """One record of the layout's arrays (``spectrum``: flux, ivar, mask) and its catalogue row."""
        if len(arrays[0]) != self.n_pixels:
            raise InputError(f"{row.get('file')}: {len(arrays[0])} px, the shards hold {self.n_pixels}")
        if self._writer is None:
            self.shards.append(f"{self.name}-shard-{len(self.shards):05d}.array_record")
            self._writer = array_record_module.ArrayRecordWriter(str(self.folder / self.shards[-1]), WRITER_OPTIONS)
        self._writer.write(encode(*arrays, layout=self.layout))
        self._rows.append({**row, "shard": self.shards[-1], "row": len(self._rows)})
        self.n_records += 1
        if len(self._rows) == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        table = {c: pa.array([_cell(r.get(c), t) for r in self._rows], t)
                 for c, t in zip(self.schema.names, self.schema.types)}
        self._catalogue.write_table(pa.table(table, schema=self.schema))
        self._rows = []

    def close(self) -> None:
        """Closes the last shard; the catalogue appears under its final name only now (atomic)."""
        self._flush()
        self._catalogue.close()
        (self.folder / f"{self.name}.parquet.partial").replace(self.folder / f"{self.name}.parquet")


def add_task_options(parser, shard_size: int, items: str = "spectra") -> None:
    """The options every shard ingestion command shares: workers, the task of a job array, the merge."""
    parser.add_argument("--workers", type=int, default=1, help="reading processes on this node")
    parser.add_argument("--shard", type=int, default=None, help="this task's number (SLURM_ARRAY_TASK_ID)")
    parser.add_argument("--num-shards", type=int, default=1, help="number of tasks in the array")
    parser.add_argument("--shard-size", type=int, default=shard_size, help=f"{items} per shard file")
    parser.add_argument("--merge", action="store_true", help="only join the finished tasks' catalogues")
    parser.add_argument("--quiet", action="store_true")


def run_task(args, ingest: Callable[[Callable | None], dict], summary: Callable[[dict], str]) -> int:
    """Runs a shard ingestion command (options of :func:`add_task_options`): ``--merge`` alone, or this
    task's ``ingest(log)`` with its one-line ``summary(report)``, merged at once when it is the only task;
    an :class:`InputError` is one line and exit status 2."""
    log = None if args.quiet else (lambda m: print(m, flush=True))
    try:
        if args.merge:
            merge(args.output, log=lambda m: print(m, flush=True))
            return 0
        if not args.input:
            raise InputError("--input: required unless --merge")
        report = ingest(log)
        print(f"task {report['task']}/{report['num_tasks']}: {summary(report)} into {len(report['shards'])} shards "
              f"({report['seconds']:.1f} s, {args.workers} workers)", flush=True)
        if args.shard is None:
            merge(args.output, log=lambda m: print(m, flush=True))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def read_or_skip(records: Callable, job) -> tuple[str, object]:
    """Worker of :func:`ingest_files`: ``records(path, **options)`` (a file's list of ``(arrays, row)``) as
    ``('ok', records)``, or ``('skip', reason)`` on an InputError. Bind ``records`` with functools.partial on a
    module-level function, so the worker pickles."""
    (_, path), options = job
    try:
        return "ok", records(path, **options)
    except InputError as exc:
        return "skip", str(exc)


def task_files(folder) -> list[pathlib.Path]:
    return sorted(pathlib.Path(folder).glob("task-*-of-*.json"))


def task_block(n: int, task: int, num_tasks: int) -> range:
    """The file positions of task ``task`` of ``num_tasks``: contiguous, sizes differing by at most one."""
    if not 0 <= task < num_tasks:
        raise InputError(f"--shard: {task} must be in 0..{num_tasks - 1} (--num-shards {num_tasks})")
    return range(task * n // num_tasks, (task + 1) * n // num_tasks)


class FileList(Sequence):
    """A task's input paths (``str``), held compactly: per folder, its file names sorted, fixed-width, as one byte
    array in memory, or, past :data:`LIST_IN_MEMORY` names, in an unnamed temporary file read one name at a time
    (a list of ``Path`` objects costs ~0.5 kB a file; a task lists all files of the array to find its block, so
    10^6 names in memory would be 25-45 MB of an ingestion task's ~100 MB).

    :meth:`find` lists a folder in two passes (count, then fill) so listing never holds the names twice; a large
    folder is sorted on disk (sorted runs of :data:`LIST_IN_MEMORY` names, then merged). The order is that of
    ``sorted(Path(folder).iterdir())``.
    """

    def __init__(self, runs: Sequence[tuple[str, np.ndarray]] = ()):
        """``runs``: ``(prefix, names)`` pairs; item ``i`` is a run's prefix (its folder and a slash) + name."""
        runs = [(prefix, names) for prefix, names in runs if len(names)]
        self._prefixes = [prefix for prefix, _ in runs]
        self._names = [names for _, names in runs]
        self._starts = np.cumsum([0] + [len(names) for names in self._names])

    @classmethod
    def find(cls, inputs, suffixes: Sequence[str]) -> "FileList":
        """A folder's files ending (case-insensitively) in ``suffixes``, sorted by name; a file alone; or a
        sequence of file paths as given (a :class:`FileList` as it is)."""
        if isinstance(inputs, FileList):
            return inputs
        if not isinstance(inputs, (str, pathlib.Path)):
            return cls.join([cls._one(p) for p in inputs])
        path = pathlib.Path(inputs)
        if path.is_dir():
            return cls([(_prefix(path), _listing(path, tuple(suffixes)))])
        if not path.exists():
            raise InputError(f"{inputs}: no such file or folder")
        return cls._one(path)

    @classmethod
    def _one(cls, path) -> "FileList":
        text = str(pathlib.Path(path))
        name = pathlib.PurePath(text).name
        return cls([(text[: len(text) - len(name)], np.array([os.fsencode(name)]))])

    @classmethod
    def join(cls, lists: Sequence["FileList"]) -> "FileList":
        """The lists one after another (consecutive runs of one folder merged)."""
        runs: list[tuple[str, list]] = []
        for fl in lists:
            for prefix, names in zip(fl._prefixes, fl._names):
                if runs and runs[-1][0] == prefix and all(isinstance(a, np.ndarray) for a in (runs[-1][1][-1], names)):
                    runs[-1][1].append(names)
                else:
                    runs.append((prefix, [names]))
        return cls([(prefix, np.concatenate(parts) if len(parts) > 1 else parts[0]) for prefix, parts in runs])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"file {i} of {len(self)}")
        i = int(i) % len(self)
        run = int(np.searchsorted(self._starts, i, "right")) - 1
        return self._prefixes[run] + os.fsdecode(self._names[run][i - self._starts[run]])


def _prefix(folder: pathlib.Path) -> str:
    text = str(folder)
    return text if text.endswith("/") else text + "/"


LIST_IN_MEMORY = 1 << 16  # names of a folder listing held in memory; a larger folder is sorted on disk


def input_files(value, suffixes: Sequence[str], key: str = "--input") -> "FileList":
    """What an ingestion task reads: folders (one, or several comma-separated or in a sequence) listed as a
    :class:`FileList`, whose memory does not grow with the folder; files and globs as
    :func:`research.data.sources.expand` gives them (a list of paths first: use folders at scale)."""
    from research.data import sources

    entries = [str(value)] if isinstance(value, pathlib.Path) else sources.split_paths(value)
    paths = [pathlib.Path(e).expanduser() for e in entries]
    if not entries or any(any(c in e for c in "*?[") or not p.is_dir() for e, p in zip(entries, paths)):
        return FileList.find(sources.expand(entries, suffixes, key=key), ())
    lists = []
    for folder in dict.fromkeys(paths):
        lists.append(FileList.find(folder, suffixes))
        if not len(lists[-1]):
            raise InputError(f"{folder}: no files in the folder" + sources._kinds(suffixes))
    return FileList.join(lists)


class DiskNames:
    """Sorted fixed-width names in an unnamed temporary file (deleted when closed), read one at a time with
    ``pread``: no page of it stays mapped, so a task's memory does not grow with the number of files."""

    def __init__(self, file, count: int, width: int):
        self.file, self.count, self.width = file, count, width

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> bytes:
        return os.pread(self.file.fileno(), self.width, int(i) * self.width).rstrip(b"\0")


def _records(file, start: int, count: int, width: int, block: int = 4096):
    """The ``count`` fixed-width names from record ``start`` of ``file``, read ``block`` at a time."""
    for first in range(start, start + count, block):
        n = min(block, start + count - first)
        yield from np.frombuffer(os.pread(file.fileno(), n * width, first * width), f"S{width}").tolist()


def _listing(folder: pathlib.Path, suffixes: tuple[str, ...], in_memory: int | None = None):
    """The names in ``folder`` ending in ``suffixes``, sorted: a byte array, or :class:`DiskNames` past
    ``in_memory`` (default :data:`LIST_IN_MEMORY`) names."""
    in_memory = LIST_IN_MEMORY if in_memory is None else in_memory

    def names():
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(suffixes) and entry.is_file():
                    yield os.fsencode(entry.name)

    def changed():
        return InputError(f"{folder}: files were added or removed while it was listed; run the task again")

    count = width = 0
    for name in names():
        count, width = count + 1, max(width, len(name))
    width = max(width, 1)
    chunk, filled, runs = np.empty(min(count, in_memory), f"S{width}"), 0, None
    for name in names():
        if filled == count or len(name) > width:
            raise changed()
        if count <= in_memory:
            chunk[filled] = name
        else:  # a sorted run of in_memory names to disk at a time
            runs = runs or tempfile.TemporaryFile()
            chunk[filled % in_memory] = name
            if (filled + 1) % in_memory == 0 or filled + 1 == count:
                part = chunk[:filled % in_memory + 1]
                part.sort()
                runs.write(part.tobytes())
        filled += 1
    if filled != count:
        raise changed()
    if runs is None:
        chunk.sort()  # in place; bytes order = str order of the names
        return chunk
    runs.flush()
    del chunk
    out = tempfile.TemporaryFile()
    merged = heapq.merge(*(_records(runs, s, min(in_memory, count - s), width) for s in range(0, count, in_memory)))
    while block := [name for _, name in zip(range(4096), merged)]:
        out.write(np.array(block, f"S{width}").tobytes())
    out.flush()
    runs.close()
    return DiskNames(out, count, width)


class IdIndex:
    """Record id -> index of the file that held it: a task's duplicate detection in 12 bytes a slot (a 64-bit
    BLAKE2b hash of the id and a uint32 file index, open addressing, at most 3/4 full), 16-32 bytes an id,
    instead of a dict of id and path strings (~170 bytes an id). Two different ids share a hash with probability
    about n^2 / 2^65 (3e-8 at n = 10^6 ids), and would be reported as duplicates."""

    LOAD = 0.75

    def __init__(self, capacity: int = 1024):
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"capacity: a power of two >= 2, got {capacity}")
        self._keys = np.zeros(capacity, np.uint64)  # 0 = empty slot
        self._values = np.zeros(capacity, np.uint32)
        self._n = 0

    @staticmethod
    def _hash(key) -> int:
        digest = hashlib.blake2b(str(key).encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "little") or 1

    def _slot(self, h: int) -> int:
        mask = len(self._keys) - 1
        i = h & mask
        while (k := int(self._keys[i])) and k != h:
            i = (i + 1) & mask
        return i

    def __len__(self) -> int:
        return self._n

    def get(self, key, default=None):
        i = self._slot(self._hash(key))
        return int(self._values[i]) if self._keys[i] else default

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key, value: int) -> None:
        h = self._hash(key)
        i = self._slot(h)
        if not self._keys[i]:
            if self._n + 1 > self.LOAD * len(self._keys):
                self._grow()
                i = self._slot(h)
            self._keys[i] = h
            self._n += 1
        self._values[i] = value

    def _grow(self) -> None:
        keys, values = self._keys, self._values
        self._keys, self._values = np.zeros(2 * len(keys), np.uint64), np.zeros(2 * len(keys), np.uint32)
        for start in range(0, len(keys), 4096):  # in blocks: no list of every key at once
            k, v = keys[start:start + 4096], values[start:start + 4096]
            for h, value in zip(k[k != 0].tolist(), v[k != 0].tolist()):
                i = self._slot(h)
                self._keys[i], self._values[i] = h, value


class SkipList:
    """The files a task skipped, spooled to ``<task>.skipped.partial`` (one JSON line each) as they come instead
    of held in memory (~0.5 kB a file as dicts); :func:`write_report` streams them into the task report."""

    def __init__(self, folder, name: str):
        self.path = pathlib.Path(folder) / f"{name}.skipped.partial"
        self._file = open(self.path, "w")
        self.n = 0

    def append(self, entry: dict) -> None:
        self._file.write(json.dumps(entry) + "\n")
        self.n += 1

    def __len__(self) -> int:
        return self.n

    def close(self) -> None:
        self._file.close()


def write_report(path, report: dict) -> dict:
    """Writes ``report`` as one line of JSON (what ``json.dumps(report)`` gives) to ``path``, atomically, with
    the entries of its :class:`SkipList` ``skipped`` streamed from its spool file; returns the report without
    ``skipped`` (the list is in the file: held in memory it would grow with the number of skipped files)."""
    path = pathlib.Path(path)
    skips = report["skipped"]
    skips.close()
    with open(path.with_suffix(".partial"), "w") as out:
        for n, (key, value) in enumerate(report.items()):
            out.write(("{" if n == 0 else ", ") + json.dumps(key) + ": ")
            if key != "skipped":
                out.write(json.dumps(value))
                continue
            out.write("[")
            with open(skips.path) as spool:
                for m, line in enumerate(spool):
                    out.write((", " if m else "") + line.rstrip("\n"))
            out.write("]")
        out.write("}\n")
    path.with_suffix(".partial").replace(path)
    skips.path.unlink()
    return {k: v for k, v in report.items() if k != "skipped"}


def ingest_files(files: Sequence, out_dir, read: Callable, work: dict, *, grid: dict, options: dict, dataset: str,
                 columns: Sequence[str], column_types: dict | None = None, layout: str = "x", task: int = 0,
                 num_tasks: int = 1, workers: int = 1, shard_size: int = 1024, log=None) -> dict:
    """Task ``task`` of ``num_tasks``: its block of ``files`` (:func:`task_block`) into shards; writes the task
    report and returns it without the list of skipped files (:func:`write_report`).

    ``read((index, path), work)`` (module level, so it pickles to the ``workers`` processes) returns
    ``("ok", [(arrays, row), ...])`` (one or many records of a file, each row with an ``id``) or
    ``("skip", reason)``. Records are written in file order, so the shards do not depend on ``workers``.
    A file with an id already written by this task is skipped whole (a duplicate); across tasks
    :func:`merge` drops them.
    """
    t0 = time.time()
    if workers < 1:
        raise InputError(f"--workers: must be >= 1, got {workers}")
    block = task_block(len(files), task, num_tasks)
    writer = ShardWriter(out_dir, task, num_tasks, shard_size, int(grid["n_pixels"]), columns, layout, column_types)
    skipped, seen = SkipList(out_dir, writer.name), IdIndex()  # id -> file index: memory flat in the files
    jobs = (((i, str(files[i])), work) for i in block)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(read, jobs) if pool else map(read, jobs)
        for done, (i, (status, out)) in enumerate(zip(block, results), 1):
            path = pathlib.Path(files[i])
            if status == "ok" and (dup := next((r["id"] for _, r in out if r["id"] in seen), None)) is not None:
                earlier = pathlib.Path(files[seen.get(dup)])
                status, out = "skip", f"{path}: duplicate of {earlier} (same id {dup})"
            if status == "ok":
                for arrays, row in out:
                    seen[row["id"]] = i
                    writer.add(*arrays, row=row)
            else:
                skipped.append({"file": path.name, "reason": out})
            if log and (status == "skip" or done % 1000 == 0 or len(out) >= 1000):  # skips, progress, big files
                log(f"[{done}/{len(block)}] " + (f"skipped: {out}" if status == "skip" else f"{path.name}: {len(out)}"))
    finally:
        if pool:
            pool.close()
            pool.join()
    writer.close()
    report = {"task": task, "num_tasks": num_tasks, "dataset": dataset, "layout": layout, "n_files": len(block),
              "n_ingested": writer.n_records, "n_skipped": len(skipped), "skipped": skipped, "shards": writer.shards,
              "grid": grid, "options": options, "workers": workers, "seconds": round(time.time() - t0, 2)}
    return write_report(pathlib.Path(out_dir) / f"{task_name(task, num_tasks)}.json", report)


def _kind(report: dict) -> tuple[str, str]:
    """Dataset and record layout of a task report or manifest (SDSS ones written before RF/audio name neither)."""
    return report.get("dataset", "sdss"), report.get("layout", "spectrum")


def merge(folder, log=None) -> dict:
    """Joins every task's catalogue into ``catalogue.parquet`` (task order) and writes ``manifest.json``; returns
    the manifest without its list of skipped files (that is in the file).

    All tasks must share the grid, layout and options, and every task of the array must be present.
    A file with an id seen in an earlier task is dropped from the catalogue whole and listed as skipped.
    One task's catalogue and skip list are in memory at a time; the ids seen are 64-bit hashes
    (:class:`IdIndex`) and the skipped files are spooled to disk, so merging 10^6 spectra does not hold them.
    """
    folder = pathlib.Path(folder)
    paths = task_files(folder)
    if not paths:
        raise InputError(f"{folder}: no task reports (task-*-of-*.json); run the ingestion tasks first")

    def header(path) -> dict:  # a task report without its skip list
        return {k: v for k, v in json.loads(path.read_text()).items() if k != "skipped"}

    reports = [header(p) for p in paths]
    num_tasks = reports[0]["num_tasks"]
    missing = sorted(set(range(num_tasks)) - {r["task"] for r in reports})
    if missing or any(r["num_tasks"] != num_tasks for r in reports):
        raise InputError(f"{folder}: tasks {missing} of {num_tasks} have not finished (or the folder mixes arrays)")
    first = reports[0]
    for r in reports[1:]:
        if r["grid"] != first["grid"] or r["options"] != first["options"] or _kind(r) != _kind(first):
            raise InputError(f"{folder}: {task_name(r['task'], num_tasks)} was ingested with another grid or "
                             "options than task 0; ingest all tasks with the same grid options")
    skipped, seen, n_rows, writer = SkipList(folder, "manifest"), IdIndex(), 0, None
    try:
        for path, r in zip(paths, reports):
            table = pq.read_table(folder / f"{task_name(r['task'], num_tasks)}.parquet")
            ids, files = table.column("id").to_pylist(), table.column("file").to_pylist()
            duplicates: dict[str, str] = {}  # file -> its first id seen in an earlier task: the file is dropped whole
            for sid, file in zip(ids, files):
                if file not in duplicates and sid in seen:
                    duplicates[file] = sid
            keep = [f not in duplicates for f in files]
            for sid, k in zip(ids, keep):
                if k:
                    seen[sid] = 0
            for file, sid in duplicates.items():
                skipped.append({"file": pathlib.Path(file).name,
                                "reason": f"{file}: duplicate of an earlier task's spectrum {sid}"})
            for entry in json.loads(path.read_text())["skipped"]:
                skipped.append(entry)
            table = table.filter(pa.array(keep, pa.bool_()))
            writer = writer or pq.ParquetWriter(folder / (CATALOGUE + ".partial"), table.schema)
            writer.write_table(table)
            n_rows += table.num_rows
            del table, ids, files
    except BaseException:
        skipped.close()
        skipped.path.unlink(missing_ok=True)
        raise
    finally:
        if writer:
            writer.close()
    (folder / (CATALOGUE + ".partial")).replace(folder / CATALOGUE)
    dataset, layout = _kind(first)
    manifest = {"n_spectra": n_rows, "n_files": sum(r["n_files"] for r in reports),
                "n_skipped": len(skipped), "skipped": skipped, "grid": first["grid"], "options": first["options"],
                "num_tasks": num_tasks, "shards": [s for r in reports for s in r["shards"]],
                "dataset": dataset, "layout": layout, "record": describe_layout(layout)}
    if layout == "spectrum":
        manifest["mask_meaning"] = "1 = good pixel (use)"
    manifest = write_report(folder / MANIFEST, manifest)
    if log:
        log(f"merged {num_tasks} task(s): {n_rows} spectra in {len(manifest['shards'])} shards, "
            f"{manifest['n_skipped']} skipped -> {folder / CATALOGUE}")
    return manifest


class Shards:
    """A merged shard folder: its grid (``axis``; SDSS also ``loglam``), catalogue, and random access to any
    spectrum."""

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise InputError(f"{path}: not a merged shard folder (run the merge step: --merge)")
        self.manifest = json.loads(path.read_text())
        grid = self.manifest["grid"]
        self.dataset, self.layout = _kind(self.manifest)
        self.n_pixels = int(grid["n_pixels"])
        self.loglam = np.asarray(grid["loglam"], np.float64) if "loglam" in grid else None
        self.axis = 10.0 ** self.loglam if self.loglam is not None else np.asarray(grid["axis"], np.float64)
        self.catalogue = pq.read_table(self.folder / CATALOGUE)
        offsets = np.cumsum([0] + [self._count(s) for s in self.manifest["shards"]])
        start = dict(zip(self.manifest["shards"], offsets[:-1]))
        shard = self.catalogue.column("shard").to_pylist()
        self.record_index = np.asarray([start[s] for s in shard], np.int64) + self.catalogue.column("row").to_numpy()

    def check_options(self, cfg, keys: Sequence[str]) -> None:
        """One-line error when config key ``data.<key>`` asks for other records than the folder was ingested
        with (numbers compare as floats, an empty value as None)."""
        def norm(v):
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else (v or None)

        options = self.manifest["options"]
        for key in keys:
            if norm(cfg[key]) != norm(options.get(key)):
                raise InputError(f"config key data.{key}: {cfg[key]!r}, but the shards in {self.folder} were "
                                 f"ingested with {options.get(key)!r}; set it to that or ingest again")

    def _count(self, shard: str) -> int:
        reader = array_record_module.ArrayRecordReader(str(self.folder / shard))
        try:
            return reader.num_records()
        finally:
            reader.close()

    def __len__(self) -> int:
        return self.catalogue.num_rows

    @property
    def paths(self) -> list[str]:
        return [str(self.folder / s) for s in self.manifest["shards"]]

    def column(self, name: str) -> np.ndarray:
        """A catalogue column; a missing integer (a file without ZWARNING, say) reads as -1, as in the npz
        catalogue of :mod:`research.data.sdss_fits`."""
        column = self.catalogue.column(name)
        if pa.types.is_integer(column.type):
            return column.fill_null(-1).to_numpy()
        return column.to_numpy() if pa.types.is_floating(column.type) else np.asarray(column.to_pylist())

    def source(self, rows: Iterable[int] | None = None) -> "SpectrumSource":
        """A grain random-access source over catalogue rows ``rows`` (default all), in that order."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, np.int64)
        return SpectrumSource(self.paths, self.record_index[rows], self.n_pixels, rows, self.layout)

    def read(self, rows: Iterable[int] | None = None) -> dict[str, np.ndarray]:
        """Stacked arrays of catalogue rows ``rows`` (for small sets; a loader streams large ones)."""
        src = self.source(rows)
        items = [src[i] for i in range(len(src))]
        return {k: np.stack([it[k] for it in items]) if items else np.zeros((0, self.n_pixels))
                for k in [name for name, _ in LAYOUTS[self.layout]] + ["index"]}


class SpectrumSource:
    """``grain`` RandomAccessDataSource: item ``i`` is catalogue row ``rows[i]``: its layout's arrays
    (flux/ivar/mask, or x) and index.

    Picklable (grain workers get a copy); each process opens the record files lazily on first read.
    """

    def __init__(self, paths: list[str], records: np.ndarray, n_pixels: int, rows: np.ndarray,
                 layout: str = "spectrum"):
        self.paths, self.records, self.n_pixels, self.rows, self.layout = paths, records, n_pixels, rows, layout
        self._source = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if self._source is None:
            import grain.python as grain

            self._source = grain.ArrayRecordDataSource(self.paths)
        out = decode(self._source[int(self.records[i])], self.n_pixels, self.layout)
        out["index"] = np.int64(self.rows[i])
        return out

    def __getstate__(self):
        return {**self.__dict__, "_source": None}

    def __repr__(self) -> str:
        return f"SpectrumSource({len(self)} spectra in {len(self.paths)} shards)"
