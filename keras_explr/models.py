"""Reference networks: small BN convnets whose kernels are scale-invariant."""

import numbers

import keras
from keras import layers

from keras_explr import _checks


def _check_common(input_shape, num_classes, bn_epsilon, sizes_name, sizes):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if not shape or any(d is not None and (isinstance(d, bool) or not isinstance(d, numbers.Integral)
                                           or d < 1) for d in shape):
        raise ValueError("`input_shape` must be a tuple of integers >= 1. "
                         f"Received: input_shape={input_shape!r}")
    _checks.check_steps("num_classes", num_classes)
    _checks.check_non_negative("bn_epsilon", bn_epsilon)
    try:
        sizes = list(sizes)
    except TypeError:
        sizes = []
    if not sizes:
        raise ValueError(f"`{sizes_name}` must be a non-empty sequence of integers >= 1. "
                         f"Received: {sizes_name}={sizes!r}")
    for i, f in enumerate(sizes):
        _checks.check_steps(f"{sizes_name}[{i}]", f)


def _activation(activation):
    try:
        return keras.activations.get(activation)
    except (ValueError, TypeError) as e:
        raise ValueError("`activation` must be a Keras activation name or callable (e.g. 'relu', 'gelu', "
                         f"'tanh'). Received: activation={activation!r}") from e


def bn_convnet(input_shape=(8, 8, 1), num_classes=10, filters=(8, 16),
               scale_invariant=True, bn_epsilon=1e-3, activation="relu",
               pooling="max", synchronized=False, name="bn_convnet"):
    r"""A convnet of [Conv (no bias) → BatchNorm → ReLU] blocks, then GAP → Dense.

    With ``scale_invariant=True`` (the paper's setting, docs/math.md#paper-setting) the BN
    layers have no affine parameters and the Dense head is frozen, so the loss
    is invariant to the scale of each conv kernel (up to BN's \(\epsilon\), which acts as
    \(\epsilon/c^2\) on a kernel scaled by \(c\): pass a tiny ``bn_epsilon`` for float64
    round-off checks). Otherwise BN has \(\gamma/\beta\) and the head trains.

    ``activation`` and ``pooling`` ("max" or "average") choose the blocks'
    nonlinearity and downsampling. ReLU and max pooling have gradients that
    jump when a unit crosses zero or a pooling tie flips, so two float32 runs
    that differ by round-off can part by ~1e-3 at such an event; "tanh" with
    average pooling is smooth, which is what float32 comparisons need.

    ``synchronized=True`` makes BatchNormalization compute its statistics over
    the global batch under `tf.distribute` (as one device would).

    The head outputs logits; train with ``from_logits=True``.

    Args:
      input_shape (tuple[int, ...]): the shape of one input image, integers \(\ge 1\).
      num_classes (int): the number of logits, \(\ge 1\).
      filters (Sequence[int]): the channels of each block (a 2×2 pooling between blocks).
      scale_invariant (bool): BatchNorm without \(\gamma/\beta\) and a frozen head (the paper's setting).
      bn_epsilon (float): BatchNorm's \(\epsilon \ge 0\).
      activation (str | Callable): the nonlinearity after each BatchNorm.
      pooling (str): "max" or "average".
      synchronized (bool): BatchNorm statistics over the global batch under `tf.distribute`.
      name (str): the model's name.

    Returns:
      (keras.Model): the functional model.
    """
    _check_common(input_shape, num_classes, bn_epsilon, "filters", filters)
    if pooling not in ("max", "average"):
        raise ValueError(f"`pooling` must be 'max' or 'average'. Received: pooling={pooling!r}")
    act = _activation(activation)
    inputs = keras.Input(input_shape)
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(epsilon=bn_epsilon, center=not scale_invariant,
                                      scale=not scale_invariant, synchronized=synchronized,
                                      name=f"bn{i}")(x)
        x = layers.Activation(act, name=f"act{i}")(x)
        if i < len(filters) - 1:
            pool = {"max": layers.MaxPooling2D, "average": layers.AveragePooling2D}[pooling]
            x = pool(2, padding="same", name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    head = layers.Dense(num_classes, name="head")
    outputs = head(x)
    head.trainable = not scale_invariant
    return keras.Model(inputs, outputs, name=name)


def preact_resnet(input_shape=(8, 8, 1), num_classes=10, widths=(8, 16), blocks_per_stage=1,
                  scale_invariant=True, bn_epsilon=1e-3, activation="relu", name="preact_resnet"):
    r"""A small pre-activation ResNet (He et al. 2016; the paper's PreResNet shape).

    stem Conv → stages of [BN → ReLU → Conv → BN → ReLU → Conv] + shortcut → BN → ReLU
    → GAP → Dense. Convs have no bias; a stage's first block downsamples with
    stride 2, its shortcut a 1×1 conv of the pre-activated input. No single
    kernel is scale-invariant (the second conv adds into the residual stream),
    but the loss is invariant to scaling all convs together: the stream is
    homogeneous of degree 1 in them and the final BN removes it
    (`keras_explr.invariance.invariant_group` finds that group). With
    ``scale_invariant=True`` BN has no \(\gamma/\beta\) and the head is frozen.

    ``activation`` follows every BN (any activation keeps the invariance, since
    it sees BN's scale-free output). ReLU's derivative jumps at 0: two runs
    that agree to round-off part at the first step where one of the batch's
    pre-activations lies on opposite sides of 0 in the two runs (in float64,
    ~1e-8 apart, that happens after ~100 steps of this network on MNIST). A
    smooth activation ("gelu", "softplus", "tanh") has no such event.

    Args:
      input_shape (tuple[int, ...]): the shape of one input image, integers \(\ge 1\).
      num_classes (int): the number of logits, \(\ge 1\).
      widths (Sequence[int]): the channels of each stage.
      blocks_per_stage (int): residual blocks per stage, \(\ge 1\).
      scale_invariant (bool): BatchNorm without \(\gamma/\beta\) and a frozen head.
      bn_epsilon (float): BatchNorm's \(\epsilon \ge 0\).
      activation (str | Callable): the nonlinearity after each BatchNorm.
      name (str): the model's name.

    Returns:
      (keras.Model): the functional model.
    """
    _check_common(input_shape, num_classes, bn_epsilon, "widths", widths)
    _checks.check_steps("blocks_per_stage", blocks_per_stage)
    act = _activation(activation)

    def bn(tag):
        return layers.BatchNormalization(epsilon=bn_epsilon, center=not scale_invariant,
                                         scale=not scale_invariant, name=tag)

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem")(inputs)
    for s, width in enumerate(widths):
        for b in range(blocks_per_stage):
            tag = f"s{s}b{b}"
            stride = 2 if (s > 0 and b == 0) else 1
            pre = layers.Activation(act, name=f"{tag}_act1")(bn(f"{tag}_bn1")(x))
            if stride != 1 or x.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{tag}_short")(pre)
            else:
                shortcut = x
            h = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"{tag}_conv1")(pre)
            h = layers.Activation(act, name=f"{tag}_act2")(bn(f"{tag}_bn2")(h))
            h = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{tag}_conv2")(h)
            x = layers.Add(name=f"{tag}_add")([shortcut, h])
    x = layers.Activation(act, name="final_act")(bn("final_bn")(x))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    head = layers.Dense(num_classes, name="head")
    outputs = head(x)
    head.trainable = not scale_invariant
    return keras.Model(inputs, outputs, name=name)
