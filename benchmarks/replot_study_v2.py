"""Redraws study v2's heat maps from its committed results.json (the v2 code is gone; its results stay as history).

Plain arm names, one colour scale over the full range of the cells each figure shows (v2's own figures clipped it
to the best 75 %), iso-score contours, the best cell starred. Writes over the PNGs the v2 reports link.

    python benchmarks/replot_study_v2.py
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
NAMES = {
    "constant_sgd": "SGD, constant LR",
    "step_sgd_old": "SGD step decay, standard rule",
    "step_sgd_new": "SGD step decay, λ_new constant",
    "cosine_sgd_old": "SGD cosine, standard rule",
    "cosine_sgd_new": "SGD cosine, λ_new constant",
    "adam_adam_old": "AdamW, cosine",
    "adam_adam_new": "ReparamWeightDecay(Adam), cosine",
    "user_sgd": "users' net (γ/β, trainable head), constant LR",
    "width2_sgd": "width ×2, constant LR",
    "width4_sgd": "width ×4, constant LR",
}
FIGURES = {
    "constant": ["constant_sgd"], "step": ["step_sgd_old", "step_sgd_new"],
    "cosine": ["cosine_sgd_old", "cosine_sgd_new"], "adam": ["adam_adam_old", "adam_adam_new"],
    "user": ["user_sgd"], "transfer": ["constant_sgd", "width2_sgd", "width4_sgd"],
}


def edges(v):
    v = np.asarray(v, float)
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def figure(path, grids, mode):
    A = {k: -np.asarray(g["loss"], float).mean(-1) for k, g in grids.items()}
    vmin = min(float(np.nanmin(a)) for a in A.values())
    vmax = max(float(np.nanmax(a)) for a in A.values())
    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 4.2), squeeze=False, layout="constrained")
    for ax, (k, g) in zip(axes[0], grids.items()):
        x, y = np.log10(g["learning_rates"]), np.log10(g["weight_decays"])
        a = A[k]
        im = ax.pcolormesh(edges(x), edges(y), a.T, vmin=vmin, vmax=vmax, cmap="viridis")
        cs = ax.contour(x, y, a.T, levels=np.linspace(vmin, vmax, 10)[1:-1], colors="white", linewidths=0.7)
        ax.clabel(cs, fmt="%.2f", fontsize=6)
        i, j = np.unravel_index(np.nanargmax(a), a.shape)
        ax.plot(x[i], y[j], "*", color="red", ms=12, mec="k")
        ax.set_title(NAMES[k], fontsize=9)
        ax.set_xlabel("log10 η_0")
        ax.set_ylabel("log10 λ_new at η_0")
    fig.colorbar(im, ax=axes, label="− validation cross-entropy (full range)")
    steps = 384 if mode == "full" else 128
    fig.suptitle(f"Study v2 ({mode}, history): BatchNorm ε = 1e-3, {steps} steps per run; superseded by study v3",
                 fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    for mode in ("quick", "full"):
        folder = os.path.join(ROOT, "results", f"entanglement_study_v2_{mode}")
        with open(os.path.join(folder, "results.json")) as f:
            res = json.load(f)["results"]
        for name, arms in FIGURES.items():
            png = os.path.join(folder, f"study_v2_{mode}_{name}_neg_loss.png")
            if all(a in res for a in arms) and os.path.exists(png):
                figure(png, {a: res[a] for a in arms}, mode)
                print("wrote", os.path.relpath(png, ROOT))


if __name__ == "__main__":
    main()
