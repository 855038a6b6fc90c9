"""Bad input to invariant_group / confirm_group: a ValueError naming the argument, before any state changes."""

import keras
import numpy as np
import pytest

from keras_explr import invariance, models

NAN = float("nan")


def _model():
    keras.utils.set_random_seed(0)
    return models.bn_convnet(scale_invariant=False)


CASES = [
    ("invariant_group-model-string", lambda m: invariance.invariant_group("model"), "model",
     "functional or Sequential"),
    ("confirm_group-model-string", lambda m: invariance.confirm_group("model", ["x"]), "model",
     "functional or Sequential"),
    ("confirm_group-variables-empty", lambda m: invariance.confirm_group(m, []), "variables", "non-empty list"),
    ("confirm_group-variables-none", lambda m: invariance.confirm_group(m, None), "variables", "non-empty list"),
    ("confirm_group-variables-unknown-path", lambda m: invariance.confirm_group(m, ["nope/kernel"]), "variables",
     r"not among them: \['nope/kernel'\]"),
    ("confirm_group-variables-foreign", lambda m: invariance.confirm_group(m, [keras.Variable(1.0, name="w")]),
     "variables", "trainable variables of `model`"),
    ("confirm_group-rtol-zero", lambda m: invariance.confirm_group(m, ["conv0/kernel"], rtol=0), "rtol",
     "finite number > 0"),
    ("confirm_group-rtol-nan", lambda m: invariance.confirm_group(m, ["conv0/kernel"], rtol=NAN), "rtol",
     "finite number > 0"),
    ("confirm_group-sample_batch-string", lambda m: invariance.confirm_group(m, ["conv0/kernel"], "abc"),
     "sample_batch", "array"),
    ("confirm_group-sample_batch-wrong-channels",
     lambda m: invariance.confirm_group(m, ["conv0/kernel"], np.zeros((2, 8, 8, 3), "float32")),
     "sample_batch", "array"),
    ("confirm_group-not-invariant", lambda m: invariance.confirm_group(m, ["head/kernel"]), "variables",
     r"head/kernel"),
    ("output_degree-model-string", lambda m: invariance.output_degree("model", []), "model",
     "functional or Sequential"),
]


@pytest.mark.parametrize("call, arg, valid", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_and_leaves_the_model_alone(call, arg, valid):
    m = _model()
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in m.weights]
    eps = [layer.epsilon for layer in m.layers if hasattr(layer, "epsilon")]
    with pytest.raises(ValueError, match=valid) as info:
        call(m)
    assert arg in str(info.value) or arg == "variables"
    for b, v in zip(before, m.weights):
        np.testing.assert_array_equal(b, keras.ops.convert_to_numpy(v))
    assert eps == [layer.epsilon for layer in m.layers if hasattr(layer, "epsilon")]
