"""Read the weights of a frozen DeepSpeech 0.1.0 graph (``deepspeech-0_1_0-b90017e8.pb``) without TensorFlow.

A frozen graph is a serialized ``tensorflow.GraphDef`` protobuf in which every trained variable has been
replaced by a ``Const`` node of the same name holding a ``TensorProto``. TensorFlow itself is not needed to
read it: ``tensorboard`` (already a dependency) ships the same message definitions
(``tensorboard.compat.proto.graph_pb2``; the wire format is identical, only the package name differs).

What DeepSpeech 0.1.0's ``BiRNN()`` (``DeepSpeech.py`` at tag ``v0.1.0``) leaves in the graph:

========================================================  =============================  =====================
node                                                      shape                          role
========================================================  =============================  =====================
``h1`` / ``b1``                                           (494, n_hidden) / (n_hidden,)  dense, clipped ReLU
``h2`` / ``b2``                                           (n_hidden, n_hidden)           dense, clipped ReLU
``h3`` / ``b3``                                           (n_hidden, 2*n_cell)           dense, clipped ReLU
``bidirectional_rnn/{fw,bw}/basic_lstm_cell/kernel``      (2*n_cell + n_cell, 4*n_cell)  BasicLSTMCell
``bidirectional_rnn/{fw,bw}/basic_lstm_cell/bias``        (4*n_cell,)
``h5`` / ``b5``                                           (2*n_cell, n_hidden)           dense, clipped ReLU
``h6`` / ``b6``                                           (n_hidden, 29)                 logits
``input_node`` (Placeholder), ``input_lengths``           (batch, time, 494), (batch,)
``logits`` (Reshape)                                      (time, batch, 29)
========================================================  =============================  =====================

(There is no ``h4``: the LSTM is layer 4.) The released model has ``n_hidden = n_cell = 2048``; the sizes
are read from the graph, so the small graph of the test fixture goes through the same code. TensorFlow
releases before 1.2 named the LSTM variables ``weights`` / ``biases``; both spellings are accepted, and
a graph imported under a prefix (``deepspeech/h1``) is found by its unique suffix.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotalk.errors import DataError, MissingWeightsError

log = logging.getLogger(__name__)

#: The file the field uses (osmr/deepspeech_features release v0.0.1; AD-NeRF, GeneFace, ER-NeRF ...) and
#: the SHA-1 its downloader (``deepspeech_store.get_deepspeech_model_file``) checks the unzipped file against.
OFFICIAL_NAME = "deepspeech-0_1_0-b90017e8.pb"
OFFICIAL_SHA1 = "b90017e816572ddce84f5843f1fa21e6a377975e"
OFFICIAL_URL = "https://github.com/osmr/deepspeech_features/releases/download/v0.0.1/deepspeech-0_1_0-b90017e8.pb.zip"

INPUT_NODE, LENGTHS_NODE, LOGITS_NODE = "input_node", "input_lengths", "logits"
_LSTM = "bidirectional_rnn/{d}/basic_lstm_cell/{v}"
#: weight name -> accepted spellings in the graph (first = DeepSpeech 0.1.0 with TensorFlow >= 1.2)
WEIGHT_NAMES: dict[str, tuple[str, ...]] = {
    **{f"{k}{i}": (f"{k}{i}",) for i in (1, 2, 3, 5, 6) for k in ("h", "b")},
    **{f"{d}_{v}": (_LSTM.format(d=d, v=v), _LSTM.format(d=d, v=alt))
       for d in ("fw", "bw") for v, alt in (("kernel", "weights"), ("bias", "biases"))},
}

_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 19: np.float16}
_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 9: "int64", 19: "float16", 10: "bool", 7: "string"}
_VAL_FIELDS = {1: "float_val", 2: "double_val", 3: "int_val", 9: "int64_val", 19: "half_val"}


@dataclass
class ConstTensor:
    """A ``Const`` node: name, dtype name, shape, and its undecoded ``TensorProto`` (decoding waits until
    the tensor is needed, so listing a 490 MB graph does not copy its weights)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    proto: object = field(repr=False, default=None)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def array(self) -> np.ndarray:
        return tensor_to_numpy(self.proto, self.name)


@dataclass
class DeepSpeechGraph:
    """The parts of a frozen graph the extractor needs, plus everything else for diagnostics."""

    path: Path
    consts: dict[str, ConstTensor]
    placeholders: dict[str, tuple[str, tuple[int, ...] | None]]  # name -> (dtype, shape; -1 = any)
    op_counts: dict[str, int]
    node_names: frozenset[str]
    num_bytes: int

    def weight_tensors(self, min_rank: int = 1) -> list[ConstTensor]:
        """Float constants of rank >= ``min_rank``, largest first (the learned weights of a frozen graph)."""
        out = [c for c in self.consts.values() if c.dtype.startswith("float") and len(c.shape) >= min_rank]
        return sorted(out, key=lambda c: (-c.size, c.name))

    def find(self, key: str) -> ConstTensor | None:
        """The constant for a :data:`WEIGHT_NAMES` key: exact name first, then a unique ``*/name`` suffix."""
        for name in WEIGHT_NAMES[key]:
            if name in self.consts:
                return self.consts[name]
        for name in WEIGHT_NAMES[key]:
            hits = [c for n, c in self.consts.items() if n.endswith("/" + name)]
            if len(hits) == 1:
                return hits[0]
        return None

    def sha1(self) -> str:
        h = hashlib.sha1()
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


def tensor_to_numpy(proto, name: str = "tensor") -> np.ndarray:
    """Decode a ``TensorProto`` (``tensor_content`` bytes, or the typed ``*_val`` list, which TensorFlow
    may store with a single value meaning "fill the whole shape")."""
    dtype = _DTYPES.get(proto.dtype)
    if dtype is None:
        raise DataError(f"{name}: unsupported tensor dtype {_DTYPE_NAMES.get(proto.dtype, proto.dtype)} "
                        f"(expected float32)")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    n = int(np.prod(shape)) if shape else 1
    if proto.tensor_content:
        arr = np.frombuffer(proto.tensor_content, dtype=np.dtype(dtype).newbyteorder("<"))
    else:
        vals = getattr(proto, _VAL_FIELDS[proto.dtype])
        if proto.dtype == 19:  # half values travel as uint16 bit patterns in an int field
            arr = np.asarray(vals, np.uint16).view(np.float16)
        else:
            arr = np.asarray(vals, dtype)
        if arr.size == 1 and n > 1:
            arr = np.full(n, arr[0], dtype)
        elif arr.size == 0 and n > 0:
            arr = np.zeros(n, dtype)
    if arr.size != n:
        raise DataError(f"{name}: tensor holds {arr.size} values but its shape {shape} needs {n}; the graph "
                        f"file is damaged")
    return arr.reshape(shape).astype(np.float32 if np.issubdtype(dtype, np.floating) else dtype)  # a writable copy


def _shape_attr(node) -> tuple[int, ...] | None:
    if "shape" not in node.attr:
        return None
    s = node.attr["shape"].shape
    return None if s.unknown_rank else tuple(int(d.size) for d in s.dim)


def read_graph(path: str | Path) -> DeepSpeechGraph:
    """Parse a frozen GraphDef file. Raises :class:`MissingWeightsError` if the file is absent and
    :class:`DataError` (one line) if it is not a GraphDef."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            f"DeepSpeech model {path} not found: download {OFFICIAL_NAME} (zipped, from {OFFICIAL_URL}), unzip "
            f"it and pass its path with --deepspeech-model")
    from tensorboard.compat.proto import graph_pb2

    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        raise DataError(f"{path} is a zip archive, not the graph itself: unzip it (it holds {OFFICIAL_NAME}) "
                        f"and pass the .pb file")
    gd = graph_pb2.GraphDef()
    try:
        gd.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError (and others in some backends)
        raise DataError(f"{path} is not a frozen TensorFlow GraphDef (.pb) file ({type(e).__name__}); "
                        f"expected {OFFICIAL_NAME}") from None
    if len(gd.node) == 0:
        raise DataError(f"{path} is not a frozen TensorFlow GraphDef (.pb) file (no graph nodes); "
                        f"expected {OFFICIAL_NAME}")
    consts: dict[str, ConstTensor] = {}
    placeholders: dict[str, tuple[str, tuple[int, ...] | None]] = {}
    ops: dict[str, int] = {}
    for node in gd.node:
        ops[node.op] = ops.get(node.op, 0) + 1
        if node.op == "Const" and "value" in node.attr:
            t = node.attr["value"].tensor
            consts[node.name] = ConstTensor(node.name, _DTYPE_NAMES.get(t.dtype, str(t.dtype)),
                                            tuple(int(d.size) for d in t.tensor_shape.dim), t)
        elif node.op in ("Placeholder", "PlaceholderV2"):
            dt = node.attr["dtype"].type if "dtype" in node.attr else 0
            placeholders[node.name] = (_DTYPE_NAMES.get(dt, str(dt)), _shape_attr(node))
    if ops.get("ImmutableConst"):
        log.warning("%s is a memory-mapped graph (.pbmm, DeepSpeech >= 0.2): its weights are not inside the "
                    "file and its network differs from 0.1.0; use %s", path, OFFICIAL_NAME)
    g = DeepSpeechGraph(path, consts, placeholders, ops, frozenset(n.name for n in gd.node), len(data))
    log.debug("%s: %d nodes, %d constants, placeholders %s", path, len(gd.node), len(consts), placeholders)
    return g


def describe_graph(g: DeepSpeechGraph, limit: int | None = None) -> list[str]:
    """Human-readable listing for ``emotalk deepspeech-info``: inputs, weight tensors, op counts."""
    lines = [f"file: {g.path} ({g.num_bytes / 1e6:.1f} MB)"]
    lines.append(f"nodes: {len(g.node_names)}; ops: " +
                 ", ".join(f"{k} {v}" for k, v in sorted(g.op_counts.items(), key=lambda kv: -kv[1])[:12]))
    for name, (dt, shape) in sorted(g.placeholders.items()):
        lines.append(f"input: {name} {dt} {_fmt_shape(shape)}")
    lines.append(f"output node {LOGITS_NODE!r}: {'present' if LOGITS_NODE in g.node_names else 'MISSING'}")
    weights = g.weight_tensors()
    total = sum(c.size for c in weights)
    lines.append(f"weight tensors: {len(weights)} ({total:,} values)")
    for c in weights[:limit] if limit else weights:
        lines.append(f"  {c.name:55s} {c.dtype:8s} {_fmt_shape(c.shape)}")
    return lines


def _fmt_shape(shape) -> str:
    if shape is None:
        return "(unknown rank)"
    return "(" + ", ".join("?" if d < 0 else str(d) for d in shape) + ")"


def weight_listing(g: DeepSpeechGraph, limit: int = 20) -> str:
    """``name shape`` of the largest float constants, for error messages."""
    ws = g.weight_tensors()
    text = "; ".join(f"{c.name} {_fmt_shape(c.shape)}" for c in ws[:limit])
    more = f"; ... {len(ws) - limit} more" if len(ws) > limit else ""
    return (text + more) or "none"
