"""PNG plots (matplotlib, headless)."""


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
