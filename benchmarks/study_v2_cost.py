"""Cost of one study-v2 cell (3 seeds as towers, 14×14 MNIST-5k) by width and optimizer, and the
`keras-explr study --full` estimate built from it.

Each arm builds the cell's model (every seed a tower), trains it for `--steps` steps and evaluates it, as
`SeedTuner.run_trial` does; arms run round-robin, `--repeats` times, and the median is taken. A cell costs
overhead + steps × seconds-per-step; the two are separated by timing each arm at `--steps` and at
`--steps`/4. The estimate applies them to every cell of the quick and the full plans (transient columns
included: 128 and 384 steps per run).

    python benchmarks/study_v2_cost.py                 # writes benchmarks/results/study_v2_cost_cpu_tf.json
    python benchmarks/study_v2_cost.py --reuse benchmarks/results/study_v2_cost_cpu_tf.json
        # the plans' estimates again from the per-arm costs measured before (no training)
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_tuner

from keras_explr.tuning import hypermodels, study_v2

ARMS = {"sgd_w1": ("sgd", 1), "adam_w1": ("adam", 1), "sgd_w2": ("sgd", 2), "sgd_w4": ("sgd", 4)}


def time_cell(optimizer, width, steps, data, plan):
    (x, y), (xv, yv) = data
    spe = -(-len(x) // plan.batch_size)
    epochs = max(1, steps // spe)
    hm = hypermodels.StudyHyperModel(optimizer=optimizer, rule="new",
                                     learning_rates=[0.1 if optimizer == "sgd" else 1e-3],
                                     weight_decays=[1e-2], epochs=epochs, steps_per_epoch=spe,
                                     batch_size=plan.batch_size, input_shape=x.shape[1:],
                                     filters=tuple(width * f for f in plan.filters))
    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", hm.learning_rates[0])
    hp.Fixed("weight_decay_new", 1e-2)
    start = time.perf_counter()
    keras.backend.clear_session()
    model = hm.build(hp, seeds=plan.seeds)
    hm.fit(hp, model, x, y)
    for s in plan.seeds:
        hypermodels.evaluate(model.get_layer(f"seed{s}"), xv, yv)
    return time.perf_counter() - start, epochs * spe


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "study_v2_cost_cpu_tf.json"))
    p.add_argument("--reuse", default=None, help="a JSON this script wrote: reuse its per-arm costs, train nothing")
    p.add_argument("--also", default=None,
                   help="a JSON this script wrote earlier: the plans' estimates from its per-arm costs too (e.g. "
                        "measured at another load)")
    args = p.parse_args(argv)
    if args.steps < 32 or args.repeats < 1:
        p.error("--steps must be >= 32 and --repeats >= 1")
    data = study_v2.load_data(study_v2.PLANS["full"].data)
    if args.reuse:
        with open(args.reuse) as f:
            old = json.load(f)
        per = old["per_arm"]
        meta = {k: old[k] for k in ("backend", "cpu_count", "steps", "repeats", "load_average")}
        meta["per_arm_measured"] = old.get("per_arm_measured", "an earlier run of this script (--reuse)")
    else:
        per = measure(args, data)
        meta = {"backend": keras.backend.backend(), "cpu_count": os.cpu_count(), "steps": args.steps,
                "repeats": args.repeats, "load_average": os.getloadavg(), "per_arm_measured": "this run"}
    out = {**meta, "per_arm": per,
           "ratios_seconds_per_step_vs_sgd_w1": {a: per[a]["seconds_per_step"] / per["sgd_w1"]["seconds_per_step"]
                                                for a in per}}
    for mode in ("quick", "full"):
        out[f"{mode}_plan"] = estimate(study_v2.PLANS[mode], per, data)
    if args.also:
        with open(args.also) as f:
            other = json.load(f)
        out["also"] = {"per_arm_measured": other.get("per_arm_measured", args.also),
                       "load_average": other.get("load_average"), "per_arm": other["per_arm"],
                       **{f"{m}_plan_estimated_hours": estimate(study_v2.PLANS[m], other["per_arm"], data)[
                           "estimated_hours"] for m in ("quick", "full")}}
    quick = os.path.join(os.path.dirname(__file__), "results", "entanglement_study_v2_quick", "results.json")
    if os.path.exists(quick):  # the committed quick run: its measured cost against this estimate of it
        with open(quick) as f:
            q = json.load(f)["plan"]
        cells = sum(len(g["learning_rates"]) * len(g["weight_decays"]) for g in q["grids"].values())
        ratio = q["training_seconds"] / out["quick_plan"]["estimated_seconds"]
        out["quick_run_measured"] = {"cells": cells, "training_seconds": q["training_seconds"],
                                     "seconds_per_cell": q["training_seconds"] / cells,
                                     "measured_over_estimate": ratio,
                                     "full_plan_hours_scaled": out["full_plan"]["estimated_hours"] * ratio}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    for a, v in per.items():
        ratio = out['ratios_seconds_per_step_vs_sgd_w1'][a]
        print(f"{a}: {v['seconds_per_step'] * 1e3:.1f} ms/step ({ratio:.2f}x sgd_w1), "
              f"overhead {v['overhead_seconds']:.1f} s per cell")
    for mode in ("quick", "full"):
        e = out[f"{mode}_plan"]
        print(f"{mode} plan: {e['cells']} cells ({e['transient_cells']} transient), estimated "
              f"{e['estimated_hours']:.2f} h = {e['estimated_seconds'] / 60:.1f} min "
              f"(per-arm costs at load average {out['load_average'][0]:.1f} on {out['cpu_count']} CPUs)")
    if "also" in out:
        print(f"with the per-arm costs of {out['also']['per_arm_measured']}: quick "
              f"{out['also']['quick_plan_estimated_hours'] * 60:.1f} min, "
              f"full {out['also']['full_plan_estimated_hours']:.2f} h")
    if "quick_run_measured" in out:
        m = out["quick_run_measured"]
        print(f"committed quick run: {m['cells']} cells in {m['training_seconds'] / 60:.1f} min "
              f"({m['measured_over_estimate']:.2f}x its estimate): "
              f"full plan scaled {m['full_plan_hours_scaled']:.2f} h")


def measure(args, data):
    """Per-arm cost of one cell: overhead + steps × seconds-per-step (medians, arms round-robin)."""
    plan = study_v2.PLANS["full"]
    times = {a: {"long": [], "short": []} for a in ARMS}
    steps = {}
    for _ in range(args.repeats):  # round-robin
        for arm, (opt, w) in ARMS.items():
            for kind, n in (("long", args.steps), ("short", args.steps // 4)):
                t, steps[(arm, kind)] = time_cell(opt, w, n, data, plan)
                times[arm][kind].append(t)
    per = {}
    for arm in ARMS:
        tl, ts = statistics.median(times[arm]["long"]), statistics.median(times[arm]["short"])
        sps = (tl - ts) / (steps[(arm, "long")] - steps[(arm, "short")])
        per[arm] = {"seconds_long": tl, "seconds_short": ts, "seconds_per_step": sps,
                    "overhead_seconds": tl - sps * steps[(arm, "long")]}
    return per


def estimate(plan, per, data):
    """Every grid of `plan`: cells (transient ones too) × (overhead + steps × seconds-per-step of its arm)."""
    gs = study_v2.grids(plan, -(-len(data[0][0]) // plan.batch_size), data[0][0].shape[1:])
    total = 0.0
    cells = {}
    for name, _, hm in gs:
        arm = f"{hm.optimizer_name}_w{hm.filters[0] // plan.filters[0]}"
        arm = arm if arm in per else "sgd_w1"
        n = len(hm.learning_rates) * len(hm.weight_decays)
        c = per[arm]["overhead_seconds"] + per[arm]["seconds_per_step"] * hm.total_steps
        cells[name] = {"cells": n, "transient_cells": len(hm.learning_rates) * plan.transient_cols,
                       "steps": hm.total_steps, "seconds_per_cell": c}
        total += n * c
    return {"grids": cells, "cells": sum(c["cells"] for c in cells.values()),
            "transient_cells": sum(c["transient_cells"] for c in cells.values()),
            "estimated_seconds": total, "estimated_hours": total / 3600}


if __name__ == "__main__":
    main()
