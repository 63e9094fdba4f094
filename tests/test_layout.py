"""The layout the README promises: no import cycle inside ``research``, nothing in ``research`` imports
``data_prep``, and a new detector or dataset is one file plus one registry line."""

import ast
import pathlib
import textwrap

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports anywhere (module level or inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for a in node.names:  # "from pkg import mod" imports pkg.mod when that is a module
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in found if m in modules or m.split(".")[0] == "data_prep"}


def import_graph(package: str = "research") -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (REPO / package).rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and nxt in graph:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_inside_research():
    graph = import_graph()
    assert "research.regions.window" in graph and "research.regions.base" in graph["research.regions.window"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_research_does_not_import_data_prep():
    offenders = {m: sorted(i for i in deps if i.split(".")[0] == "data_prep") for m, deps in import_graph().items()}
    offenders = {m: deps for m, deps in offenders.items() if deps}
    assert not offenders, f"research imports data_prep: {offenders}"


TOY_DETECTOR = '''
import numpy as np

from research.regions.base import Regions, spans
from research.regions.registry import Detector


def detect(original, recon, mask=None, axis=None, *, ivar, sigma: float = 4.0, overall_anomaly_threshold: float = 0.3):
    """Pixels whose residual exceeds ``sigma`` noise sigma; runs of them are the regions."""
    chi = np.abs(np.asarray(original, np.float64) - recon) * np.sqrt(np.maximum(ivar, 0))
    good = np.isfinite(chi) & (ivar > 0) & (True if mask is None else np.asarray(mask, bool))
    flags = good & (chi > sigma)
    edges = np.diff(np.pad(flags.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows, start = np.nonzero(edges == 1)
    _, end = np.nonzero(edges == -1)
    scores = flags.sum(1) / np.maximum(good.sum(1), 1)
    n = len(flags)
    return Regions(rows, start, end, *spans(start, end, axis), scores, scores > overall_anomaly_threshold,
                   np.full(n, sigma), np.full(n, np.nan), flags, {"sigma": sigma}, "toy")


DETECTOR = Detector(detect, {"sigma": "threshold in noise sigma",
                             "overall_anomaly_threshold": "flag a spectrum above this fraction"},
                    lambda regions: {"sigma": regions.params["sigma"]}, needs_ivar=True)
'''


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    """Writes a module into a temporary folder on sys.path and returns its name."""
    def write(name, text):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
        monkeypatch.syspath_prepend(str(tmp_path))
        return name
    return write


def test_a_detector_in_one_file_and_one_registry_line_works_end_to_end(toy_module, sdss_galaxies):
    from research.analyses.sdss_regions import check
    from research.errors import InputError
    from research.regions import DETECTORS, detect, detector, injection, register

    register("toy", f"{toy_module('toy_detector', TOY_DETECTOR)}:DETECTOR")  # the one line
    try:
        assert check({"regions": {"method": "toy"}}) == "toy"
        assert detector("toy").schema() == {"sigma": (4.0, "threshold in noise sigma"),
                                             "overall_anomaly_threshold": (0.3, "flag a spectrum above this fraction")}
        x, ivar, mask = sdss_galaxies
        rng = np.random.default_rng(3)
        normal = x + rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(np.where(ivar > 0, ivar, np.inf))
        regions = detect(x, normal, mask, np.arange(x.shape[1]), method="toy", ivar=ivar, sigma=5.0)
        assert regions.method == "toy" and regions.thresholds() == {"sigma": 5.0}
        trials = injection.make_trials(x, ivar, mask, lambda b: np.zeros_like(b), [1.0, 20.0], copies=3, seed=0)
        for t in trials:
            t.recon = normal[t.source]
        by = {(r["amplitude"], r["kind"]): r
              for r in injection.score_trials(trials, x, ivar, mask, normal, {"method": "toy", "sigma": 5.0})}
        assert by[(20.0, "all")]["recall"] >= 0.9 and by[(1.0, "all")]["recall"] < 0.5
    finally:
        del DETECTORS["toy"]
        detector.cache_clear()
    with pytest.raises(InputError, match="unknown method 'toy'"):
        check({"regions": {"method": "toy"}})


def test_a_declared_parameter_must_be_a_keyword_of_the_detector():
    from research.regions.registry import Detector

    def detect(original, recon, mask=None, axis=None, *, ivar=None, width: int = 3):
        return None

    with pytest.raises(TypeError, match="height"):
        Detector(detect, {"width": "px", "height": "px"}, dict)


TOY_LOADER = '''
import numpy as np

from research.data import Dataset


def load(cfg):
    """Normal rows from ``cfg.path`` (an .npz with ``normal`` and ``anomalous``) for training and testing."""
    with np.load(cfg.path) as f:
        normal, anomalous = f["normal"], f["anomalous"]
    half = len(normal) // 2
    test = np.concatenate([normal[half:], anomalous])
    labels = np.r_[np.zeros(len(normal) - half, int), np.ones(len(anomalous), int)]
    return Dataset(train={"x": normal[:half]}, test={"x": test}, test_labels=labels)
'''


@pytest.mark.data("ecg5000")
def test_a_dataset_loader_in_one_file_and_one_registry_line_loads_through_research_data(
        toy_module, tmp_path, monkeypatch, ecg_dir):
    import ml_collections

    from research.data import LOADERS, load_dataset, register, split_validation

    rows = np.loadtxt(ecg_dir / "ECG5000_TRAIN.txt", max_rows=200, dtype=np.float32)
    path = tmp_path / "toy.npz"
    np.savez(path, normal=rows[rows[:, 0] == 1, 1:], anomalous=rows[rows[:, 0] != 1, 1:])
    monkeypatch.setattr("research.data.LOADERS", dict(LOADERS))
    register("toy", f"{toy_module('toy_loader', TOY_LOADER)}:load")  # the one line
    ds = load_dataset(ml_collections.ConfigDict({"name": "toy", "path": str(path)}))
    n_normal = int((rows[:, 0] == 1).sum())
    assert ds.train["x"].shape == (n_normal // 2, 140) and ds.test_labels.sum() == len(rows) - n_normal

    split = split_validation(ds, 0.25, seed=0)  # a new dataset; the loaded one is unchanged
    assert ds.val is None and len(ds.train["x"]) == n_normal // 2
    assert len(split.val["x"]) + len(split.train["x"]) == n_normal // 2 and len(split.val["x"]) > 0
    rebuilt = np.concatenate([split.train["x"], split.val["x"]])
    assert sorted(map(tuple, rebuilt)) == sorted(map(tuple, ds.train["x"]))


def test_region_keys_of_the_sdss_config_are_the_declared_ones():
    import importlib.util

    from research.analyses.sdss_regions import check, declared
    from research.errors import InputError

    spec = importlib.util.spec_from_file_location("sdss_config", REPO / "experiments" / "sdss_cnn_skip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    assert set(config.regions) <= set(declared()) and check(config) == config.regions.method
    assert declared()["significance"] == (5.0, "a pixel is flagged where a window's |summed residual| exceeds "
                                                 "this many sigma")
    config.regions.significanse = 3.0
    with pytest.raises(InputError) as err:
        check(config)
    assert str(err.value) == "config key regions.significanse: unknown key (did you mean 'regions.significance'?)"
