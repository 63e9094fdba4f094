"""Config specs of the benchmark command line: ``experiments/x.py[:variant][:key=value...]``."""

from __future__ import annotations

import pathlib


def split_spec(spec: str) -> tuple[str, list[str]]:
    """``experiments/x.py:train.batch_size=32:...`` -> the config path and its ``--set`` arguments."""
    path, *sets = spec.split(":")
    if sets and "=" not in sets[0]:  # experiments/x.py:variant
        path, sets = f"{path}:{sets[0]}", sets[1:]
    return path, [a for item in sets for a in ("--set", item)]


def member_chunk(spec: str) -> int:
    """The ``train.member_chunk`` override of a config spec (0: all members in one vmap)."""
    sets = dict(item.split("=", 1) for item in spec.split(":")[1:] if "=" in item)
    return int(sets.get("train.member_chunk", 0))


def spec_name(spec: str) -> str:
    path, sets = split_spec(spec)
    return " ".join([pathlib.Path(path).name.replace(".py", ""), *sets[1::2]])
