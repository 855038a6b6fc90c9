"""KerasTuner studies of learning-rate / weight-decay entanglement (issue 5).

`keras_explr.tuning.metrics` (pure numpy) holds the metrics of a results grid;
`hypermodels` the BN-convnet HyperModels in three weight-decay
parameterizations; `study` the KerasTuner runner that records every seed;
`report` the JSON / PNG / Markdown outputs; `study_v2` the equilibrated
six-arm study (`StudyHyperModel`: grids in (η_0, λ_new), seeds as towers);
`cli` the `keras-explr study` command; `search.hp_optimizer` the LR/WD search space of a user's own
``build_model(hp)``. The metrics import without Keras or KerasTuner; the rest load lazily.
"""

from keras_explr.tuning.metrics import (  # noqa: F401
    ContourSlope, Estimate, RidgeSlope, SearchCost, cellwise_bootstrap, contour_slope, diagonal_flatness,
    expected_best_of_n,
    good_region_correlation, mean_grid, paired_difference, ridge_slope, search_cost, slope_statistic,
    transfer_regret, trials_to_within, within_fraction,
)

_LAZY = {"hypermodels", "study", "study_v2", "report", "cli", "search"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"keras_explr.tuning.{name}")
    if name in ("hp_optimizer",):
        from keras_explr.tuning import search

        return search.hp_optimizer
    if name in ("EntanglementHyperModel", "PARAMETERIZATIONS"):
        from keras_explr.tuning import hypermodels

        return getattr(hypermodels, name)
    if name in ("SeedTuner", "GridResult", "run_grid", "run_random", "load_grid"):
        from keras_explr.tuning import study

        return getattr(study, name)
    raise AttributeError(f"module 'keras_explr.tuning' has no attribute {name!r}")
