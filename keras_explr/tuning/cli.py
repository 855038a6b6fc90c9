"""`keras-explr study`: the LR/WD entanglement study (`keras_explr.tuning.study`) on offline data.

Trains every grid of the plan as blocks of cells under `jax.vmap` (the JAX backend: the command
selects it when Keras is not imported yet), writes results.json after every arm (a run that is
stopped keeps what it finished, and a rerun resumes), then the KerasTuner comparison, the
predictions, report.md and the figures. Nothing here imports Keras until the command runs.
"""

import argparse
import os
import sys


def add_parser(subparsers):
    p = subparsers.add_parser(
        "study", help="the LR/WD entanglement study of the old and new weight-decay parameterizations",
        description="Study v3: grids in (η, λ_new) on an exactly scale-invariant BN-MLP (14x14 MNIST-5k), many "
                    "cells at once under jax.vmap, predictions P1-P6 with bootstrap intervals, KerasTuner "
                    "searches in both parameterizations. Runs on the JAX backend.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="4x6 grids, 2 seeds, seven arms, 2000/1000 steps (about 1.5 minutes on 2 idle CPU cores)")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="7x11 grids (3 decades of η, 5 of λ_new), 4 seeds, nine arms, 8000 constant-LR steps "
                           "(about 25 minutes on 2 idle CPU cores)")
    size.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help=argparse.SUPPRESS)  # the smallest complete study, for tests
    p.set_defaults(mode="quick")
    p.add_argument("--arms", default=None, help="comma-separated subset of the plan's arms")
    p.add_argument("--out", default="keras-explr-study", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap replicates")
    p.add_argument("--dry-run", action="store_true", help="print the plan (arms, grids, steps) and exit")
    p.add_argument("--report-only", action="store_true",
                   help="analyse what --out holds (results.json of a finished or stopped run) without training")
    p.set_defaults(func=_dispatch)
    return p


def _dispatch(args):
    if "keras" not in sys.modules and os.environ.get("KERAS_BACKEND", "jax") != "jax":
        print(f"keras-explr study: using the JAX backend (KERAS_BACKEND was {os.environ['KERAS_BACKEND']!r}).",
              file=sys.stderr)
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    import dataclasses

    from keras_explr.tuning import design, study

    plan = study.PLANS[args.mode]
    if args.n_boot is not None:
        if args.n_boot < 1:
            raise ValueError(f"`--n-boot` must be an integer >= 1. Received: {args.n_boot}")
        plan = dataclasses.replace(plan, n_boot=args.n_boot)
    arms = None
    if args.arms:
        arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
        bad = [a for a in arms if a not in plan.arms]
        if bad:
            raise ValueError(f"`--arms` must be among {', '.join(plan.arms)} (the --{plan.mode} plan). "
                             f"Received: {', '.join(bad)}")
    if args.dry_run:
        total = 0
        for arm in arms or plan.arms:
            _, rule, schedule, invariant, lrs, wds, steps, cks = study.arm_design(plan, arm)
            n = len(lrs) * len(wds) * len(plan.seeds)
            total += n * steps
            print(f"{arm}: {design.LABELS[arm]}; η {lrs[0]:.3g}..{lrs[-1]:.3g} ({len(lrs)}), λ_new "
                  f"{wds[0]:.3g}..{wds[-1]:.3g} ({len(wds)}), {len(plan.seeds)} seeds, {steps} steps, "
                  f"checkpoints {list(cks)}: {n} cells")
        print(f"total {total:,} cell-steps")
        return 0
    if args.report_only and args.overwrite:
        raise ValueError("`--report-only` reads the results in --out; it cannot be combined with --overwrite")
    study.run(plan, args.out, arms=arms, overwrite=args.overwrite, log=lambda m: print(m, flush=True),
              train=not args.report_only)
    print(f"Wrote {os.path.join(args.out, 'results.json')} and {os.path.join(args.out, 'report.md')}", flush=True)
    return 0
