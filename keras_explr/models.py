"""Reference networks: small BN convnets whose kernels are scale-invariant."""

import keras
from keras import layers


def bn_convnet(input_shape=(8, 8, 1), num_classes=10, filters=(8, 16),
               scale_invariant=True, bn_epsilon=1e-3, activation="relu",
               pooling="max", name="bn_convnet"):
    """A convnet of [Conv (no bias) → BatchNorm → ReLU] blocks, then GAP → Dense.

    With ``scale_invariant=True`` (the paper's setting, MATH.md §5.1) the BN
    layers have no affine parameters and the Dense head is frozen, so the loss
    is invariant to the scale of each conv kernel (up to BN's ε, which acts as
    ε/c² on a kernel scaled by c: pass a tiny ``bn_epsilon`` for float64
    round-off checks). Otherwise BN has γ/β and the head trains.

    ``activation`` and ``pooling`` ("max" or "average") choose the blocks'
    nonlinearity and downsampling. ReLU and max pooling have gradients that
    jump when a unit crosses zero or a pooling tie flips, so two float32 runs
    that differ by round-off can part by ~1e-3 at such an event; "tanh" with
    average pooling is smooth, which is what float32 comparisons need.

    The head outputs logits; train with ``from_logits=True``.
    """
    inputs = keras.Input(input_shape)
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(epsilon=bn_epsilon, center=not scale_invariant,
                                      scale=not scale_invariant, name=f"bn{i}")(x)
        x = layers.Activation(activation, name=f"act{i}")(x)
        if i < len(filters) - 1:
            pool = {"max": layers.MaxPooling2D, "average": layers.AveragePooling2D}[pooling]
            x = pool(2, padding="same", name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    head = layers.Dense(num_classes, name="head")
    outputs = head(x)
    head.trainable = not scale_invariant
    return keras.Model(inputs, outputs, name=name)
