"""Command-line helpers: the ``--config`` flag, parsing it with one-line errors, and printing them."""

from __future__ import annotations

import ast
import os
import pathlib
import re
import sys

from absl import flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py).",
                                          lock_config=True)
PRINT_RUN_DIR = flags.DEFINE_bool("print_run_dir", False, "Print the run directory this command would "
                                   "use and exit (batch scripts send their logs there).")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def mute_stderr() -> int:
    """Sends what is still printed to stderr (orbax's threads shutting down) to /dev/null; returns a
    descriptor of the real stderr for the one error line (``research.score``)."""
    sys.stderr.flush()
    real = os.dup(2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    return real


def fail_hard(message: str, stderr: int) -> None:
    """``error: <message>`` on ``stderr`` and exit 2 at once, skipping the interpreter shutdown in which
    orbax's threads would print."""
    sys.stdout.flush()
    os.write(stderr, f"error: {message}\n".encode())
    os._exit(2)


def first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_config_file(path: str) -> None:
    """One line for a config file that is missing, does not parse, or has no ``get_config``."""
    if not os.path.isfile(path):
        fail(f"{path}: config file not found")
    try:
        tree = ast.parse(pathlib.Path(path).read_text(), path)
    except SyntaxError as exc:
        fail(f"{path}:{exc.lineno}: syntax error: {exc.msg}")
    except (OSError, ValueError) as exc:
        fail(f"{path}: {first_line(exc)}")
    if not any(isinstance(node, ast.FunctionDef) and node.name == "get_config" for node in tree.body):
        fail(f"{path}: no get_config() function (a config file defines get_config(arg=None) returning a ConfigDict)")


def describe(exc: BaseException, where: str | None = None) -> str:
    """``<what>: <why>`` for a failure that is not an :class:`InputError`: the file of an OS error (disk
    full, permission denied) found anywhere in the exception's chain (``where`` when it names no file),
    device memory, else the type."""
    seen, cur = set(), exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return f"{cur.filename or where or 'file system'}: {cur.strerror}"
        cur = cur.__cause__ or cur.__context__
    text = first_line(exc)
    if code := re.search(r"\[os_error_code='(\d+)'\]", text):  # tensorstore (orbax) writing a checkpoint
        where = re.search(r'local file "([^"]+)"', text)
        return f"{where.group(1) if where else 'checkpoint'}: {os.strerror(int(code.group(1)))}"
    if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
        return f"device: out of memory ({text[:200]})"
    return f"{type(exc).__name__}: {text[:300]}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors for bad config files and unknown or mistyped keys."""
    path = _config_path(argv)
    if path is None and not any(a in ("--help", "--helpfull", "-h") for a in argv):
        fail("--config=experiments/<name>.py is required")
    if path is not None:
        check_config_file(path.split(":")[0])
    try:
        return flags.FLAGS(argv)
    except (KeyError, AttributeError) as exc:
        text = str(exc.args[0]) if exc.args else str(exc)
        key = (re.findall(r"'([A-Za-z0-9_]+)", text) or ["?"])[0]
        hint = re.search(r'Did you mean "([^"]+)"', text)
        culprit = [a.split("=")[0] for a in argv[1:]
                   if a.startswith("--config.") and key in a.split("=")[0].split(".")]
        fail(f"{culprit[0] if culprit else '--config'}: unknown config key {key!r}"
              + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))
    except (flags.Error, ValueError, TypeError) as exc:
        fail(first_line(exc))
    except Exception as exc:  # errors raised while executing the config file itself
        fail(f"{path}: {first_line(exc)}")
    return []


def parse_value(text: str):
    """A command-line value: a Python literal when it parses as one, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load_config(spec: str, overrides=()):
    """``get_config([variant])`` of ``experiments/x.py[:variant]`` outside the command line (benchmarks,
    tests), with ``key=value`` overrides whose values are Python literals."""
    import importlib.util

    path, _, variant = str(spec).partition(":")
    module_spec = importlib.util.spec_from_file_location("experiment_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(variant) if variant else module.get_config()
    for item in overrides:
        key, value = item.split("=", 1)
        config.update_from_flattened_dict({key: parse_value(value)})
    return config
