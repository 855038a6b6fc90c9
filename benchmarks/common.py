"""Shared timing for the benchmarks: seconds per step of `model.fit` after a warm-up epoch."""

import time


def seconds_per_step(model, x, y, epochs, batch):
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # warm-up: tracing and compilation
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    return (time.perf_counter() - start) / (epochs * (len(x) // batch))
