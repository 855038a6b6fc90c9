"""PNG plots (matplotlib, headless).

Needs matplotlib (the ``demo`` extra: ``pip install 'keras-explr[demo]'``); without it each function raises an
``ImportError`` that says so, before it writes anything. Files are written atomically (a failure never leaves a
half-written file) with the permissions of any new file (0666 less the umask).
"""

import os
import tempfile

import numpy as np

from keras_explr import _optional


def _pyplot(purpose):
    """matplotlib.pyplot on the headless Agg backend, or an ImportError naming the `demo` extra."""
    matplotlib = _optional.require("matplotlib", "demo", purpose=purpose)
    matplotlib.use("Agg")
    return _optional.require("matplotlib.pyplot", "demo", purpose=purpose)


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


def _ordinary_mode():
    """The permissions of an ordinary new file: 0666 less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _save(fig, path):
    """Writes the figure atomically: a failure never leaves a half-written file at `path`.

    The temporary file `mkstemp` creates is private (0600); it gets an ordinary file's permissions before it
    takes the place of `path`.
    """
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1],
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, dpi=110, format=os.path.splitext(path)[1][1:] or "png")
        os.chmod(tmp, _ordinary_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finish(fig, plt, path, title):
    """Titles, lays out and writes the figure (atomically), and closes it."""
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
      path (str | os.PathLike): the PNG to write.
      runs (dict[str, tuple[Sequence[float], Sequence[float]]]): {label: (learning_rates,
        weight_norms)}, one value per step.
      title (str | None): optional figure title.
    """
    path = _check_path(path)
    _check_runs("runs", runs, pairs=True)
    return _draw_log_panels(path, [("learning rate", {k: v[0] for k, v in runs.items()}),
                                   ("norm of the trainable weights", {k: v[1] for k, v in runs.items()})],
                            title, "`keras_explr.plots.lr_and_norm`")


def learning_rates(path, runs, title=None):
    """Plots learning rates per step, on a log axis: {label: learning_rates}."""
    path = _check_path(path)
    _check_runs("runs", runs, pairs=False)
    return _draw_log_panels(path, [("learning rate", runs)], title, "`keras_explr.plots.learning_rates`")


def log_panels(path, panels, title=None):
    """Plots panels side by side, each a few series per optimizer step on a log y axis.

    Series are drawn against steps 1, 2, ...; NaN values leave gaps (zeros cannot be
    drawn on a log axis: replace them by NaN). `lr_and_norm` and `learning_rates`
    are two fixed layouts of this function; `keras-explr demo` draws three panels
    with it (learning rate, weight norm, relative output difference).

    Args:
      path (str | os.PathLike): the PNG to write (in an existing folder).
      panels (list[tuple[str, dict[str, Sequence[float]]]]): a non-empty list of
        ``(y_label, {label: values})`` pairs, one per panel; each ``values`` is a non-empty 1-D sequence of numbers.
      title (str | None): optional figure title.

    Returns:
      (str): `path`, as a string.

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> png = log_panels(os.path.join(folder, "lr.png"),
    ...                  [("learning rate", {"ExpLR": [0.1, 0.2, 0.4]}),
    ...                   ("weight norm", {"WD": [1.0, 1.0, 1.0], "ExpLR": [1.0, 1.4, 2.0]})])
    >>> os.path.getsize(png) > 0
    True
    """
    path = _check_path(path)
    if not isinstance(panels, (list, tuple)) or not panels:
        raise ValueError(f"`panels` must be a non-empty list of (y_label, {{label: values}}) pairs. "
                         f"Received: panels={panels!r}")
    for i, panel in enumerate(panels):
        if not (isinstance(panel, (list, tuple)) and len(panel) == 2 and isinstance(panel[0], str)):
            raise ValueError(f"`panels`[{i}] must be a (y_label, {{label: values}}) pair with a str y_label. "
                             f"Received: {panel!r}")
        _check_runs(f"panels[{i}]", panel[1], pairs=False)
    return _draw_log_panels(path, panels, title, "`keras_explr.plots.log_panels`")


def _draw_log_panels(path, panels, title, purpose):
    plt = _pyplot(purpose)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, runs) in zip(axes[0], panels):
        for (label, values), style in zip(runs.items(), ("-", "--", ":", "-.")):
            ax.plot(range(1, len(values) + 1), values, style, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    return _finish(fig, plt, path, title)


def scale_monitor(path, monitor, title=None):
    """Plots a `ScaleMonitor`'s curves per monitored variable, theory dashed.

    Panels: angular update per step (measured solid, predicted equilibrium
    dashed), weight norm (AdamW's predicted norm dashed), relative update,
    |cos(∇L, w)|, effective learning rate, and the clock t·ηλ; log axes.
    """
    path = _check_path(path)
    if not getattr(monitor, "records", None):
        raise ValueError("`monitor` must be a ScaleMonitor with records; this one has no records: "
                         f"run model.fit with it first. Received: monitor={monitor!r}")
    plt = _pyplot("`keras_explr.plots.scale_monitor`")
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
    return _finish(fig, plt, path, title)
