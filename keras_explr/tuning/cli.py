"""`keras-explr study`: the LR/WD entanglement study (three arms) on offline data.

Arm 1 (constant LR): a GridSearch over (η, λ_old) with the paper's SGD, read in
both coordinates (λ_new = ηλ_old: the same runs), then a diagonal sweep along
ηλ = const through the best cell. Arm 2 (step decay): GridSearches of the
standard rule (λ_old, decay η_t·λ_old) and of λ_new constant. Arm 3: RandomSearch
in log-uniform boxes of equal log-area, (η, λ_old) and (η, λ_new).

Every seed of every trial is kept (`keras_explr.tuning.study`), the study
resumes where it stopped unless `--overwrite` is given, and the outputs are
results.json (every per-seed result and every metric), heat-map PNGs and
report.md.
"""

import argparse
import dataclasses
import json
import os
import time

import numpy as np


@dataclasses.dataclass
class Plan:
    """One study's sizes. Grid axes are log10 ranges (lo, hi, points)."""
    mode: str
    data: str
    epochs: int
    lr_grid: tuple            # log10 η: (lo, hi, n)
    wd_old_grid: tuple        # log10 λ_old
    step_lr_grid: tuple       # log10 η_0 (arm 2)
    step_wd_old_grid: tuple   # log10 λ_old (arm 2, standard)
    wd_new_grid: tuple        # log10 λ_new (arm 2, λ_new constant)
    seeds: tuple
    step_seeds: tuple
    diag_lr: tuple            # log10 η of the diagonal sweep
    diag_seeds: tuple
    search_trials: int
    search_lr: tuple          # (lo, hi) of η in the search boxes
    search_wd_old: tuple      # (lo, hi) of λ_old; λ_new box = this × √(η_lo η_hi)
    filters: tuple = (16, 32, 64)
    momentum: float = 0.9
    batch_size: int = 128
    n_boot: int = 2000
    x_search: float = 0.01    # M5: within 1 accuracy point of the best
    delta: dict = dataclasses.field(default_factory=lambda: {"accuracy": 0.05, "neg_loss": 0.1})
    num_train: int = None     # None: every training image

    @staticmethod
    def axis(spec):
        lo, hi, n = spec
        return [float(v) for v in 10 ** np.linspace(lo, hi, int(n))]


# Quick: ≈ 90 short runs (~5–8 minutes on 2 cores); full: ≈ 260 runs (~35–40 minutes).
# λ_old grids sit where a pilot (6×6, 30 epochs, digits) put the ridge: λ*_old ≈ 10^-1.5 at η = 0.01
# down to ≈ 10^-4 at η = 10 (per-step decay ηλ ≈ 10^-4 to 10^-3.5 along it).
PLANS = {
    "quick": Plan("quick", "digits", epochs=15, lr_grid=(-2, 1, 4), wd_old_grid=(-4.75, -1.25, 4),
                  step_lr_grid=(-2, 1, 4), step_wd_old_grid=(-4.75, -1.25, 4), wd_new_grid=(-5.5, -2, 4),
                  seeds=(0, 1), step_seeds=(0,), diag_lr=(-2, 1, 4), diag_seeds=(0, 1),
                  search_trials=8, search_lr=(1e-2, 10.0), search_wd_old=(10 ** -4.75, 10 ** -1.25)),
    "full": Plan("full", "digits", epochs=25, lr_grid=(-2, 1, 6), wd_old_grid=(-4.75, -1.25, 6),
                 step_lr_grid=(-2, 1, 5), step_wd_old_grid=(-4.75, -1.25, 5), wd_new_grid=(-5.5, -2, 5),
                 seeds=(0, 1, 2), step_seeds=(0, 1), diag_lr=(-2.5, 1, 8), diag_seeds=(0, 1),
                 search_trials=20, search_lr=(1e-2, 10.0), search_wd_old=(10 ** -4.75, 10 ** -1.25)),
    # The whole pipeline at the smallest size that still has 3 rows for M1 (tests).
    "smoke": Plan("smoke", "digits", epochs=1, lr_grid=(-2, 1, 3), wd_old_grid=(-4.5, -1.5, 3),
                  step_lr_grid=(-2, 1, 3), step_wd_old_grid=(-4.5, -1.5, 3), wd_new_grid=(-5, -2, 3),
                  seeds=(0, 1), step_seeds=(0, 1), diag_lr=(-2, 1, 3), diag_seeds=(0,),
                  search_trials=3, search_lr=(1e-2, 10.0), search_wd_old=(10 ** -4.5, 10 ** -1.5), n_boot=200,
                  num_train=256),
}


def add_parser(subparsers):
    p = subparsers.add_parser(
        "study", help="KerasTuner study of LR/WD entanglement in the old and new WD parameterizations",
        description="Study v2 (default): keras_explr.tuning.study_v2 -- six arms on 14x14 MNIST-5k, every cell "
                    "past 3 equilibration times. --v1: the first three-arm study on digits (this module).")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="3x4 grids (2 transient + 2 equilibrated λ_new columns), 3 seeds, arms constant/step "
                           "(about 5-12 minutes on 2 CPU cores)")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="every arm, 4x5 grids (3 transient + 2 equilibrated λ_new columns), 3 seeds, 384 steps "
                           "(about 1.2-1.4 hours on 2 quiet CPU cores)")
    size.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help=argparse.SUPPRESS)  # the smallest complete study, for tests
    p.set_defaults(mode="quick")
    p.add_argument("--v1", action="store_true", help="the first study (digits, three arms)")
    p.add_argument("--data", choices=("mnist14", "digits", "mnist5k"), default=None,
                   help="offline data set (default: mnist14 for v2, digits for --v1)")
    p.add_argument("--arms", default=None,
                   help="comma-separated arms: v2 constant, step, cosine, adam, user, transfer; "
                        "--v1 constant, scheduled, search")
    p.add_argument("--out", default="keras-explr-study", help="output folder (the KerasTuner projects live in it)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap replicates")
    p.add_argument("--transient-cols", type=int, default=None,
                   help="v2: λ_new columns run below each grid's clock floor (default: 2 quick, 3 full)")
    p.add_argument("--dry-run", action="store_true",
                   help="v2: print the plan (grids, learning rates, λ_new and the clock of every column) and exit")
    p.set_defaults(func=_dispatch)
    return p


def _dispatch(args):
    if args.v1:
        if args.data == "mnist14":
            raise ValueError("`--data mnist14` is a study v2 data set; --v1 takes digits or mnist5k")
        return run(args)
    from keras_explr.tuning import study_v2

    return study_v2.run(args)


ARMS = ("constant", "scheduled", "search")


def _hm(plan, steps_per_epoch, input_shape, **kw):
    from keras_explr.tuning import hypermodels

    return hypermodels.EntanglementHyperModel(
        momentum=plan.momentum, epochs=plan.epochs, steps_per_epoch=steps_per_epoch,
        batch_size=plan.batch_size, input_shape=input_shape, filters=plan.filters, **kw)


def _grids(plan, arms, steps_per_epoch, input_shape):
    """[(name, hypermodel, seeds, kind, max_trials)] of every search but the diagonal."""
    lrs, old, new = Plan.axis(plan.lr_grid), Plan.axis(plan.wd_old_grid), Plan.axis(plan.wd_new_grid)
    g = []
    if "constant" in arms:
        g.append(("constant_old", _hm(plan, steps_per_epoch, input_shape, parameterization="old",
                                      learning_rates=lrs, weight_decays=old), plan.seeds, "grid", None))
    if "scheduled" in arms:
        slrs, sold = Plan.axis(plan.step_lr_grid), Plan.axis(plan.step_wd_old_grid)
        g.append(("step_old", _hm(plan, steps_per_epoch, input_shape, parameterization="old", schedule="step",
                                  learning_rates=slrs, weight_decays=sold), plan.step_seeds, "grid", None))
        g.append(("step_new_constant", _hm(plan, steps_per_epoch, input_shape, parameterization="new",
                                           schedule="step", learning_rates=slrs, weight_decays=new),
                  plan.step_seeds, "grid", None))
    if "search" in arms:
        center = float(np.sqrt(plan.search_lr[0] * plan.search_lr[1]))
        new_box = (plan.search_wd_old[0] * center, plan.search_wd_old[1] * center)
        g.append(("search_old", _hm(plan, steps_per_epoch, input_shape, parameterization="old",
                                    lr_range=plan.search_lr, wd_range=plan.search_wd_old), (0,), "random",
                  plan.search_trials))
        g.append(("search_new", _hm(plan, steps_per_epoch, input_shape, parameterization="new",
                                    lr_range=plan.search_lr, wd_range=new_box), (0,), "random",
                  plan.search_trials))
    return g


def _cells(hm, kind, max_trials):
    from keras_explr.tuning import study

    return max_trials if kind == "random" else study._n_cells(hm)


def run(args):
    import keras

    from keras_explr.tuning import report, study

    plan, arms = study.plan_from_args(PLANS, args, ARMS, default_arms=ARMS)
    arms = list(arms)
    from keras_explr.data import load

    data = load(plan.data, plan.num_train)
    (x, y), (xv, yv) = data
    steps_per_epoch = -(-len(x) // plan.batch_size)
    os.makedirs(args.out, exist_ok=True)
    tuner_dir = os.path.join(args.out, "tuner")
    plan_record = {**dataclasses.asdict(plan), "arms": arms, "backend": keras.backend.backend(),
                   "n_train": int(len(x)), "n_val": int(len(xv)), "steps_per_epoch": steps_per_epoch,
                   "total_steps": plan.epochs * steps_per_epoch}
    plan_path = os.path.join(args.out, "plan.json")
    plan_json = json.loads(json.dumps(plan_record))
    if os.path.exists(plan_path) and not args.overwrite:
        with open(plan_path) as f:
            if json.load(f) != plan_json:
                raise ValueError(f"`--out` {args.out} holds a study with another plan; use --overwrite "
                                 "or another --out")
    if args.overwrite and os.path.isdir(tuner_dir):
        import shutil

        shutil.rmtree(tuner_dir)
    with open(plan_path, "w") as f:
        json.dump(plan_json, f, indent=1)

    grids = _grids(plan, arms, steps_per_epoch, x.shape[1:])
    n_diag = int(plan.diag_lr[2]) if "constant" in arms else 0
    total = sum(_cells(hm, kind, mt) for _, hm, _, kind, mt in grids) + n_diag
    done = sum(study.completed_trials(os.path.join(tuner_dir, name)) for name, *_ in grids)
    if "constant" in arms:
        done += study.completed_trials(os.path.join(tuner_dir, "diagonal"))
    print(f"keras-explr study --{plan.mode}: {total} trials ({done} already finished), "
          f"backend {keras.backend.backend()}, data {plan.data} ({len(x)} train, {len(xv)} val), "
          f"{plan.epochs} epochs x {steps_per_epoch} steps per run; output in {args.out}", flush=True)
    progress = study.Progress(total, done=done)
    t0 = time.perf_counter()
    results = {}
    for name, hm, seeds, kind, max_trials in grids:
        results[name] = study.run_grid(hm, data, seeds, tuner_dir, name, kind=kind, max_trials=max_trials,
                                       overwrite=False, oracle_seed=0, progress=progress)
        if name == "constant_old":  # the diagonal through the best cell of the constant-LR grid
            r = results[name]
            A = np.nanmean(report.score_of(r, "neg_loss"), axis=-1)
            A = np.where(np.isfinite(A), A, -np.inf)
            i, j = np.unravel_index(np.argmax(A), A.shape)
            c = r.learning_rates[i] * r.weight_decays[j]
            diag = _hm(plan, steps_per_epoch, x.shape[1:], parameterization="old",
                       learning_rates=Plan.axis(plan.diag_lr), diagonal=c)
            results["diagonal"] = study.run_grid(diag, data, plan.diag_seeds, tuner_dir, "diagonal",
                                                 overwrite=False, progress=progress)
    plan_record["seconds"] = sum(study.training_seconds(os.path.join(tuner_dir, k)) for k in results)
    wall = time.perf_counter() - t0
    failed = {k: int((~np.isfinite(r.accuracy)).any(axis=-1).sum()) for k, r in results.items()}
    if any(failed.values()):
        print(f"Trials without results (failed): {failed}. Rerun to retry them.", flush=True)
    print("Analysing (bootstrap) ...", flush=True)
    analyses = [report.analyze(results, plan_record, score=s, n_boot=plan.n_boot) for s in report.SCORES]
    pngs = []
    for a in analyses:
        pngs += [os.path.basename(p) for p in report.study_plots(args.out, results, a)]
    if "search" in analyses[0]:
        pngs.append(os.path.basename(report.search_plot(os.path.join(args.out, "search_cost.png"), analyses[0])))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(_clean({"plan": plan_record, "results": {k: r.as_dict() for k, r in results.items()},
                          "analysis": analyses, "failed_trials": failed}), f, indent=1)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(report.markdown(analyses, results, plan_record, pngs))
    print(f"Wrote {os.path.join(args.out, 'results.json')}, {os.path.join(args.out, 'report.md')} and "
          f"{len(pngs)} PNGs. This run: {wall / 60:.1f} min; training time of all trials: "
          f"{plan_record['seconds'] / 60:.1f} min.", flush=True)
    _summary(analyses[0])
    return 0


def _clean(o):
    """JSON without NaN/inf (`report.clean_json`)."""
    from keras_explr.tuning.report import clean_json

    return clean_json(o)


def _summary(a):
    def s(m):
        ci = m.get("ci")
        return f"{m['slope']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    if "constant" in a:
        print(f"constant LR ({a['score']}): s_old = {s(a['constant']['old']['M1_ridge_slope'])}, "
              f"s_new (same runs) = {s(a['constant']['new_same_runs']['M1_ridge_slope'])}")
    if "scheduled" in a:
        print(f"step decay ({a['score']}): standard s = {s(a['scheduled']['standard']['M1_ridge_slope'])}, "
              f"λ_new constant s = {s(a['scheduled']['new_constant']['M1_ridge_slope'])}")
    if "search" in a:
        print(f"search: p(hit) old = {a['search']['old']['cost']['p']['value']:.2f}, "
              f"new = {a['search']['new']['cost']['p']['value']:.2f}")
