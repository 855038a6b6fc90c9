"""KerasTuner and the LR/WD entanglement study.

`keras_explr.tuning.search.hp_optimizer` gives a user's own ``build_model(hp)`` the learning-rate /
weight-decay search space in either parameterization. The study (`keras-explr study`) lives in
`design` (arms and predictions, fixed before any run), `study` (plans and runner), `block` (many
cells of a grid trained at once under `jax.vmap`, through the package's optimizers), `hypermodels`
(the KerasTuner searches of the study), `report` (the one analysis: metrics, intervals, figures,
report.md) and `cli`. Every submodule loads on first use; `design` and `report` import no framework.
"""

_LAZY = {"block", "design", "hypermodels", "study", "report", "cli", "search"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"keras_explr.tuning.{name}")
    if name in ("hp_optimizer",):
        from keras_explr.tuning import search

        return search.hp_optimizer
    raise AttributeError(f"module 'keras_explr.tuning' has no attribute {name!r}")
