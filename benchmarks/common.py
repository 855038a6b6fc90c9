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
