"""Cost of one study-v2 cell (3 seeds as towers, 14×14 MNIST-5k) by width and optimizer, and the
`keras-explr study --full` estimate built from it.

Each arm builds the cell's model (every seed a tower), trains it for `--steps` steps and evaluates it, as
`SeedTuner.run_trial` does; arms run round-robin, `--repeats` times, and the median is taken. A cell costs
overhead + steps × seconds-per-step; the two are separated by timing each arm at `--steps` and at
`--steps`/4. The estimate applies them to every cell of the full plan (384 steps per run).

    python benchmarks/study_v2_cost.py                 # writes benchmarks/results/study_v2_cost_cpu_tf.json
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner  # noqa: E402

from keras_explr.tuning import hypermodels, study_v2  # noqa: E402

ARMS = {"sgd_w1": ("sgd", 1), "adam_w1": ("adam", 1), "sgd_w2": ("sgd", 2), "sgd_w4": ("sgd", 4)}


def time_cell(optimizer, width, steps, data, plan):
    (x, y), (xv, yv) = data
    spe = -(-len(x) // plan.batch_size)
    epochs = max(1, steps // spe)
    hm = hypermodels.StudyHyperModel(optimizer=optimizer, rule="new", learning_rates=[0.1 if optimizer == "sgd" else 1e-3],
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
    args = p.parse_args(argv)
    if args.steps < 32 or args.repeats < 1:
        p.error("--steps must be >= 32 and --repeats >= 1")
    plan = study_v2.PLANS["full"]
    data = study_v2.load_data(plan.data)
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
    gs = study_v2.grids(plan, -(-len(data[0][0]) // plan.batch_size), data[0][0].shape[1:])
    total = 0.0
    cells = {}
    for name, _, hm in gs:
        arm = f"{hm.optimizer_name}_w{hm.filters[0] // plan.filters[0]}"
        arm = arm if arm in per else "sgd_w1"
        n = len(hm.learning_rates) * len(hm.weight_decays)
        c = per[arm]["overhead_seconds"] + per[arm]["seconds_per_step"] * hm.total_steps
        cells[name] = {"cells": n, "seconds_per_cell": c}
        total += n * c
    out = {"backend": keras.backend.backend(), "cpu_count": os.cpu_count(), "steps": args.steps,
           "repeats": args.repeats, "per_arm": per,
           "ratios_seconds_per_step_vs_sgd_w1": {a: per[a]["seconds_per_step"] / per["sgd_w1"]["seconds_per_step"]
                                                for a in per},
           "full_plan": {"grids": cells, "cells": sum(c["cells"] for c in cells.values()),
                         "estimated_seconds": total, "estimated_hours": total / 3600},
           "load_average": os.getloadavg()}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    for a, v in per.items():
        print(f"{a}: {v['seconds_per_step'] * 1e3:.1f} ms/step ({out['ratios_seconds_per_step_vs_sgd_w1'][a]:.2f}x sgd_w1), "
              f"overhead {v['overhead_seconds']:.1f} s per cell")
    print(f"full plan: {out['full_plan']['cells']} cells, estimated {out['full_plan']['estimated_hours']:.2f} h "
          f"(load average {out['load_average'][0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
