"""KerasTuner and the LR/WD entanglement study.

`keras_explr.tuning.search.hp_optimizer` gives a user's own ``build_model(hp)`` the learning-rate /
weight-decay search space in either parameterization. The study (`keras-explr study`) lives in
`study` (design, predictions, runner), `block` (many cells of a grid trained at once under
`jax.vmap`, through the package's optimizers), `hypermodels` (the KerasTuner searches of the
study), `report` (analysis, figures, report.md) and `cli`. `metrics` holds grid metrics in
pure numpy. The metrics import without Keras or KerasTuner; the rest load lazily.
"""

from keras_explr.tuning.metrics import (  # noqa: F401
    ContourSlope, Estimate, RidgeSlope, SearchCost, cellwise_bootstrap, contour_slope, diagonal_flatness,
    expected_best_of_n,
    good_region_correlation, mean_grid, paired_difference, ridge_slope, search_cost, slope_statistic,
    transfer_regret, trials_to_within, within_fraction,
)

_LAZY = {"block", "hypermodels", "study", "report", "cli", "search"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"keras_explr.tuning.{name}")
    if name in ("hp_optimizer",):
        from keras_explr.tuning import search

        return search.hp_optimizer
    raise AttributeError(f"module 'keras_explr.tuning' has no attribute {name!r}")
