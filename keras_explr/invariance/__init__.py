"""Which variables is the loss scale-invariant in? Found structurally, confirmed numerically.

A loss is scale-invariant in a group S of variables when L(cS) = L(S) for
every c > 0 (Li & Arora, Lemma 1: then ⟨∇L, w⟩ = 0 and, with weight decay,
SGD on S is an exponential-LR schedule in disguise). "The loss" is the one
training minimizes: the data loss of the training-mode outputs **plus
`model.losses`**, so a variable with a `kernel_regularizer` is never invariant.

**The rule (structural pass).** Every tensor t of a functional model gets a
degree, an integer linear form in the memberships m_v ∈ {0, 1} of the
variables (t(cS) = c^d t(S), d = Σ a_v m_v):

* model inputs have degree 0; a kernel of a linear layer (Dense, EinsumDense,
  Conv*, Conv*Transpose, DepthwiseConv*, SeparableConv* with both its kernels,
  Embedding) adds m_kernel; the layer's bias must have the degree of the
  output it is added to (m_bias = d_out), so a biased conv before a
  normalization scales with its kernel *jointly*;
* known positively homogeneous layers pass the degree on: ReLU (only with
  ``max_value=None`` and ``threshold=0``; any ``negative_slope``), LeakyReLU,
  PReLU, pooling, padding, cropping, reshapes, dropout, up-sampling,
  Rescaling without offset; Add/Subtract/Average/Maximum/Minimum/Concatenate
  need equal degrees, Multiply/Dot add them;
* BatchNormalization, LayerNormalization, GroupNormalization,
  UnitNormalization, RMSNormalization map any degree to m_γ (0 unless γ is in
  the group, and then β must be too);
* MultiHeadAttention: the attention logits need query and key projections of
  degree 0 (the key bias is free: it adds q·b_k to all of a query's logits,
  which the softmax cancels); value and output projections add their kernels
  (biases must match);
* anything else (clipping ReLU6, thresholds, tanh, GELU, ``hard_sigmoid``,
  softmax, unknown or custom layers, Lambda) must see degree 0, unless a
  numeric check at c = 2^±3, 2^±10 on inputs spread over twelve decades shows
  f(cx) = c·f(x) (then it passes the degree on) or f(cx) = f(x) (degree 0);
  `register_rule` tells the analysis what a layer class does instead
  ("normalizing", "homogeneous", "opaque" or a rule of your own);
* every model output must have degree 0; a variable with a regularizer or a
  constraint (other than NonNeg) stays out, and a layer with an activity
  regularizer must output degree 0.

The group is the largest set of memberships satisfying every equation, found
by branch and bound with bound propagation on each connected set of
equations (`invariant_group`).

**Layout.** `rules` (what each layer does to degrees: the registry),
`graph` (one walk over the model's calls in Keras's node order, collecting
degrees and equations), `solver` (the largest group satisfying them; no
Keras), `numeric` (the numeric confirmation and checks), `api` (the public
functions below, each a query on one walk).

**The numeric confirmation and its tolerance.** The group is scaled by the
exact powers of two c = 2^±3, 2^±10 (2^±1, 2^±3 for float16), every
normalization ε set to the smallest normal number of float32 (float64 for
float64 layers), zero-valued variables (fresh biases, β) set to small random
values (a zero bias hides a non-invariance), and the training-mode outputs and
`model.losses` are compared with the unscaled ones. Multiplying by a power of
two is exact in binary floating point and commutes with every rounding, so an
invariant group changes nothing except through ε, whose relative effect
ε'/(c^{2d}σ²) is below the dtype's unit round-off u for every channel whose
variance σ² is not itself denormal, and is 0 for a constant channel. On
deterministic kernels the change is therefore exactly 0, whatever the batch;
non-deterministic reductions (some GPU kernels) add a few units of round-off.
A broken invariance, a term of relative size r, moves the output by
≈ r·(2^10 − 1). The tolerance is τ = √u of the least precise compute dtype
(float64 1.5e-8, float32 3.5e-4, bfloat16 8.8e-2, float16 3.1e-2): it is set
by the dtype alone, and since ε is taken out and nothing is estimated from
the batch, the decisions do not depend on the batch size.

Example:

>>> import keras
>>> from keras_explr import invariance
>>> inp = keras.Input((8,))
>>> h = keras.layers.Dense(16, name="d1")(inp)          # biased: scales with its kernel
>>> h = keras.layers.BatchNormalization()(h)
>>> h = keras.layers.ReLU(max_value=6.0)(h)             # ReLU6 sees degree 0: harmless here
>>> out = keras.layers.Dense(3, name="head")(h)
>>> model = keras.Model(inp, out)
>>> [v.path for v in invariance.invariant_group(model)]
['d1/kernel', 'd1/bias']
"""

from keras_explr._prenorm import epsilon_margin  # the ε trap: σ²/ε of every normalization input
from keras_explr.invariance.api import (Confirmation, Decision, confirm_group, default_candidates, explain,
                                        invariant_group, normalization_input_degrees, output_degree,
                                        reaches_normalization, scale_invariant_variables, tensor_degree)
from keras_explr.invariance.numeric import SCALES, SCALES_HALF, tolerance
from keras_explr.invariance.rules import (HOMOGENEOUS, LINEAR, MERGE_EQUAL, NORMALIZATION, NOT_HOMOGENEOUS, Degree,
                                          LayerCall, register_rule)

__all__ = [
    "epsilon_margin", "invariant_group", "confirm_group", "scale_invariant_variables", "explain", "register_rule",
    "output_degree", "tensor_degree", "normalization_input_degrees", "default_candidates",
    "reaches_normalization", "tolerance", "Decision", "Confirmation", "Degree", "LayerCall",
    "NORMALIZATION", "LINEAR", "HOMOGENEOUS", "MERGE_EQUAL", "NOT_HOMOGENEOUS", "SCALES", "SCALES_HALF",
]
