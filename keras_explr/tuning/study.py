"""The study runner: KerasTuner's own oracles and trials, every seed recorded.

`SeedTuner` is a `keras_tuner.Tuner` whose `run_trial` trains the trial's
(η, λ) once per seed, in a fixed seed order, and reports every seed's
validation accuracy and cross-entropy as separate trial metrics
(``accuracy_seed{s}``, ``loss_seed{s}``) next to the objective ``score``, the
mean accuracy. `executions_per_trial` would average the seeds away; here they
live in the oracle's trial records (``trial_*/trial.json``), so they survive
an interruption and come back from a chief/worker search too.

Resuming: with ``overwrite=False`` KerasTuner reloads the finished trials and
sends the trial that was running when the process died back to the queue, so
a rerun finishes the study without repeating a finished trial. Each run also
appends a line per trial start and end to ``executions.jsonl`` in the project
folder (the audit log the tests read).

Distributed: set KERASTUNER_TUNER_ID ("chief" / "tuner0", "tuner1", ...),
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT and run the same grid in
every process (``python -m keras_explr.tuning.study SPEC.json``); the chief
serves the oracle, the workers run the trials.
"""

import dataclasses
import functools
import glob
import json
import os
import sys
import time

import keras
import numpy as np

from keras_explr import _checks
from keras_explr.tuning import hypermodels
from keras_explr._optional import require

keras_tuner = require("keras_tuner", "tuner", "keras_explr.tuning")

OBJECTIVE = "score"


def _seed_list(seeds):
    s = [seeds] if isinstance(seeds, int) else list(seeds)
    if not s or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in s) \
            or len(set(s)) != len(s):
        raise ValueError(f"`seeds` must be distinct integers >= 0. Received: seeds={seeds!r}")
    return [int(v) for v in s]


class Progress:
    """Trials done / total with an ETA, printed as trials finish.

    The ETA is (time so far in this process / trials finished in this process)
    × trials left; trials already finished before a resume count as done.
    """

    def __init__(self, total, done=0, stream=None, label="study"):
        self.total = _checks.check_steps("total", total, minimum=0)
        self.done = int(done)
        self.run_here = 0
        self.start = time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self.label = label

    def advance(self, note=""):
        self.done += 1
        self.run_here += 1
        elapsed = time.perf_counter() - self.start
        left = max(0, self.total - self.done)
        eta = elapsed / self.run_here * left
        self.stream.write(f"[{self.label}] {self.done}/{self.total} trials "
                          f"({100 * self.done / max(1, self.total):.0f}%), elapsed {_clock(elapsed)}, "
                          f"ETA {_clock(eta)}{'  ' + note if note else ''}\n")
        self.stream.flush()


def _clock(seconds):
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class SeedTuner(keras_tuner.Tuner):
    """A KerasTuner `Tuner` that runs every trial once per seed and keeps each seed.

    Args:
      oracle: a KerasTuner oracle (GridSearch, RandomSearch, ...) with the
        objective ``keras_tuner.Objective("score", "max")``.
      hypermodel: an `EntanglementHyperModel` (anything with `build`/`fit`).
      seeds: the seeds; seed s sets `keras.utils.set_random_seed(s)` before the
        model is built, so it fixes the initialization and the data order, and
        seed s of every cell shares them (paired comparisons).
      progress: optional `Progress`, advanced after each finished trial.
      **kwargs: `keras_tuner.Tuner`'s (directory, project_name, overwrite).
    """

    def __init__(self, oracle, hypermodel, seeds=(0,), progress=None, **kwargs):
        self.seeds = _seed_list(seeds)
        self.progress = progress
        super().__init__(oracle, hypermodel, **kwargs)

    def _log(self, event, trial, **extra):
        line = json.dumps({"event": event, "trial_id": trial.trial_id, "tuner_id": self.tuner_id,
                           "pid": os.getpid(), "time": time.time(),
                           "values": trial.hyperparameters.values, **extra})
        fd = os.open(os.path.join(self.project_dir, "executions.jsonl"),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def run_trial(self, trial, x, y, validation_data, verbose=0):
        """Trains trial.hyperparameters once per seed; returns every seed's metrics."""
        self._log("start", trial)
        x_val, y_val = validation_data
        hp = trial.hyperparameters
        out, accs = {}, []
        t0 = time.perf_counter()
        if isinstance(self.hypermodel, hypermodels.StudyHyperModel):  # every seed in one model
            keras.backend.clear_session()
            model = self.hypermodel.build(hp, seeds=self.seeds)
            keras.utils.set_random_seed(self.seeds[0])  # the data order
            self.hypermodel.fit(hp, model, x, y)
            for seed in self.seeds:
                acc, loss = hypermodels.evaluate(model.get_layer(f"seed{seed}"), x_val, y_val)
                out[f"accuracy_seed{seed}"] = acc
                out[f"loss_seed{seed}"] = loss
                accs.append(acc)
            lr, wd = float(hp.get("learning_rate")), float(hp.get("weight_decay_new"))
            out["clock"] = self.hypermodel.equilibration_clock(lr, wd)
            out[OBJECTIVE] = float(np.mean(accs))
            out["seconds"] = time.perf_counter() - t0
            self._log("end", trial, metrics=out)
            return out
        for seed in self.seeds:
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            model = self.hypermodel.build(hp)
            self.hypermodel.fit(hp, model, x, y)
            acc, loss = hypermodels.evaluate(model, x_val, y_val)
            out[f"accuracy_seed{seed}"] = acc
            out[f"loss_seed{seed}"] = loss
            accs.append(acc)
        out[OBJECTIVE] = float(np.mean(accs))
        out["seconds"] = time.perf_counter() - t0
        self._log("end", trial, metrics=out)
        return out

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.progress is not None:
            v = trial.hyperparameters.values
            if "weight_decay_new" in v:
                clock = self.hypermodel.equilibration_clock(v["learning_rate"], v["weight_decay_new"])
                self.progress.advance(f"{os.path.basename(self.project_dir)}: η={v['learning_rate']:.3g} "
                                      f"λ_new={v['weight_decay_new']:.3g} clock={clock:.1f}")
            else:
                self.progress.advance(f"η={v.get('learning_rate', float('nan')):.3g} "
                                      f"λ={v.get('weight_decay', float('nan')):.3g}")


# ------------------------------------------------------------------ results
@dataclasses.dataclass
class GridResult:
    """Per-seed results of one study grid.

    `accuracy` and `loss` have shape (n_lr, n_wd, n_seeds) for a grid (NaN
    where a cell has not run); for a random search they have shape
    (n_trials, n_seeds) and `trial_values` lists each trial's (η, λ) in the
    order the trials started.
    """
    name: str
    kind: str
    learning_rates: list
    weight_decays: list
    seeds: list
    accuracy: np.ndarray
    loss: np.ndarray
    trial_values: list
    config: dict
    seconds: float

    @property
    def complete(self):
        return bool(np.isfinite(self.accuracy).all())

    def as_dict(self):
        def arr(a):
            return [None if not np.isfinite(v) else float(v) for v in a.ravel()] if a.ndim == 1 else [
                arr(b) for b in a]

        return {"name": self.name, "kind": self.kind, "learning_rates": self.learning_rates,
                "weight_decays": self.weight_decays, "seeds": self.seeds,
                "accuracy": arr(self.accuracy), "loss": arr(self.loss),
                "trial_values": self.trial_values, "config": self.config, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d):
        def arr(a):
            return np.array(a, dtype="float64") if a is not None else None

        fix = {k: arr([[[np.nan if v is None else v for v in c] for c in r] for r in d[k]]
                      if d["kind"] == "grid" else [[np.nan if v is None else v for v in t] for t in d[k]])
               for k in ("accuracy", "loss")}
        return cls(d["name"], d["kind"], d["learning_rates"], d["weight_decays"], d["seeds"],
                   fix["accuracy"], fix["loss"], d["trial_values"], d["config"], d["seconds"])


def _read_trials(project_dir):
    """Finished trials of a KerasTuner project, from its trial_*/trial.json files."""
    trials = []
    for fname in sorted(glob.glob(os.path.join(project_dir, "trial_*", "trial.json"))):
        with open(fname) as f:
            t = json.load(f)
        if t.get("status") != "COMPLETED":
            continue
        metrics = {}
        for name, hist in t["metrics"]["metrics"].items():
            obs = hist["observations"]
            if obs:
                metrics[name] = float(obs[-1]["value"][0])
        trials.append({"trial_id": t["trial_id"], "values": t["hyperparameters"]["values"],
                       "metrics": metrics})
    return trials


def load_grid(project_dir, hypermodel, seeds, name="grid", kind="grid", seconds=0.0):
    """Assembles a `GridResult` from a (finished or partial) KerasTuner project."""
    seeds = _seed_list(seeds)
    trials = _read_trials(project_dir)

    def per_seed(t, key):
        return [t["metrics"].get(f"{key}_seed{s}", np.nan) for s in seeds]

    if kind == "grid":
        lrs, wds = hypermodel.learning_rates, hypermodel.weight_decays
        diagonal = hypermodel.diagonal is not None
        if diagonal:  # one column; λ of row i is c/η_i (λ_new = c for "new")
            wds = [hypermodel.hyperparameter_values(_fixed_hp(lr))[1] for lr in lrs]
        shape = (len(lrs), 1 if diagonal else len(wds), len(seeds))
        acc, loss = np.full(shape, np.nan), np.full(shape, np.nan)
        for t in trials:
            i = lrs.index(float(t["values"]["learning_rate"]))
            wd_key = "weight_decay_new" if "weight_decay_new" in t["values"] else "weight_decay"
            j = 0 if diagonal else wds.index(float(t["values"][wd_key]))
            acc[i, j], loss[i, j] = per_seed(t, "accuracy"), per_seed(t, "loss")
        values = []
    else:
        trials.sort(key=lambda t: t["trial_id"])
        acc = np.array([per_seed(t, "accuracy") for t in trials]).reshape(-1, len(seeds))
        loss = np.array([per_seed(t, "loss") for t in trials]).reshape(-1, len(seeds))
        values = [[float(t["values"]["learning_rate"]), float(t["values"]["weight_decay"])] for t in trials]
        lrs, wds = hypermodel.lr_range, hypermodel.wd_range
    return GridResult(name, kind, list(lrs) if lrs else None, list(wds) if wds else None, seeds,
                      acc, loss, values, hypermodel.config(), seconds)


def _fixed_hp(lr):
    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", lr)
    return hp


class ResumableGridSearchOracle(keras_tuner.oracles.GridSearchOracle):
    """KerasTuner's `GridSearchOracle`, able to resume.

    KerasTuner 1.4.8's grid oracle keeps its walk through the grid (a linked
    list of trial ids in grid order, and the trials whose successors are still
    to be generated) in memory only, so a search reloaded with
    ``overwrite=False`` fails on its first new trial with a KeyError
    (keras-team/keras-tuner#1055, open). On reload
    this rebuilds both from the reloaded trials: every known trial, sorted in
    the oracle's own grid order, each one's successor still to be checked (the
    oracle skips a successor that already exists, so nothing runs twice).
    """

    def set_state(self, state):
        super().set_state(state)
        ids = [tid for tid in self.start_order if tid in self.trials]
        order = functools.cmp_to_key(lambda a, b: self._compare(self.trials[a].hyperparameters.values,
                                                                self.trials[b].hyperparameters.values))
        ids.sort(key=order)
        linked = type(self._ordered_ids)()
        for tid in ids:
            linked.insert(tid)
        self._ordered_ids = linked
        self._populate_next = list(ids)


def _oracle(kind, max_trials, seed):
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    if kind == "grid":
        return ResumableGridSearchOracle(objective=objective, max_trials=max_trials, seed=seed)
    if kind == "random":
        return keras_tuner.oracles.RandomSearchOracle(objective=objective, max_trials=max_trials, seed=seed)
    raise ValueError(f"`kind` must be 'grid' or 'random'. Received: kind={kind!r}")


def training_seconds(project_dir):
    """Sum of the finished trials' training times (every seed), in seconds."""
    return float(sum(t["metrics"].get("seconds", 0.0) for t in _read_trials(project_dir)))


def completed_trials(project_dir):
    """How many trials of a project have finished (0 for a new project)."""
    return len(_read_trials(project_dir))


def run_grid(hypermodel, data, seeds, directory, project_name, kind="grid", max_trials=None,
             overwrite=False, oracle_seed=0, progress=None):
    """Runs (or resumes) one KerasTuner search and returns its `GridResult`.

    Args:
      hypermodel: an `EntanglementHyperModel`: grid values for kind="grid"
        (GridSearch over every (η, λ) cell), ranges for kind="random"
        (RandomSearch, log-uniform, `max_trials` trials).
      data: ((x, y), (x_val, y_val)).
      seeds: the seeds run in every trial.
      directory, project_name: where KerasTuner keeps the project.
      overwrite: False resumes a project that exists (finished trials are
        kept and not rerun); True starts over.
      oracle_seed: the oracle's seed (RandomSearch draws).
      progress: optional `Progress`.

    In chief/worker mode (KERASTUNER_* variables set) the chief returns when
    every trial has finished and the workers when the oracle stops them.
    """
    seeds = _seed_list(seeds)
    if kind == "grid":
        if hypermodel.learning_rates is None or (hypermodel.weight_decays is None and hypermodel.diagonal is None):
            raise ValueError("kind='grid' needs a hypermodel with explicit `learning_rates` and `weight_decays`")
        n = _n_cells(hypermodel)
        max_trials = n if max_trials is None else _checks.check_steps("max_trials", max_trials)
    else:
        if hypermodel.lr_range is None or hypermodel.wd_range is None:
            raise ValueError("kind='random' needs a hypermodel with `lr_range` and `wd_range`")
        max_trials = _checks.check_steps("max_trials", max_trials)
    (x, y), (x_val, y_val) = data
    tuner = SeedTuner(_oracle(kind, max_trials, oracle_seed), hypermodel, seeds=seeds, progress=progress,
                      directory=directory, project_name=project_name, overwrite=overwrite)
    t0 = time.perf_counter()
    tuner.search(x, y, validation_data=(x_val, y_val), verbose=0)
    return load_grid(tuner.project_dir, hypermodel, seeds, name=project_name, kind=kind,
                     seconds=time.perf_counter() - t0)


# ------------------------------------------------ the command's arguments
def plan_from_args(plans, args, arms, default_arms):
    """(plan, arms) of `keras-explr study` (v1 and v2): a copy of ``plans[args.mode]`` with ``--data`` and
    ``--n-boot`` applied, and the arms of ``--arms`` (comma-separated, each one of `arms`) or
    `default_arms`; a ValueError naming the argument, before anything runs."""
    plan = dataclasses.replace(plans[args.mode])
    if args.data:
        plan.data = args.data
    if args.n_boot is not None:
        if args.n_boot < 0:
            raise ValueError(f"`--n-boot` must be an integer >= 0. Received: {args.n_boot}")
        plan.n_boot = args.n_boot
    chosen = tuple(default_arms)
    if args.arms:
        chosen = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    bad = [a for a in chosen if a not in arms]
    if bad or not chosen:
        raise ValueError(f"`--arms` must be a comma-separated subset of {tuple(arms)}. Received: {args.arms!r}")
    return plan, chosen


# ------------------------------------------------ one grid from a JSON spec
def hypermodel_from_spec(spec):
    """An `EntanglementHyperModel` from a spec's "hypermodel" dict."""
    return hypermodels.EntanglementHyperModel(**spec["hypermodel"])


def run_spec(spec_path):
    """Runs the grid described by a JSON file (used by chief/worker processes).

    The spec: {"hypermodel": {...EntanglementHyperModel arguments...},
    "data": {"name": "digits", "num_train": null}, "seeds": [...],
    "directory": ..., "project_name": ..., "kind": "grid"|"random",
    "max_trials": null, "oracle_seed": 0}. Prints the finished-trial count.
    """
    with open(spec_path) as f:
        spec = json.load(f)
    from keras_explr.data import load

    data = load(spec.get("data", {}).get("name", "digits"), spec.get("data", {}).get("num_train"))
    hm = hypermodel_from_spec(spec)
    res = run_grid(hm, data, spec["seeds"], spec["directory"], spec["project_name"],
                   kind=spec.get("kind", "grid"), max_trials=spec.get("max_trials"),
                   overwrite=False, oracle_seed=spec.get("oracle_seed", 0),
                   progress=Progress(spec.get("max_trials") or _n_cells(hm), label=os.environ.get(
                       "KERASTUNER_TUNER_ID", "tuner0")))
    print(json.dumps({"tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "tuner0"),
                      "completed": int(np.isfinite(res.accuracy[..., 0]).sum())}))
    return 0


def _n_cells(hm):
    if not hm.learning_rates:
        return 0
    return len(hm.learning_rates) * (1 if hm.diagonal is not None else len(hm.weight_decays))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m keras_explr.tuning.study SPEC.json")
    sys.exit(run_spec(sys.argv[1]))
