"""An independent float64 numpy simulation: no Keras, no keras_explr code path.

A two-layer network x → W1 → BN → tanh → W2 → BN → tanh → W3 (fixed head),
with batch normalisation over the batch and ε = 0, so the loss is exactly
invariant to the scale of W1 and of W2. `sgd` is the test suite's one SGD-with-momentum
simulation, in either convention with explicit per-step learning rates and momenta, for
any gradient function: schedules computed by keras_explr.theory are checked against
plain step-by-step training (here, in test_fuzz_theory and in test_schedules_warmup).
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


def sgd(grad, theta0, lrs, momentum, weight_decay=0.0, convention="paper", decoupled=0.0,
        buffer0=None, kicks=None):
    """SGD with momentum, step by step in float64, from the update rules of docs/math.md#update-rules.

    paper (torch): v ← μ_t v + g_t + λθ; θ ← θ − η_t v.
    keras: θ' = (1 − η_t w)θ; m ← μ_t m − η_t(g_t + λθ); θ ← θ' + m.

    `grad(t, θ)` is called once per step, in order; `momentum` a float or one value per
    step; `buffer0` the initial v (or m), zero by default; `kicks` {t: κ} (paper convention
    only) adds −κθ/η_t to the new buffer at step t (TEXP's correction, §3.3). Returns
    θ_0..θ_T as one array of shape (T + 1, *θ.shape).
    """
    if convention not in ("paper", "keras"):
        raise ValueError(f"`convention` must be 'paper' or 'keras'. Received: {convention!r}")
    if convention == "paper" and decoupled:
        raise ValueError("`decoupled` (Keras's θ' = (1 − η_t w)θ) needs convention='keras'")
    if convention == "keras" and kicks:
        raise ValueError("`kicks` are the paper convention's buffer correction: convention='paper'")
    lrs = np.asarray(lrs, dtype=np.float64)
    mom = np.broadcast_to(np.asarray(momentum, dtype=np.float64), lrs.shape)
    theta = np.array(theta0, dtype=np.float64)
    buf = np.zeros_like(theta) if buffer0 is None else np.array(buffer0, dtype=np.float64)
    out = [theta.copy()]
    for t, eta in enumerate(lrs):
        if convention == "paper":
            buf = mom[t] * buf + grad(t, theta) + weight_decay * theta
            if kicks and t in kicks:
                buf = buf - kicks[t] * theta / eta
            theta = theta - eta * buf
        else:
            g = grad(t, theta) + weight_decay * theta
            shrunk = (1.0 - eta * decoupled) * theta
            buf = mom[t] * buf - eta * g
            theta = shrunk + buf
        out.append(theta.copy())
    return np.array(out)


def _flat(P):
    return np.concatenate([P[k].ravel() for k in INV])


def _unflat(theta, P):
    P, i = dict(P), 0
    for k in INV:
        P[k] = theta[i:i + P[k].size].reshape(P[k].shape)
        i += P[k].size
    return P


def train(lrs, momentum, weight_decay=0.0, convention="paper", decoupled=0.0,
          buffer0=None, seed=0):
    """Runs len(lrs) SGD steps (`sgd`) on W1, W2; returns the outputs after every step.

    `buffer0`: the initial buffer as a function of the initial weights (elementwise).
    """
    P = init(seed)
    order = np.random.default_rng(123)

    def grad(t, theta):
        g = grads(_unflat(theta, P), order.choice(N, B, replace=False))
        return _flat(g)

    theta0 = _flat(P)
    thetas = sgd(grad, theta0, lrs, momentum, weight_decay, convention, decoupled,
                 None if buffer0 is None else buffer0(theta0))
    return [outputs(_unflat(theta, P)) for theta in thetas]


def discrepancy(a, b):
    return max(np.linalg.norm(x - y) / np.linalg.norm(x) for x, y in zip(a, b))
