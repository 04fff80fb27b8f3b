"""The one training loop of the heads (train.py) and of fine-tuning (finetune.py): Adam with a
cosine learning-rate schedule over shuffled mini-batches, seeded."""

from __future__ import annotations

import numpy as np


def fit(loss, params: list, lrs: list[float], n: int, epochs: int, batch: int, seed: int, key, batch_of):
    """Minimise `loss(params, *batch_of(indices), key)` over `epochs` shuffled passes of `n` samples.

    `lrs` holds each parameter's peak learning rate (0 freezes it); the rate follows a cosine from
    it to 0 over all steps. Returns the trained parameters (JAX arrays).
    """
    import jax
    import jax.numpy as jnp

    steps = max(1, n // batch)
    total = steps * epochs
    m = [jnp.zeros_like(w) for w in params]
    v = [jnp.zeros_like(w) for w in params]

    @jax.jit
    def step(p, m, v, args, t, key):
        g = jax.grad(loss)(p, *args, key)
        m = [0.9 * a + 0.1 * b for a, b in zip(m, g)]
        v = [0.999 * a + 0.001 * b * b for a, b in zip(v, g)]
        p = [w - lr * 0.5 * (1 + jnp.cos(jnp.pi * t / total)) * (a / (1 - 0.9 ** (t + 1)))
             / (jnp.sqrt(b / (1 - 0.999 ** (t + 1))) + 1e-8)
             for w, lr, a, b in zip(p, lrs, m, v)]
        return p, m, v

    rng = np.random.default_rng(seed)
    t = 0
    for _ in range(epochs):
        perm = rng.permutation(n)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            key, sub = jax.random.split(key)
            params, m, v = step(params, m, v, batch_of(idx), jnp.float32(t), sub)
            t += 1
    return params
