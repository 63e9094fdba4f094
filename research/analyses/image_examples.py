"""Image figures of the Fashion-MNIST seed: originals over reconstructions, and the highest-error images."""

from __future__ import annotations

import numpy as np

from research.plots import images as image_plots


def run(ctx) -> dict:
    ds = ctx.dataset
    x, errors = ds.test["x"], np.asarray(ctx.errors["test"])
    recon = np.asarray(ctx.recon_test).mean(0)
    n = max(10, int(ctx.config.plots.n_examples))
    image_plots.originals_over_reconstructions(x, recon, ctx.run.plot_path("originals_over_recon.png"), n=n,
                                               ids=ds.test_ids, errors=errors)
    image_plots.highest_error_images(x, errors, ctx.run.plot_path("highest_errors.png"), n=n, ids=ds.test_ids,
                                     recon=recon)
    top = np.argsort(errors)[::-1][:n]
    ids = ds.test_ids or [str(i) for i in range(len(errors))]
    return {"highest_errors": [{"id": ids[i], "error": float(errors[i])} for i in top]}
