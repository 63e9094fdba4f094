"""Fetch SDSS spectra (by plate/mjd/fiber or by position) and image cutouts into a local cache.

Everything downstream reads the cache (``<cache>/spectra/*.fits``, ``<cache>/images/<id>.jpg``),
so once fetched the pipeline runs offline. A file already in the cache is never fetched again.
Without network every fetch fails with one ``InputError`` line saying what could not be reached.

CLI::

    python -m data_prep.sdss_fetch spectrum --plate 266 --mjd 51602 --fiber 1 [--image]
    python -m data_prep.sdss_fetch position --ra 146.714 --dec -1.041 --radius 3
    python -m data_prep.sdss_fetch images --catalogue data/sdss_catalogue.csv
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import urllib.error
import urllib.parse
import urllib.request

from research.errors import InputError
from research.paths import SDSS_CACHE

CUTOUT_URL = "https://skyserver.sdss.org/dr{dr}/SkyServerWS/ImgCutout/getjpeg"


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, TimeoutError, urllib.error.URLError]
    try:
        import requests
        errors.append(requests.exceptions.RequestException)
    except ImportError:
        pass
    try:
        from astroquery.exceptions import RemoteServiceError, TimeoutError as AQTimeout
        errors += [RemoteServiceError, AQTimeout]
    except ImportError:
        pass
    return tuple(errors)


def _remote(what: str, cache_dir: pathlib.Path, call):
    """Runs a network call; any network failure becomes one line naming what was wanted."""
    try:
        return call()
    except _network_errors() as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"sdss fetch {what}: cannot reach SDSS ({type(exc).__name__}: {reason}); "
                         f"offline? cached files in {cache_dir} still work") from None


def spectrum_path(cache_dir, plate: int, mjd: int, fiber: int) -> pathlib.Path:
    return pathlib.Path(cache_dir) / "spectra" / f"spec-{int(plate):04d}-{int(mjd):05d}-{int(fiber):04d}.fits"


def image_path(cache_dir, spectrum_id: str) -> pathlib.Path:
    return pathlib.Path(cache_dir) / "images" / f"{spectrum_id}.jpg"


def fetch_spectrum(plate: int, mjd: int, fiber: int, cache_dir=SDSS_CACHE, data_release: int = 17,
                   timeout: int = 60) -> pathlib.Path:
    """The cached ``spec-PLATE-MJD-FIBER.fits``, downloaded with astroquery if not yet cached."""
    cache_dir = pathlib.Path(cache_dir)
    path = spectrum_path(cache_dir, plate, mjd, fiber)
    if path.is_file():
        return path
    from astroquery.sdss import SDSS

    what = f"spectrum {int(plate):04d}-{int(mjd):05d}-{int(fiber):04d}"
    hduls = _remote(what, cache_dir, lambda: SDSS.get_spectra(
        plate=int(plate), mjd=int(mjd), fiberID=int(fiber), data_release=data_release, timeout=timeout,
        cache=False, show_progress=False))
    if not hduls:
        raise InputError(f"sdss fetch {what}: SDSS DR{data_release} has no such spectrum")
    path.parent.mkdir(parents=True, exist_ok=True)
    hduls[0].writeto(path, overwrite=True)
    return path


def fetch_by_position(ra: float, dec: float, radius_arcsec: float = 3.0, cache_dir=SDSS_CACHE,
                      data_release: int = 17, timeout: int = 60) -> list[pathlib.Path]:
    """Every SDSS spectrum within ``radius_arcsec`` of (ra, dec), cached."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astroquery.sdss import SDSS

    cache_dir = pathlib.Path(cache_dir)
    what = f"position ra={ra} dec={dec}"
    table = _remote(what, cache_dir, lambda: SDSS.query_region(
        SkyCoord(ra * u.deg, dec * u.deg), radius=radius_arcsec * u.arcsec, spectro=True,
        data_release=data_release, timeout=timeout))
    if table is None or len(table) == 0:
        raise InputError(f"sdss fetch {what}: no spectrum within {radius_arcsec} arcsec")
    cols = {c.lower(): c for c in table.colnames}
    return [fetch_spectrum(row[cols["plate"]], row[cols["mjd"]], row[cols["fiberid"]], cache_dir, data_release, timeout)
            for row in table]


def fetch_image(ra: float, dec: float, spectrum_id: str, cache_dir=SDSS_CACHE, data_release: int = 17,
                scale: float = 0.2, size: int = 256, timeout: int = 60) -> pathlib.Path:
    """A ``size`` x ``size`` px colour cutout (``scale`` arcsec/px) from the SkyServer, cached as ``<id>.jpg``."""
    cache_dir = pathlib.Path(cache_dir)
    path = image_path(cache_dir, spectrum_id)
    if path.is_file():
        return path
    query = urllib.parse.urlencode({"ra": ra, "dec": dec, "scale": scale, "width": size, "height": size})
    url = f"{CUTOUT_URL.format(dr=data_release)}?{query}"

    def get():
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()

    data = _remote(f"image {spectrum_id}", cache_dir, get)
    if not data.startswith(b"\xff\xd8"):
        raise InputError(f"sdss fetch image {spectrum_id}: the SkyServer answered with no JPEG ({url})")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fetch_images_for_catalogue(catalogue_csv, cache_dir=SDSS_CACHE, log=print) -> list[pathlib.Path]:
    """Cutouts for every row (id, ra, dec) of an ingested catalogue; stops at the first network failure."""
    from research.data.sdss_fits import read_catalogue

    cat = read_catalogue(catalogue_csv)
    paths = []
    for i, (sid, ra, dec) in enumerate(zip(cat["id"], cat["ra"], cat["dec"]), 1):
        paths.append(fetch_image(float(ra), float(dec), str(sid), cache_dir))
        if log:
            log(f"[{i}/{len(cat['id'])}] {paths[-1]}")
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.sdss_fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default=str(SDSS_CACHE), help="cache folder (default: %(default)s)")
    parser.add_argument("--data-release", type=int, default=17)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("spectrum", help="one spectrum by plate/mjd/fiber")
    p.add_argument("--plate", type=int, required=True)
    p.add_argument("--mjd", type=int, required=True)
    p.add_argument("--fiber", type=int, required=True)
    p.add_argument("--image", action="store_true", help="also fetch the image cutout at the fibre position")
    p = sub.add_parser("position", help="all spectra near a position")
    p.add_argument("--ra", type=float, required=True)
    p.add_argument("--dec", type=float, required=True)
    p.add_argument("--radius", type=float, default=3.0, help="arcsec")
    p = sub.add_parser("images", help="cutouts for every spectrum of an ingested catalogue CSV")
    p.add_argument("--catalogue", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "spectrum":
            path = fetch_spectrum(args.plate, args.mjd, args.fiber, args.cache, args.data_release)
            print(path)
            if args.image:
                from research.data.sdss_fits import read_spectrum
                spec = read_spectrum(path)
                print(fetch_image(spec.meta["ra"], spec.meta["dec"], spec.id, args.cache, args.data_release))
        elif args.command == "position":
            for path in fetch_by_position(args.ra, args.dec, args.radius, args.cache, args.data_release):
                print(path)
        else:
            fetch_images_for_catalogue(args.catalogue, args.cache)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
