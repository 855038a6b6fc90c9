"""PNG plots (matplotlib, headless)."""

import os
import tempfile

import numpy as np


def _check_path(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise ValueError(f"`path` must be a file path. Received: path={path!r}") from None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"`path` must be in an existing folder; {folder!r} does not exist. "
                         f"Received: path={path!r}")
    if os.path.isdir(path):
        raise ValueError(f"`path` must be a file path, not a folder. Received: path={path!r}")
    return path


def _check_runs(name, runs, pairs):
    if not isinstance(runs, dict) or not runs:
        raise ValueError(f"`{name}` must be a non-empty dict {{label: values}}. Received: {name}={runs!r}")
    for label, values in runs.items():
        if pairs and not (isinstance(values, (tuple, list)) and len(values) == 2):
            raise ValueError(f"`{name}`[{label!r}] must be a (learning_rates, weight_norms) pair. "
                             f"Received: {values!r}")
        for v in (values if pairs else (values,)):
            try:
                arr = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                arr = None
            if arr is None or arr.ndim != 1 or arr.size == 0:
                raise ValueError(f"`{name}`[{label!r}]: each series must be a non-empty 1-D sequence "
                                 f"of numbers. Received: {values!r}")


def _save(fig, path):
    """Writes the figure atomically: a failure never leaves a half-written file at `path`."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1],
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, dpi=110, format=os.path.splitext(path)[1][1:] or "png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finish(fig, path, title):
    """Titles, lays out and writes the figure (atomically), and closes it."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    try:
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def lr_and_norm(path, runs, title=None):
    """Plots learning rate and weight norm per step, on log axes, for several runs.

    Args:
      path: the PNG to write.
      runs: {label: (learning_rates, weight_norms)}, one value per step.
      title: optional figure title.
    """
    path = _check_path(path)
    _check_runs("runs", runs, pairs=True)
    return _log_panels(path, [("learning rate", {k: v[0] for k, v in runs.items()}),
                              ("norm of the trainable weights", {k: v[1] for k, v in runs.items()})], title)


def learning_rates(path, runs, title=None):
    """Plots learning rates per step, on a log axis: {label: learning_rates}."""
    path = _check_path(path)
    _check_runs("runs", runs, pairs=False)
    return _log_panels(path, [("learning rate", runs)], title)


def _log_panels(path, panels, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, runs) in zip(axes[0], panels):
        for (label, values), style in zip(runs.items(), ("-", "--", ":", "-.")):
            ax.plot(range(1, len(values) + 1), values, style, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    return _finish(fig, path, title)


def scale_monitor(path, monitor, title=None):
    """Plots a `ScaleMonitor`'s curves per monitored variable, theory dashed.

    Panels: angular update per step (measured solid, predicted equilibrium
    dashed), weight norm (AdamW's predicted norm dashed), relative update,
    |cos(∇L, w)|, effective learning rate, and the clock t·ηλ; log axes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = _check_path(path)
    if not getattr(monitor, "records", None):
        raise ValueError("`monitor` must be a ScaleMonitor with records; this one has no records: "
                         f"run model.fit with it first. Received: monitor={monitor!r}")
    panels = [("angular_update", "predicted_angular_update", "angular update per step (rad)"),
              ("norm", "predicted_norm", "‖w‖"),
              ("relative_update", None, "‖Δw‖/‖w‖"),
              ("grad_cosine", None, "|cos(∇L, w)|"),
              ("effective_learning_rate", None, "effective LR"),
              ("clock", None, "clock t·ηλ")]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (quantity, predicted, label) in zip(axes.flat, panels):
        drawn = False
        for i, var in enumerate(monitor.monitored_paths):
            color = colors[i % len(colors)]
            steps, values = monitor.series(var, quantity)
            values = np.abs(values)
            if np.all(np.isnan(values)):
                continue
            ax.plot(steps, values, "-", color=color, lw=1.0, label=var)
            drawn = True
            if predicted is not None:
                s, p = monitor.series(var, predicted)
                if not np.all(np.isnan(p)):
                    ax.plot(s, p, "--", color=color, lw=1.5, label=f"{var} (theory)")
        if drawn and np.nanmin([np.nanmin(np.abs(monitor.series(v, quantity)[1]))
                                for v in monitor.monitored_paths]) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if drawn and quantity == "angular_update":
            ax.legend(fontsize=7)
    return _finish(fig, path, title)
