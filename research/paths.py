"""Where data lives: the config's path, else $RESEARCH_DATA, else ../shared/data beside the repo,
else the per-user cache that :mod:`research.data.fetch` downloads public datasets into; and where derived
files are cached (``cache/`` in the repository: ingested SDSS spectra, trained injection-evaluation models)."""

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
    if DEFAULT_DATA_ROOT.is_dir():
        return DEFAULT_DATA_ROOT
    from research.data.fetch import cache_root

    return cache_root()


def dataset_dir(name: str, configured_root: str | None = None) -> pathlib.Path:
    """Folder of one dataset (e.g. ``ecg5000``) under the data root.

    A public dataset that is in none of the places above (and no ``data.root`` was configured) is
    downloaded on first use, like ``torchvision``'s ``download=True`` (see :mod:`research.data.fetch`).
    """
    folder = data_root(configured_root) / name
    if folder.exists() or configured_root:
        return folder
    from research.data import fetch

    dataset = fetch.dataset_of_folder(name)
    if dataset is None:
        return folder
    cached = fetch.fetch_root() / name
    return cached if cached.is_dir() else fetch.fetch(dataset)
