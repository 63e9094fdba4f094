"""The config schema (declared keys, did-you-mean, types, one bounds table), variant configs, and the
runner that research.train picks from the config."""

import ast
import json
import pathlib

import pytest

from conftest import REPO, run_cli
from research.config import BOUNDS, base_config, resolve
from research.errors import InputError

EXPERIMENTS = sorted((REPO / "experiments").glob("[!_]*.py"))


def _variants(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "VARIANTS":
            return ast.literal_eval(node.value)
    return (None,)


def _load(path: pathlib.Path, arg):
    from research.cli import load_config

    return load_config(str(path) + (f":{arg}" if arg else ""))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_variant_resolves_and_its_docstring_starts_with_its_command(path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc.startswith(f"python -m research.train --config=experiments/{path.name}"), doc.splitlines()[0]
    names = [resolve(_load(path, arg)).experiment for arg in _variants(path)]
    assert len(set(names)) == len(names)  # every variant has its own run directories


def test_a_new_variant_touches_one_file(tmp_path):
    text = (REPO / "experiments" / "ecg5000.py").read_text()
    text = text.replace('VARIANTS = ("dense", "ensemble", "conv1d")', 'VARIANTS = ("dense", "ensemble", "conv1d", "wide")')
    text = text.replace("    return c\n", '    if arg == "wide":\n        c.model.hidden = (128, 64)\n    return c\n')
    path = tmp_path / "ecg5000.py"
    path.write_text(text)
    proc = run_cli([f"--config={path}:wide", "--print_run_dir", "--config.run.name=x", f"--config.run.root={tmp_path}"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "ecg5000_wide" / "x")
    assert resolve(_load(path, "wide")).model.hidden == (128, 64)


def test_unknown_variant():
    proc = run_cli(["--config=experiments/ecg5000.py:wide"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: experiments/ecg5000.py:wide: unknown variant 'wide'; "
                                   "choose one of dense, ensemble, conv1d")


def test_unknown_key_in_a_config_file_says_did_you_mean(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text('"""python -m research.train --config=typo.py"""\n'
                    "from research.config import base_config\n\n\n"
                    "def get_config():\n"
                    '    c = base_config("ecg5000", "dense")\n'
                    "    c.data.val_fractoin = 0.2\n"
                    "    return c\n")
    proc = run_cli([f"--config={path}", f"--config.run.root={tmp_path}"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config key data.val_fractoin: unknown key (did you mean 'data.val_fraction'?)"
    assert not (tmp_path / "experiment").exists()


def test_unknown_key_override_says_did_you_mean():
    proc = run_cli(["--config=experiments/rf.py:dense", "--config.data.floor_bd=-20"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --config.data.floor_bd: unknown config key 'floor_bd' (did you mean 'floor_db'?)"


def test_region_keys_are_declared_in_the_schema(tmp_path):
    from research.analyses.sdss_regions import declared

    c = base_config("sdss", "cnn_skip", analyses=("sdss_regions",))
    assert set(c.regions) == set(declared()) and c.regions.method == "window"
    assert resolve(c).regions.significance == 5.0  # the matched filter's own default
    proc = run_cli(["--config=experiments/sdss_cnn_skip.py", "--config.regions.significanse=3.0"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: --config.regions.significanse: unknown config key 'significanse' "
                                   "(did you mean 'significance'?)")
    path = tmp_path / "typo.py"
    path.write_text('"""python -m research.train --config=typo.py"""\n'
                    "from research.config import base_config\n\n\n"
                    "def get_config():\n"
                    '    c = base_config("sdss", "cnn_skip", analyses=("sdss_regions",))\n'
                    "    c.regions.merge_gapp = 8\n"
                    "    return c\n")
    proc = run_cli([f"--config={path}", f"--config.run.root={tmp_path}"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config key regions.merge_gapp: unknown key (did you mean 'regions.merge_gap'?)"
    c.analyses = ("latent_density",)  # a block of an analysis that is not listed is still checked
    c.regions.detrend_widht = 201
    with pytest.raises(InputError, match=r"^config key regions.detrend_widht: unknown key \(did you mean "
                                         r"'regions.detrend_width'\?\)$"):
        resolve(c)


def test_model_keys_follow_the_model():
    c = base_config("ecg5000", "dense")
    c.model.features = (8,)  # a Conv1DAE field, not a DenseAE one
    with pytest.raises(InputError, match=r"^config key model.features: unknown key$"):
        resolve(c)


def test_setting_a_placeholder_key_leaves_the_modules_defaults_alone():
    """A placeholder default is a shared FieldReference; setting it in one config must not leak into the next."""
    from research.data import sdss

    c = base_config("sdss", "cnn_skip")
    c.data.wave_range = (3600.0, 7400.0)
    c.model.latent_dim = 7
    assert sdss.DEFAULTS["wave_range"].get() is None
    assert base_config("sdss", "cnn_skip").data.wave_range is None
    assert base_config("sdss", "cnn_skip").model.latent_dim is None


def test_wrong_type_of_a_loader_key():
    c = base_config()  # the fsdd keys are added by the file below, not declared up front by base_config("fsdd")
    c.data.name = "fsdd"
    c.data.n_bins = "128"
    with pytest.raises(InputError, match=r"^config key data.n_bins: expected int, got str '128'$"):
        resolve(c)


@pytest.mark.parametrize("config, overrides", [
    ("experiments/ecg5000.py:conv1d", ["train.warmup_epochs=3", "train.momentum=0.5", "train.final_lr_fraction=0.1"]),
    ("experiments/fashion_mnist.py:one_class", ["data.val_rows=100"]),
    ("experiments/sdss_cnn_skip.py", ["data.wave_range=(4000.0, 8000.0)", "data.mask_bits=3"]),
])
def test_keys_the_code_reads_are_settable(config, overrides):
    proc = run_cli([f"--config={config}", *(f"--config.{o}" for o in overrides), "--print_run_dir",
                    "--config.run.name=x"])
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("key, value, message", [
    ("train.epochs", 0, "config key train.epochs: must be >= 1, got 0"),
    ("train.epochs", -5, "config key train.epochs: must be >= 1, got -5"),
    ("train.batch_size", 0, "config key train.batch_size: must be >= 1, got 0"),
    ("train.learning_rate", 0.0, "config key train.learning_rate: must be > 0, got 0.0"),
    ("train.learning_rate", float("nan"), "config key train.learning_rate: must be > 0, got nan"),
    ("data.val_fraction", 1.0, "config key data.val_fraction: must be >= 0, < 1, got 1.0"),
    ("train.ensemble_size", 0, "config key train.ensemble_size: must be >= 1, got 0"),
])
def test_bounds(key, value, message):
    c = base_config("ecg5000", "dense")
    c.update_from_flattened_dict({key: value})
    with pytest.raises(InputError) as exc:
        resolve(c)
    assert str(exc.value) == message


def test_bounds_refuse_before_any_data_is_read(tmp_path):
    # data.root points nowhere: a bounds error must come before the loader would fail on it
    proc = run_cli(["--config=experiments/ecg5000.py:dense", "--config.train.epochs=0", f"--config.run.root={tmp_path}",
                    f"--config.data.root={tmp_path / 'no_data'}"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config key train.epochs: must be >= 1, got 0"
    assert list(tmp_path.iterdir()) == []


def test_bounds_table_names_declared_keys():
    flat = base_config().to_dict()
    for key in BOUNDS:
        block, _, leaf = key.rpartition(".")
        assert leaf in (flat[block] if block else flat), key


@pytest.mark.data("ecg5000")
def test_batch_larger_than_the_training_set_refuses_before_the_run_directory(tmp_path):
    proc = run_cli(["--config=experiments/ecg5000.py:dense", "--config.train.batch_size=300",
                    f"--config.run.root={tmp_path}"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config key train.batch_size: 300 is larger than the 292 training rows"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.data("fashion_mnist")
def test_one_class_config_through_research_train_reports_per_class_aucs(tmp_path):
    proc = run_cli(["--config=experiments/fashion_mnist.py:one_class", "--config.data.classes=(1, 7)",
                    "--config.data.limit=256", "--config.train.epochs=2", "--config.train.batch_size=64",
                    "--config.plots.enabled=False", f"--config.run.root={tmp_path}", "--config.run.name=oc"],
                   env={"JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "fashion_mnist_one_class_dense" / "oc" / "metrics.json").read_text())
    assert list(metrics["roc_auc"]) == ["Trouser", "Sneaker"]
    assert metrics["n_train_per_class"] == 256 and metrics["epochs"] == 2
    assert "mean ROC-AUC" in proc.stdout and f"{metrics['mean_roc_auc']:.4f}" in proc.stdout


def test_unknown_runner(tmp_path):
    proc = run_cli(["--config=experiments/ecg5000.py:dense", "--config.runner=streaming", f"--config.run.root={tmp_path}"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config key runner: unknown runner 'streaming'; choose one of ['one_class', 'reconstruction']"



def test_analysis_options_are_declared_by_their_analysis():
    from research.cli import load_config

    c = load_config(str(REPO / "experiments" / "rf.py:dense"))
    c.baselines.pca_componets = 3
    with pytest.raises(InputError) as exc:
        resolve(c)
    assert str(exc.value) == "config key baselines.pca_componets: unknown key (did you mean 'baselines.pca_components'?)"
