"""PNG plots (matplotlib, headless)."""

import numpy as np


def lr_and_norm(path, runs, title=None):
    """Plots learning rate and weight norm per step, on log axes, for several runs.

    Args:
      path: the PNG to write.
      runs: {label: (learning_rates, weight_norms)}, one value per step.
      title: optional figure title.
    """
    return _log_panels(path, [("learning rate", {k: v[0] for k, v in runs.items()}),
                              ("norm of the trainable weights", {k: v[1] for k, v in runs.items()})], title)


def learning_rates(path, runs, title=None):
    """Plots learning rates per step, on a log axis: {label: learning_rates}."""
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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scale_monitor(path, monitor, title=None):
    """Plots a `ScaleMonitor`'s curves per monitored variable, theory dashed.

    Panels: angular update per step (measured solid, predicted equilibrium
    dashed), weight norm (AdamW's predicted norm dashed), relative update,
    |cos(∇L, w)|, effective learning rate, and the clock t·ηλ; log axes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not monitor.records:
        raise ValueError("The ScaleMonitor has no records: run model.fit with it first.")
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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
