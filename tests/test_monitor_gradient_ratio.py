"""ScaleMonitor's predicted equilibrium ‖g‖/‖w‖ (Defazio 2025; theory.equilibrium_gradient_ratio)."""

import math

import keras
import numpy as np
import pytest

from keras_explr import optimizers as K
from keras_explr import theory
from keras_explr.callbacks import ScaleMonitor
from tests.test_monitor import train


def test_formula_and_the_rise_after_an_lr_drop():
    # Without momentum: √(2λ/η) with d = ηλ.
    assert math.isclose(theory.equilibrium_gradient_ratio("sgd_coupled", 0.1, 0.1 * 5e-4),
                        math.sqrt(2 * 5e-4 / 0.1), rel_tol=1e-12)
    # An LR drop ×1/10 at fixed λ raises it √10×; at a fixed fraction d (ReparamWeightDecay, p=0) 10×.
    lam, d = 5e-4, 5e-5
    for rule in ("sgd_coupled", "sgd_decoupled"):
        r = [theory.equilibrium_gradient_ratio(rule, eta, eta * lam, momentum=0.9) for eta in (0.1, 0.01)]
        assert math.isclose(r[1] / r[0], math.sqrt(10), rel_tol=1e-12)
        r = [theory.equilibrium_gradient_ratio(rule, eta, d, momentum=0.9) for eta in (0.1, 0.01)]
        assert math.isclose(r[1] / r[0], 10, rel_tol=1e-12)
    with pytest.raises(ValueError, match="`rule`"):
        theory.equilibrium_gradient_ratio("adamw", 1e-3, 1e-4)
    with pytest.raises(ValueError, match="`learning_rate`"):
        theory.equilibrium_gradient_ratio("sgd_coupled", 0.0, 1e-4)


# Measured (TF, digits, 40 epochs, clock ≥ 0.5, RMS of ‖g‖/‖w‖ over the prediction): paper SGD
# (coupled, γ=0.9) 1.33 / 1.19 (conv0 / conv1); ReparamWeightDecay around Keras SGD 1.35 / 1.19.
def test_measured_gradient_ratio_is_near_the_prediction():
    monitor = ScaleMonitor(every_n_steps=5)
    train(K.SGD(0.1, momentum=0.9, weight_decay=5e-3), epochs=40, monitor=monitor)
    predicted = theory.equilibrium_gradient_ratio("sgd_coupled", 0.1, 0.1 * 5e-3, momentum=0.9)
    for path in monitor.monitored_paths:
        _, ratio = monitor.series(path, "grad_ratio")
        _, pred = monitor.series(path, "predicted_grad_ratio")
        _, clock = monitor.series(path, "clock")
        late = clock >= 0.5
        measured = float(np.sqrt(np.mean(ratio[late] ** 2)))
        assert pred[-1] == pytest.approx(predicted, rel=1e-7)
        assert 0.8 < measured / predicted < 1.5, (path, measured, predicted)
        # Control: the momentum-free √(2λ/η) is off by √(1/(1−γ)) ≈ 3.2.
        assert measured / math.sqrt(2 * 5e-3 / 0.1) < 0.5


def test_no_gradient_prediction_for_adaptive_optimizers():
    monitor = ScaleMonitor(every_n_steps=10)
    train(keras.optimizers.AdamW(1e-3, weight_decay=0.1), epochs=1, monitor=monitor)
    _, pred = monitor.series("conv0/kernel", "predicted_grad_ratio")
    _, ratio = monitor.series("conv0/kernel", "grad_ratio")
    assert np.all(np.isnan(pred)) and np.all(ratio > 0)
