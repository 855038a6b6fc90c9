"""PNG plots (matplotlib, headless)."""


def lr_and_norm(path, runs, title=None):
    """Plots learning rate and weight norm per step, on log axes, for several runs.

    Args:
      path: the PNG to write.
      runs: {label: (learning_rates, weight_norms)}, one value per step.
      title: optional figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_norm) = plt.subplots(1, 2, figsize=(11, 4))
    for (label, (lr, norm)), style in zip(runs.items(), ("-", "--", ":", "-.")):
        steps = range(1, len(lr) + 1)
        ax_lr.plot(steps, lr, style, label=label)
        ax_norm.plot(steps, norm, style, label=label)
    for ax, name in ((ax_lr, "learning rate"), (ax_norm, "norm of the trainable weights")):
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
