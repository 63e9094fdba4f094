"""Where data lives (the config's path, else $RESEARCH_DATA, else ../shared/data beside the repo) and
where derived files are cached (``cache/`` in the repository: ingested SDSS spectra, fetched files,
trained injection-evaluation models)."""

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
CACHE_ROOT = REPO_ROOT / "cache"
SDSS_CACHE = CACHE_ROOT / "sdss"


def data_root(configured: str | None = None) -> pathlib.Path:
    if configured:
        return pathlib.Path(configured).expanduser()
    env = os.environ.get("RESEARCH_DATA")
    if env:
        return pathlib.Path(env).expanduser()
    return DEFAULT_DATA_ROOT


def dataset_dir(name: str, configured_root: str | None = None) -> pathlib.Path:
    """Folder of one dataset (e.g. ``ecg5000``) under the data root."""
    return data_root(configured_root) / name
