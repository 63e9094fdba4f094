"""Latent-density score: the mixture on real spectra, and the analysis end to end on a tiny SDSS config."""

import json

import numpy as np
import pytest

from research.analyses.latent_density import LatentDensity, auc_table, rank_average

GALAXIES = ["spec-0431-51877-{:04d}.fits".format(f) for f in (19, 35, 40, 53, 56, 63, 73, 80, 98, 115, 124, 125,
                                                                 127, 135, 138, 141, 143, 150)]
QUASARS = ["spec-0332-52367-0639.fits", "spec-1325-52762-0133.fits", "spec-7338-57789-0739.fits"]


def _codes(data_dir, names):
    """A crude 3-number code of real spectra: mean rest-frame flux in 3 bands (median-normalised)."""
    from research.data import sdss_fits as sdss

    grid = sdss.make_grid(np.log10(3700), np.log10(6800))
    rows = []
    for name in names:
        path = next((data_dir / f / name for f in ("sdss", "sdss_extra") if (data_dir / f / name).is_file()), None)
        if path is None:
            pytest.skip(f"{name} not found under {data_dir}")
        flux, _, mask = sdss.resample(sdss.read_spectrum(path), grid, "rest")
        flux = flux / np.median(flux[mask])
        rows.append([flux[b][mask[b]].mean() for b in np.array_split(np.arange(len(grid)), 3)])
    return np.asarray(rows)


def test_mixture_is_deterministic_and_ranks_quasars_above_galaxies(data_dir):
    train = _codes(data_dir, GALAXIES[:15])
    test = _codes(data_dir, GALAXIES[15:] + QUASARS)
    labels = np.array([0] * 3 + [1] * 3)
    first = LatentDensity(max_components=2, seed=3).fit(train).score(test)
    again = LatentDensity(max_components=2, seed=3).fit(train).score(test)
    assert np.array_equal(first, again)
    assert first[labels == 1].min() > first[labels == 0].max()
    table = auc_table(labels, np.arange(6.0), first)
    assert table == {"reconstruction_error": 1.0, "latent_density": 1.0, "rank_average": 1.0}
    assert np.allclose(rank_average([3, 1, 2], [1, 2, 3]), [0.5, 0.25, 0.75])


@pytest.mark.slow
@pytest.mark.data("sdss", "sdss_extra")
def test_latent_density_analysis_end_to_end(data_dir, tmp_path):
    from conftest import run_cli

    folder = tmp_path / "spectra"
    folder.mkdir()
    for path in [data_dir / "sdss_extra" / n for n in GALAXIES[:9]] + [data_dir / "sdss" / n for n in QUASARS[:2]]:
        (folder / path.name).symlink_to(path)
    run = run_cli(["--config=experiments/sdss_cnn_skip.py", "--config.smoke=True", "--config.smoke_epochs=1",
                   f"--config.run.root={tmp_path}", "--config.run.name=tiny", f"--config.data.path={folder}",
                   f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.data.holdout_fraction=0.34",
                   "--config.model.features=(4, 4)", "--config.model.latent_dim=3", "--config.train.batch_size=4",
                   "--config.analyses=('latent_density',)", "--config.plots.enabled=False"], timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    rundir = tmp_path / "sdss_cnn_skip" / "tiny"
    result = json.loads((rundir / "metrics.json").read_text())["analyses"]["latent_density"]
    assert set(result["roc_auc"]) == {"reconstruction_error", "latent_density", "rank_average"}
    assert result["n_anomaly"] == 2 and result["n_normal"] == 3 and result["n_train"] == 5
    rows = [ln for ln in (rundir / "latent_density.md").read_text().splitlines() if ln.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["reconstruction error", "latent density", "rank average"]
