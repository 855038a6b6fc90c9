"""Shared timing for the benchmarks: seconds per step of `model.fit` after a warm-up epoch."""

import time


def seconds_per_step(model, x, y, epochs, batch):
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # warm-up: tracing and compilation
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    return (time.perf_counter() - start) / (epochs * (len(x) // batch))


def seconds_per_step_in_fit(model, x, y, epochs, batch, callbacks=()):
    """Seconds per step of epochs 2..epochs+1 of one `model.fit` (epoch 1 traces
    and compiles; callbacks that set up at train begin are set up once)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    model.fit(x, y, batch_size=batch, epochs=epochs + 1, verbose=0, callbacks=[*callbacks, timer])
    return sum(timer.times[1:]) / (epochs * (len(x) // batch))


def timing_parser(doc, epochs=2, batch=128, size=16):
    """The flags every step-time benchmark shares (each checked to be >= 1)."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="alternating runs per arm (median taken)")
    p.add_argument("--epochs", type=int, default=epochs, help="timed epochs per run")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--size", type=int, default=size, help="image side of the synthetic data")
    p.add_argument("--json", default=None, help="also write the results here")
    return p


def check_positive_flags(parser, args, flags):
    for flag in flags:
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be an integer >= 1. Received: {getattr(args, flag)}")


def alternating_medians(arms, repeats, time_arm):
    """Median of `time_arm(arm)` over `repeats` runs of each arm, the order of the
    arms alternating run to run (so that drifts in machine speed cancel)."""
    import statistics

    times = {arm: [] for arm in arms}
    for r in range(repeats):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            times[arm].append(time_arm(arm))
    return {arm: statistics.median(v) for arm, v in times.items()}
