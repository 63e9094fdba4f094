"""The cross-validated injection evaluation's tuning grid (research/regions/injection_cv.py)."""

from research.regions.injection_cv import GRID, _variant, grid


def test_grid_adds_the_variant_keys_and_defaults_to_the_plain_grid():
    assert grid() == GRID and grid((0.0,), (0,), (0.0,), (0,)) == GRID
    extended = grid((0.0, 0.35), (0, 301))
    assert len(extended) == 4 * len(GRID)
    assert extended[:len(GRID)] == GRID  # off: the settings as they were, without the new keys
    counts = {}
    for d in extended:
        counts[_variant(d)] = counts.get(_variant(d), 0) + 1
    assert counts == {(0.0, 0, 0.0, 0): len(GRID), (0.0, 301, 0.0, 0): len(GRID), (0.35, 0, 0.0, 0): len(GRID),
                      (0.35, 301, 0.0, 0): len(GRID)}
    assert all(d["relative_error"] == 0.35 for d in extended if "relative_error" in d)
    lines = grid(line_tolerances=(0.7,), local_scale_blocks=(1024,), significances=(4.0, 5.0))
    assert {_variant(d) for d in lines} == {(0.0, 0, 0.7, 1024)}
    assert sorted({d["significance"] for d in lines}) == [4.0, 5.0] and len(lines) == 2 * len(GRID) // 4
