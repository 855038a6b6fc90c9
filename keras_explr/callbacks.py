"""Callbacks that observe training runs."""

import keras
import numpy as np

from keras_explr._prenorm import EpsilonDominanceWarning  # noqa: F401  (public here)
from keras_explr.monitor import ScaleMonitor  # noqa: F401  (public here)


class FunctionRecorder(keras.callbacks.Callback):
    """Records the network's outputs on a fixed batch during `model.fit`.

    Function-space equivalence (the paper's sense) means the same f_θ at every
    step, with BatchNorm in training mode (batch statistics). The recorder
    evaluates the model in training mode through `stateless_call`, so BN's
    moving averages are left untouched. Outputs are kept as float64 numpy
    arrays.

    Args:
      x (ArrayLike): the probe batch.
      every_n_steps (int | None): also record every n optimizer steps (None: only at the
        start and at the end of every epoch).

    Outside `fit`, call `record` whenever a record is due.
    """

    def __init__(self, x, every_n_steps=None):
        super().__init__()
        self.x = x
        self.every_n_steps = every_n_steps
        self.steps, self.outputs = [], []
        self._step = 0

    def record(self, model=None):
        """Records the outputs now, e.g. in a training loop outside `fit`
        (`train_on_batch`, a custom loop with `optimizer.apply`) or after `fit`
        (whose end may replace the weights: ``use_ema`` puts the moving average
        in). `model`: the model to record (default: the one `fit` set)."""
        if model is not None:
            self.set_model(model)
        if self.model is None:
            raise ValueError("`model` is required outside `fit` (the recorder has no model yet).")
        self._record()

    def _record(self):
        m = self.model
        out, _ = m.stateless_call([v.value for v in m.trainable_variables],
                                  [v.value for v in m.non_trainable_variables],
                                  self.x, training=True)
        self.outputs.append(np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64))
        self.steps.append(self._step)

    def on_train_begin(self, logs=None):
        if not self.outputs:
            self._record()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_n_steps and self._step % self.every_n_steps == 0:
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        if not self.steps or self.steps[-1] != self._step:
            self._record()


def relative_differences(outputs_a, outputs_b):
    """‖a − b‖ / ‖a‖ for each pair of records (the function-space discrepancy per record).

    Args:
      outputs_a, outputs_b (list[np.ndarray]): two runs' records (`FunctionRecorder.outputs`).

    Returns:
      (list[float]): one relative difference per record.
    """
    if len(outputs_a) != len(outputs_b):
        raise ValueError(
            f"the runs recorded {len(outputs_a)} and {len(outputs_b)} outputs; "
            "they must record at the same steps"
        )
    return [float(np.linalg.norm(a - b) / np.linalg.norm(a)) for a, b in zip(outputs_a, outputs_b)]


def max_relative_difference(outputs_a, outputs_b):
    """max over records of ‖a − b‖ / ‖a‖ (the function-space discrepancy).

    Args:
      outputs_a, outputs_b (list[np.ndarray]): two runs' records (`FunctionRecorder.outputs`).

    Returns:
      (float): the largest relative difference.
    """
    return max(relative_differences(outputs_a, outputs_b))
