"""Fine-tuning the last two blocks of the 7-block trunk together with the head (JAX, CPU).

`features[0:5]` stays frozen: its output (block 4, 32×16×16 at a 128×128 input) and the pooled
block-3 feature are computed once with ONNX Runtime (`maps`). Blocks 5 and 6 (expand 1×1 to 192,
depthwise 3×3, project 1×1 to 32, residual add; batch norm folded) start from the ImageNet
weights and train with a learning rate ten times smaller than the head's. The pooled features
are computed in JAX exactly as `backbone.trunk_nodes` emits them (checked against ONNX Runtime
in `check`), so `inject` can write the trained blocks back into the weights (batch norm set to
the identity) and the usual export builds the graph.
"""

from __future__ import annotations

import math

import numpy as np

import adam
import backbone
import synth

BLOCKS = (5, 6)
FEATURES = ["mm:b3", "mm:b6", "mm:d6", "g3:b6", "rw:b6"]
SIDE = synth.INPUT // 8  # block 4..6 maps (stride 8)
CONV_LR = 2e-4
HEAD_LR = 2e-3


def maps(weights, x_u8, threads, normalise, session, batch=256):
    """(block-4 output as NHWC float32, pooled `mm:b3`) for every sample."""
    from onnx import TensorProto, helper

    nodes, inits, feat, _ = backbone.trunk_nodes(weights, BLOCKS[0], ["mm:b3"], side=synth.INPUT)
    out = f"f{BLOCKS[0] - 1}.pw.y"
    graph = helper.make_graph(
        nodes, "frozen_part", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, synth.INPUT, synth.INPUT])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 32, SIDE, SIDE]),
         helper.make_tensor_value_info(feat, TensorProto.FLOAT, ["N", 48])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = session(model.SerializeToString(), threads)
    b4, p3 = [], []
    for i in range(0, len(x_u8), batch):
        a, p = sess.run([out, feat], {"input": normalise(x_u8[i:i + batch])})
        b4.append(a.transpose(0, 2, 3, 1))
        p3.append(p)
    return np.ascontiguousarray(np.concatenate(b4)), np.concatenate(p3)


def initial_conv(weights) -> list[np.ndarray]:
    """Blocks 5 and 6 with batch norm folded, as matrices: [We, be, Kd (3,3,C), bd, Wp, bp] each."""
    conv = []
    for i in BLOCKS:
        p = f"features.{i}.conv"
        ke, be = backbone._fold(weights, f"{p}.0.0", f"{p}.0.1")
        kd, bd = backbone._fold(weights, f"{p}.1.0", f"{p}.1.1")
        kp, bp = backbone._fold(weights, f"{p}.2", f"{p}.3")
        conv += [ke[:, :, 0, 0].T.copy(), be, kd[:, 0].transpose(1, 2, 0).copy(), bd, kp[:, :, 0, 0].T.copy(), bp]
    return conv


def _pooled(conv, b4):
    """JAX: blocks 5 and 6 on NHWC block-4 maps, then FEATURES[1:] in trunk_nodes' order."""
    import jax.numpy as jnp

    x, d = b4, None
    for j in range(len(BLOCKS)):
        we, be, kd, bd, wp, bp = conv[6 * j:6 * j + 6]
        h = jnp.clip(x @ we + be, 0, 6)
        hp = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
        d = jnp.clip(sum(hp[:, dy:dy + SIDE, dx:dx + SIDE, :] * kd[dy, dx] for dy in range(3) for dx in range(3))
                     + bd, 0, 6)
        x = x + d @ wp + bp
    n, c = x.shape[0], x.shape[3]
    step = SIDE // 3  # trunk_nodes' 3×3 grid: cells of SIDE - 2 * step at stride step
    cell = SIDE - 2 * step
    grid = jnp.stack([x[:, i * step:i * step + cell, j * step:j * step + cell].mean((1, 2))
                      for i in range(3) for j in range(3)], 2).reshape(n, -1)
    rows_mean = x.mean(2).transpose(0, 2, 1).reshape(n, -1)
    rows_max = x.max(2).transpose(0, 2, 1).reshape(n, -1)
    return jnp.concatenate([x.mean((1, 2)), x.max((1, 2)), d.mean((1, 2)), d.max((1, 2)), grid, rows_mean,
                            rows_max], 1)


def features(conv, b4, p3, batch=512) -> np.ndarray:
    """The pooled FEATURES of every sample under `conv` (numpy)."""
    import jax

    f = jax.jit(_pooled)
    return np.concatenate([np.concatenate([p3[i:i + batch], np.asarray(f(conv, b4[i:i + batch]))], 1)
                           for i in range(0, len(b4), batch)])


def fit(weights, b4, p3, y, n_labels: int, epochs: int, seed: int, hidden: int = 128, batch: int = 256,
        wd: float = 1e-4) -> dict:
    """Train blocks 5-6 and an MLP head on the given samples. Returns {"conv": [...], "head": {...}}
    with the head in train.head_probs' format (standardisation fixed from the initial features)."""
    import jax
    import jax.numpy as jnp

    conv0 = [jnp.asarray(v) for v in initial_conv(weights)]
    f0 = features(conv0, b4, p3)
    mu, sd = f0.mean(0).astype(np.float32), (f0.std(0) + 1e-3).astype(np.float32)
    n, d = f0.shape
    key = jax.random.PRNGKey(seed)
    k1, k2 = jax.random.split(key)
    head = [jax.random.normal(k1, (d, hidden)) * math.sqrt(2.0 / d), jnp.zeros(hidden),
            jax.random.normal(k2, (hidden, n_labels)) * math.sqrt(1.0 / hidden), jnp.zeros(n_labels)]
    params = list(conv0) + head
    nc = len(conv0)
    photo = y == 0
    cw = (np.where(photo, 0.5 / max(1, photo.sum()), 0.5 / max(1, (~photo).sum())) * n).astype(np.float32)
    lrs = [CONV_LR] * nc + [HEAD_LR] * len(head)

    def logits(p, xb, pb, key, train):
        f = (jnp.concatenate([pb, _pooled(p[:nc], xb)], 1) - mu) / sd
        if train:
            f = f * jax.random.bernoulli(key, 0.9, f.shape) / 0.9  # input dropout, as train_head
        return jax.nn.relu(f @ p[nc] + p[nc + 1]) @ p[nc + 2] + p[nc + 3]

    def loss(p, xb, pb, yb, wb, key):
        lp = jax.nn.log_softmax(logits(p, xb, pb, key, True))
        return -(jnp.take_along_axis(lp, yb[:, None], 1)[:, 0] * wb).mean() + wd * sum(
            (q ** 2).sum() for q in p[nc::2])

    params = adam.fit(loss, params, lrs, n, epochs, batch, seed, key,
                      lambda idx: (b4[idx], p3[idx], y[idx], cw[idx]))
    conv = [np.asarray(q, np.float32) for q in params[:nc]]
    return {"conv": conv, "head": {"hidden": hidden, "mu": mu, "sd": sd,
                                   "params": [np.asarray(q, np.float32) for q in params[nc:]]}}


def inject(weights: dict, conv: list[np.ndarray]) -> dict:
    """A copy of `weights` with blocks 5 and 6 replaced by `conv` (batch norm as the identity, so
    backbone._fold returns the trained kernels and biases unchanged)."""
    out = dict(weights)
    for j, i in enumerate(BLOCKS):
        we, be, kd, bd, wp, bp = conv[6 * j:6 * j + 6]
        p = f"features.{i}.conv"
        for key, kernel, bias in ((f"{p}.0", we.T[:, :, None, None], be),
                                  (f"{p}.1", kd.transpose(2, 0, 1)[:, None], bd),
                                  (None, wp.T[:, :, None, None], bp)):
            conv_key, bn_key = (f"{key}.0", f"{key}.1") if key else (f"{p}.2", f"{p}.3")
            c = kernel.shape[0]
            out[f"{conv_key}.weight"] = np.ascontiguousarray(kernel, np.float32)
            out[f"{bn_key}.weight"] = np.ones(c, np.float32)
            out[f"{bn_key}.bias"] = np.asarray(bias, np.float32)
            out[f"{bn_key}.running_mean"] = np.zeros(c, np.float32)
            out[f"{bn_key}.running_var"] = np.full(c, 1.0 - backbone.BN_EPS, np.float32)
    return out
