"""An independent float64 numpy simulation: no Keras, no keras_explr code path.

A two-layer network x → W1 → BN → tanh → W2 → BN → tanh → W3 (fixed head),
with batch normalisation over the batch and ε = 0, so the loss is exactly
invariant to the scale of W1 and of W2. SGD runs in either convention with
explicit per-step learning rates and momenta, so schedules computed by
keras_explr.theory can be checked against plain step-by-step training.
"""

import numpy as np

D, H, K, N, B = 10, 12, 4, 256, 32
_rng = np.random.default_rng(7)
X = _rng.standard_normal((N, D))
Y = np.argmax(X @ _rng.standard_normal((D, K)) + 0.5 * _rng.standard_normal((N, K)), 1)
INV = ("W1", "W2")


def init(seed=0):
    r = np.random.default_rng(seed)
    return {"W1": r.standard_normal((D, H)) / np.sqrt(D),
            "W2": r.standard_normal((H, H)) / np.sqrt(H),
            "W3": r.standard_normal((H, K)) / np.sqrt(H)}


def _bn(z):
    zc = z - z.mean(0)
    s = np.sqrt((zc ** 2).mean(0))
    return zc / s, s


def _forward(P, x):
    z1, s1 = _bn(x @ P["W1"])
    h1 = np.tanh(z1)
    z2, s2 = _bn(h1 @ P["W2"])
    h2 = np.tanh(z2)
    return h2 @ P["W3"], (x, z1, s1, h1, z2, s2, h2)


def _bn_back(dz, z, s):
    return (dz - dz.mean(0) - z * (dz * z).mean(0)) / s


def grads(P, idx):
    logits, (x, z1, s1, h1, z2, s2, h2) = _forward(P, X[idx])
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(idx)), Y[idx]] -= 1.0
    dl = p / len(idx)
    da2 = _bn_back((dl @ P["W3"].T) * (1 - h2 ** 2), z2, s2)
    da1 = _bn_back((da2 @ P["W2"].T) * (1 - h1 ** 2), z1, s1)
    return {"W1": x.T @ da1, "W2": h1.T @ da2}


def outputs(P):
    return _forward(P, X)[0]


def train(lrs, momentum, weight_decay=0.0, convention="paper", decoupled=0.0,
          buffer0=None, seed=0):
    """Runs len(lrs) SGD steps on W1, W2; returns the outputs after every step.

    paper: v ← μ_t v + g + λθ; θ ← θ − η_t v.
    keras: θ' = (1 − η_t w)θ; m ← μ_t m − η_t(g + λθ); θ ← θ' + m.
    `momentum` may be a float or one value per step.
    """
    P = init(seed)
    lrs = np.asarray(lrs, dtype=np.float64)
    mom = np.broadcast_to(np.asarray(momentum, dtype=np.float64), lrs.shape)
    buf = {k: np.zeros_like(P[k]) if buffer0 is None else buffer0(P[k]) for k in INV}
    order = np.random.default_rng(123)
    outs = [outputs(P)]
    for t, eta in enumerate(lrs):
        g = grads(P, order.choice(N, B, replace=False))
        for k in INV:
            d = g[k] + weight_decay * P[k]
            if convention == "paper":
                buf[k] = mom[t] * buf[k] + d
                P[k] = P[k] - eta * buf[k]
            else:
                buf[k] = mom[t] * buf[k] - eta * d
                P[k] = (1.0 - eta * decoupled) * P[k] + buf[k]
        outs.append(outputs(P))
    return outs


def discrepancy(a, b):
    return max(np.linalg.norm(x - y) / np.linalg.norm(x) for x, y in zip(a, b))
