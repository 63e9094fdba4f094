"""Spectra in fixed-size ArrayRecord shards on one common grid, indexed by a Parquet catalogue.

A shard folder holds, per ingestion task ``t`` of ``T``:

* ``task-TTTTT-of-NNNNN-shard-SSSSS.array_record``: up to ``shard_size`` records; a record is one
  spectrum, float32 flux, float32 ivar and uint8 mask (1 = good pixel) on the grid, back to back;
* ``task-TTTTT-of-NNNNN.parquet``: its catalogue rows (one row group per shard) with ``shard``
  (file name) and ``row`` (record number in it);
* ``task-TTTTT-of-NNNNN.json``: its grid, options and skipped files.

:func:`merge` joins the tasks into ``catalogue.parquet`` and ``manifest.json``; :class:`Shards`
reads a merged folder. Memory while writing is one shard's catalogue rows, never the spectra.
ArrayRecord gives random access to any record (what a shuffled grain loader needs) and every
process opens only the files it reads.
"""

from __future__ import annotations

import json
import pathlib
from typing import Iterable, Sequence

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


def encode(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray) -> bytes:
    """One record: float32 flux, float32 ivar, uint8 mask, back to back."""
    return (np.ascontiguousarray(flux, np.float32).tobytes() + np.ascontiguousarray(ivar, np.float32).tobytes()
            + np.ascontiguousarray(mask, np.uint8).tobytes())


def decode(record: bytes, n_pixels: int) -> dict[str, np.ndarray]:
    if len(record) != 9 * n_pixels:
        raise InputError(f"record of {len(record)} bytes does not hold {n_pixels} pixels (expected {9 * n_pixels})")
    buf = np.frombuffer(record, np.uint8)
    return {"flux": buf[: 4 * n_pixels].view(np.float32), "ivar": buf[4 * n_pixels: 8 * n_pixels].view(np.float32),
            "mask": buf[8 * n_pixels:].astype(bool)}


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
                 columns: Sequence[str]):
        if shard_size < 1:
            raise InputError(f"--shard-size: must be >= 1, got {shard_size}")
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = task_name(task, num_tasks)
        self.shard_size, self.n_pixels = shard_size, n_pixels
        self.columns = tuple(columns) + ("shard", "row")
        self.schema = pa.schema([(c, _column_type(c)) for c in self.columns])
        self.shards: list[str] = []
        self.n_records = 0
        self._writer = None
        self._rows: list[dict] = []
        self._catalogue = pq.ParquetWriter(self.folder / f"{self.name}.parquet.partial", self.schema)

    def add(self, flux, ivar, mask, row: dict) -> None:
        if len(flux) != self.n_pixels:
            raise InputError(f"{row.get('file')}: {len(flux)} px, the shards hold {self.n_pixels}")
        if self._writer is None:
            self.shards.append(f"{self.name}-shard-{len(self.shards):05d}.array_record")
            self._writer = array_record_module.ArrayRecordWriter(str(self.folder / self.shards[-1]), WRITER_OPTIONS)
        self._writer.write(encode(flux, ivar, mask))
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


def task_files(folder) -> list[pathlib.Path]:
    return sorted(pathlib.Path(folder).glob("task-*-of-*.json"))


def merge(folder, log=None) -> dict:
    """Joins every task's catalogue into ``catalogue.parquet`` (task order) and writes ``manifest.json``.

    All tasks must share the grid and options, and every task of the array must be present. A
    spectrum id seen in an earlier task is dropped from the catalogue and listed as skipped.
    """
    folder = pathlib.Path(folder)
    reports = [json.loads(p.read_text()) for p in task_files(folder)]
    if not reports:
        raise InputError(f"{folder}: no task reports (task-*-of-*.json); run the ingestion tasks first")
    num_tasks = reports[0]["num_tasks"]
    missing = sorted(set(range(num_tasks)) - {r["task"] for r in reports})
    if missing or any(r["num_tasks"] != num_tasks for r in reports):
        raise InputError(f"{folder}: tasks {missing} of {num_tasks} have not finished (or the folder mixes arrays)")
    first = reports[0]
    for r in reports[1:]:
        if r["grid"] != first["grid"] or r["options"] != first["options"]:
            raise InputError(f"{folder}: {task_name(r['task'], num_tasks)} was ingested with another grid or "
                             "options than task 0; ingest all tasks with the same --wave-range and options")
    tables, skipped, seen = [], [], set()
    for r in reports:
        table = pq.read_table(folder / f"{task_name(r['task'], num_tasks)}.parquet")
        ids = table.column("id").to_pylist()
        keep = np.ones(len(ids), bool)
        for i, sid in enumerate(ids):
            if sid in seen:
                keep[i] = False
                skipped.append({"file": table.column("file")[i].as_py(),
                                "reason": f"{table.column('file')[i].as_py()}: duplicate of an earlier task's "
                                          f"spectrum {sid}"})
            seen.add(sid)
        tables.append(table.filter(pa.array(keep)))
        skipped.extend(r["skipped"])
    catalogue = pa.concat_tables(tables)
    pq.write_table(catalogue, folder / (CATALOGUE + ".partial"))
    (folder / (CATALOGUE + ".partial")).replace(folder / CATALOGUE)
    manifest = {"n_spectra": catalogue.num_rows, "n_files": sum(r["n_files"] for r in reports),
                "n_skipped": len(skipped), "skipped": skipped, "grid": first["grid"], "options": first["options"],
                "num_tasks": num_tasks, "shards": [s for r in reports for s in r["shards"]],
                "mask_meaning": "1 = good pixel (use)", "record": "float32 flux, float32 ivar, uint8 mask"}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if log:
        log(f"merged {num_tasks} task(s): {catalogue.num_rows} spectra in {len(manifest['shards'])} shards, "
            f"{len(skipped)} skipped -> {folder / CATALOGUE}")
    return manifest


class Shards:
    """A merged shard folder: its grid, its catalogue, and random access to any spectrum."""

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise InputError(f"{path}: not a merged shard folder (run the merge step: --merge)")
        self.manifest = json.loads(path.read_text())
        self.n_pixels = int(self.manifest["grid"]["n_pixels"])
        self.loglam = np.asarray(self.manifest["grid"]["loglam"], np.float64)
        self.catalogue = pq.read_table(self.folder / CATALOGUE)
        offsets = np.cumsum([0] + [self._count(s) for s in self.manifest["shards"]])
        start = dict(zip(self.manifest["shards"], offsets[:-1]))
        shard = self.catalogue.column("shard").to_pylist()
        self.record_index = np.asarray([start[s] for s in shard], np.int64) + self.catalogue.column("row").to_numpy()

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
        if name in INT_COLUMNS:
            return column.fill_null(-1).to_numpy()
        return column.to_numpy() if name in FLOAT_COLUMNS else np.asarray(column.to_pylist())

    def source(self, rows: Iterable[int] | None = None) -> "SpectrumSource":
        """A grain random-access source over catalogue rows ``rows`` (default all), in that order."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, np.int64)
        return SpectrumSource(self.paths, self.record_index[rows], self.n_pixels, rows)

    def read(self, rows: Iterable[int] | None = None) -> dict[str, np.ndarray]:
        """Stacked arrays of catalogue rows ``rows`` (for small sets; a loader streams large ones)."""
        src = self.source(rows)
        items = [src[i] for i in range(len(src))]
        return {k: np.stack([it[k] for it in items]) if items else np.zeros((0, self.n_pixels))
                for k in ("flux", "ivar", "mask", "index")}


class SpectrumSource:
    """``grain`` RandomAccessDataSource: item ``i`` is catalogue row ``rows[i]`` as flux/ivar/mask/index.

    Picklable (grain workers get a copy); each process opens the record files lazily on first read.
    """

    def __init__(self, paths: list[str], records: np.ndarray, n_pixels: int, rows: np.ndarray):
        self.paths, self.records, self.n_pixels, self.rows = paths, records, n_pixels, rows
        self._source = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if self._source is None:
            import grain.python as grain

            self._source = grain.ArrayRecordDataSource(self.paths)
        out = decode(self._source[int(self.records[i])], self.n_pixels)
        out["index"] = np.int64(self.rows[i])
        return out

    def __getstate__(self):
        return {**self.__dict__, "_source": None}

    def __repr__(self) -> str:
        return f"SpectrumSource({len(self)} spectra in {len(self.paths)} shards)"
