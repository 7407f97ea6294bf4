"""``covault model import``: the owner secret-shares an ONNX, safetensors or PyTorch model, every
compute party stores its shares, and the loaded model predicts like onnxruntime / numpy; the
readers refuse unsupported operators by name."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import covault
from covault.deploy.config import load_config
from covault.serving import ModelStoreError, load_model
from covault.serving.formats import read_model, read_safetensors_file
from covault.serving.keys import store_folders
from tests.helpers import tls_consortium, wait_parties

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

COMPUTE = ("a", "b", "c")
RNG = np.random.default_rng(9)
W1, B1 = RNG.normal(0, 0.4, (6, 8)).astype(np.float32), RNG.normal(0, 0.1, 8).astype(np.float32)
W2, B2 = RNG.normal(0, 0.4, (8, 3)).astype(np.float32), RNG.normal(0, 0.1, 3).astype(np.float32)
X = RNG.normal(0, 1, (4, 6))


def onnx_mlp(path, ops=("Relu",)):
    """x -> Gemm(W1ᵀ, transB) -> ops -> MatMul(W2) -> Add(B2) -> Softmax."""
    init = [
        numpy_helper.from_array(a, n) for a, n in ((W1.T.copy(), "w1"), (B1, "b1"), (W2, "w2"), (B2, "b2"))
    ]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h0"], transB=1)]
    cur = "h0"
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [cur], [f"a{i}"]))
        cur = f"a{i}"
    nodes += [
        helper.make_node("MatMul", [cur, "w2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def safetensors_mlp(path):
    """PyTorch layout (out, in), one tensor F32, one F64, as a model hub ships them."""
    tensors = {"fc1.weight": W1.T, "fc1.bias": B1, "fc2.weight": W2.T.astype(np.float64), "fc2.bias": B2}
    header, blobs, at = {}, [], 0
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        dt = {np.float32: "F32", np.float64: "F64"}[a.dtype.type]
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return path


def plain(x):
    h = np.maximum(x @ W1 + B1, 0) @ W2 + B2
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def consortium(tmp_path):
    top = ['protocol = "rep3"', "timeout = 30", f"compute = {json.dumps(list(COMPUTE))}"]
    return tls_consortium(tmp_path, top, [*COMPUTE, "owner"])


def import_everywhere(config, model_file, *extra):
    cmd = [sys.executable, "-m", "covault", "model", "import"]
    procs = {}
    for n in [*COMPUTE, "owner"]:
        args = [str(model_file)] if n == "owner" else []
        procs[n] = subprocess.Popen(
            [*cmd, *args, str(config), "--owner", "owner", "--as", n, "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    out = {}
    for n, (o, e, code) in wait_parties(procs).items():
        assert code == 0, (n, e)
        out[n] = json.loads(o)
    return out


def predict(config, name):
    folder, keys = store_folders(load_config(config))

    def program(s):
        x = s.input(X if s.party == "a" else None, owner="a")
        return load_model(s, folder, name, key_dir=keys).forward(x).reveal()

    return covault.run(program, list(COMPUTE), "rep3")["a"]


def test_import_onnx_and_safetensors_then_load_and_forward(tmp_path):
    config = consortium(tmp_path)
    ort = pytest.importorskip("onnxruntime")
    path = onnx_mlp(tmp_path / "fraud.onnx")
    out = import_everywhere(config, path)
    assert out["owner"]["path"] is None  # the owner keeps only its own file
    for n in COMPUTE:
        assert out[n]["path"] == str(tmp_path / "models" / f"fraud.{n}.shares")
        assert (tmp_path / "certs" / f"{n}.store.key").exists()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expect = session.run(None, {"x": X.astype(np.float32)})[0]
    np.testing.assert_allclose(predict(config, "fraud"), expect, atol=3e-3)

    st = safetensors_mlp(tmp_path / "weights.safetensors")
    out = import_everywhere(config, st, "--name", "hub", "--layers", "fc1,relu,fc2,softmax")
    assert {r["model"] for r in out.values()} == {"hub"}
    np.testing.assert_allclose(predict(config, "hub"), plain(X), atol=3e-3)


def test_readers_match_the_plaintext_model_and_name_unsupported_operators(tmp_path):
    torch = pytest.importorskip("torch")
    seq = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3), torch.nn.Softmax(dim=1)
    )
    torch.save(seq, tmp_path / "m.pt")
    m = read_model(tmp_path / "m.pt")
    assert [layer["op"] for layer in m.layers] == ["linear", "tanh", "linear", "softmax"]
    np.testing.assert_allclose(m.weights[0], seq[0].weight.detach().numpy().T)

    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.GELU()), tmp_path / "gelu.pt")
    with pytest.raises(
        ModelStoreError, match=r"gelu\.pt: not a PyTorch nn\.Sequential.*unsupported layer 'GELU'"
    ):
        read_model(tmp_path / "gelu.pt")

    with pytest.raises(ModelStoreError, match="unsupported ONNX operator 'Elu'"):
        read_model(onnx_mlp(tmp_path / "elu.onnx", ops=("Relu", "Elu")))
    tensors = read_safetensors_file(safetensors_mlp(tmp_path / "w.safetensors"))
    np.testing.assert_array_equal(tensors["fc1.weight"], W1.T.astype(np.float64))
    with pytest.raises(ModelStoreError, match=r"no tensor 'fc3\.weight'"):
        read_model(tmp_path / "w.safetensors", "fc1,relu,fc3")
    with pytest.raises(ModelStoreError, match="needs --layers"):
        read_model(tmp_path / "w.safetensors")


def raw_safetensors(path, header, data: bytes = bytes(24)):
    """A safetensors file of ``header`` (any JSON) and ``data``."""
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)
    return path


GOOD = {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]}


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"dtype": "F64", "shape": [3]}, r"data_offsets must be two integers \[lo, hi\], got None"),
        ({**GOOD, "data_offsets": [-4, None]}, r"data_offsets must be two integers"),
        ({**GOOD, "data_offsets": [0, 24, 48]}, r"data_offsets must be two integers"),
        ({**GOOD, "data_offsets": [0.0, 24]}, r"data_offsets must be two integers"),
        ({**GOOD, "data_offsets": [-8, 16]}, r"outside 0 <= lo <= hi <= 24"),
        ({**GOOD, "data_offsets": [16, 8]}, r"outside 0 <= lo <= hi <= 24"),
        ({**GOOD, "data_offsets": [8, 32]}, r"outside 0 <= lo <= hi <= 24"),
        ({**GOOD, "data_offsets": [0, 20]}, r"hold 20 bytes; shape \[3\] F64 takes 24"),
        ({**GOOD, "shape": [2]}, r"hold 24 bytes; shape \[2\] F64 takes 16"),
        ({**GOOD, "shape": [-1, -3]}, r"shape must be a list of integers >= 0"),
        ({**GOOD, "shape": "3"}, r"shape must be a list of integers >= 0"),
        ({**GOOD, "dtype": "I64"}, r"has dtype 'I64'"),
        ([0, 24], r"its header entry is not a JSON object \(list\)"),
    ],
)
def test_malformed_safetensors_headers_name_the_file_and_the_tensor(tmp_path, entry, match):
    path = raw_safetensors(tmp_path / "bad.safetensors", {"__metadata__": {}, "w": GOOD, "b": entry})
    with pytest.raises(ModelStoreError, match=rf"bad\.safetensors: tensor 'b'.*{match}"):
        read_safetensors_file(path)


def test_a_safetensors_header_that_is_not_an_object_is_refused(tmp_path):
    np.testing.assert_array_equal(
        read_safetensors_file(raw_safetensors(tmp_path / "ok.safetensors", {"w": GOOD}))["w"], np.zeros(3)
    )
    with pytest.raises(ModelStoreError, match=r"list\.safetensors: not a safetensors file \(the header"):
        read_safetensors_file(raw_safetensors(tmp_path / "list.safetensors", [GOOD]))


@pytest.mark.parametrize(("protocol", "n"), [("rep3", 3), ("2pc", 2)])
def test_no_party_but_the_owner_receives_a_weight(tmp_path, protocol, n):
    from covault.encoding import FixedPoint
    from covault.serving.formats import PlainModel
    from covault.serving.importer import import_model
    from covault.transport.transcript import read_transcript

    m = PlainModel(
        [{"op": "linear", "in": 6, "out": 8}, {"op": "relu"}, {"op": "linear", "in": 8, "out": 3}],
        [W1, B1, W2, B2],
    )

    def program(s):
        mine = m if s.party == "owner" else None
        return import_model(s, "owner", mine, tmp_path / "m", tmp_path / "k", name="x" if mine else None)

    res = covault.run(program, n, protocol, data_parties=["owner"], transcript_dir=tmp_path / "tr")
    assert {r["model"] for r in res.values()} == {"x"}
    # 8-byte encodings only: a 4-byte float32 would turn up in random bytes now and then
    patterns = [v.tobytes() for w in m.weights for v in FixedPoint().encode(w).reshape(-1)]
    patterns += [np.float64(v).tobytes() for w in m.weights for v in w.reshape(-1)]
    received: dict[str, bytes] = {}
    for f in (tmp_path / "tr").glob("*.transcript"):
        for msg in read_transcript(f)[1]:
            received[msg["to"]] = received.get(msg["to"], b"") + b"".join(a.tobytes() for a in msg["arrays"])
    assert {p for p in res if p not in ("owner", "dealer")} <= set(received)
    for party, blob in received.items():
        assert not any(p in blob for p in patterns), party
    for f in (tmp_path / "m").glob("*.shares"):
        assert not any(p in f.read_bytes() for p in patterns)


def test_safetensors_half_precision_and_a_damaged_file(tmp_path):
    a = np.array([[1.5, -2.25], [0.125, 3.0]])
    f16 = a.astype("<f2").tobytes()
    bf16 = (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()  # exact for these values
    header = {
        "h": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
        "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]},
        "__metadata__": {"format": "pt"},
    }
    head = json.dumps(header).encode()
    path = tmp_path / "half.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + f16 + bf16)
    got = read_safetensors_file(path)
    np.testing.assert_array_equal(got["h"], a)
    np.testing.assert_array_equal(got["b"], a)
    path.write_bytes(struct.pack("<Q", 10**6) + head)
    with pytest.raises(ModelStoreError, match="not a safetensors file"):
        read_safetensors_file(path)
