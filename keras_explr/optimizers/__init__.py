"""Optimizers with the paper's (PyTorch's) SGD convention, and wrappers that
own any Keras optimizer through its public surface.

One module per optimizer:

* `SGD` (`sgd.py`): v ← γv + g + λθ, θ ← θ − η_t v (coupled λ);
* `ReparamWeightDecay` (`reparam_weight_decay.py`): θ ← (1 − λ_new)θ − η_t·update;
* `Renormalize` (`renormalize.py`): Lemma 2's rescaling (θ/s, η/s²);
* `Partitioned` (`partitioned.py`): one optimizer for a group, one for the rest.
"""

from keras_explr.optimizers.partitioned import Partitioned
from keras_explr.optimizers.renormalize import Renormalize
from keras_explr.optimizers.reparam_weight_decay import ReparamWeightDecay
from keras_explr.optimizers.sgd import SGD

__all__ = ["SGD", "ReparamWeightDecay", "Renormalize", "Partitioned"]
