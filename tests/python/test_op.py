"""ai.flashattn::FlashAttention loaded into ONNX Runtime from Python, the way most users load custom ops
(SessionOptions.register_custom_ops_library), checked against an independent float64 numpy reference
over every feature of the schema, plus bad inputs."""
import itertools
import os
import pathlib

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIB = os.environ.get("FLASHATTN_ORT_LIB", str(ROOT / "target" / "release" / "libflashattn_ort.so"))
DTYPES = {"float32": (np.float32, TensorProto.FLOAT), "float16": (np.float16, TensorProto.FLOAT16)}
# bfloat16 has no numpy dtype; ORT takes it through ml_dtypes (shipped with onnx).
try:
    import ml_dtypes

    DTYPES["bfloat16"] = (ml_dtypes.bfloat16, TensorProto.BFLOAT16)
except ImportError:  # pragma: no cover
    pass
# |out - ref| <= atol + rtol*|ref|: the output's final rounding (half an ulp) x2, plus f32 accumulation.
TOL = {"float32": (1e-4, 1e-4), "float16": (1e-4, 1e-3), "bfloat16": (1e-4, 8e-3)}
SEED = int(os.environ.get("FLASHATTN_SEED", np.random.SeedSequence().entropy % 2**32))


def session(nodes_inputs, attrs, graph_inputs, with_lse=True, options=None):
    outs = ["output", "softmax_lse"] if with_lse else ["output"]
    node = helper.make_node("FlashAttention", nodes_inputs, outs, domain="ai.flashattn", **attrs)
    graph = helper.make_graph([node], "g", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.flashattn", 1)], ir_version=8)
    so = options or ort.SessionOptions()
    so.register_custom_ops_library(LIB)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_value(a, dtype):
    np_t, onnx_t = DTYPES[dtype]
    if dtype == "bfloat16":  # ORT's Python API has no bfloat16 numpy type: pass the bits.
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a.view(np.uint16), onnx_t)
    return ort.OrtValue.ortvalue_from_numpy(a)


def run_poisoned(sess, feeds, outputs):
    """Runs with every output preallocated and filled with NaN, so an element the kernel never
    writes fails the comparison. `outputs`: [(shape, dtype)] in output order. Returns float64 arrays."""
    binding = sess.io_binding()
    for name, a in feeds.items():
        dtype = "bfloat16" if a.dtype == DTYPES.get("bfloat16", (None,))[0] else None
        binding.bind_ortvalue_input(name, ort_value(a, dtype) if dtype else ort.OrtValue.ortvalue_from_numpy(a))
    buffers = []
    for out, (shape, dtype) in zip(sess.get_outputs(), outputs):
        buf = np.full(shape, np.nan, np.float32).astype(DTYPES[dtype][0])
        buffers.append(buf)
        binding.bind_ortvalue_output(out.name, ort_value(buf, dtype))
    sess.run_with_iobinding(binding)
    return [b.astype(np.float64) for b in buffers]


def reference(q, k, v, *, scale, softcap=0.0, add_mask=None, bool_mask=None, causal=False, window=(-1, -1), seqlens=None):
    """q [B,Nq,Sq,D], k/v [B,Nkv,Skv,*] in float64 -> (out [B,Nq,Sq,Dv], lse [B,Nq,Sq])."""
    B, Nq, Sq, _ = q.shape
    Nkv, Skv = k.shape[1], k.shape[2]
    k = np.repeat(k, Nq // Nkv, axis=1)
    v = np.repeat(v, Nq // Nkv, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if add_mask is not None:
        s = s + add_mask
    visible = np.ones((B, Nq, Sq, Skv), bool)
    if bool_mask is not None:
        visible &= np.broadcast_to(bool_mask, visible.shape)
    i = np.arange(Sq)[:, None] + (Skv - Sq)
    j = np.arange(Skv)[None, :]
    right = 0 if causal and window[1] < 0 else (min(window[1], 0) if causal else window[1])
    if right >= 0:
        visible &= j <= i + right
    if window[0] >= 0:
        visible &= j >= i - window[0]
    if seqlens is not None:
        visible &= j[None, None] < np.asarray(seqlens)[:, None, None, None]
    s = np.where(visible, s, -np.inf)
    m = s.max(-1, keepdims=True)
    empty = ~np.isfinite(m)
    p = np.where(empty, 0.0, np.exp(s - np.where(empty, 0.0, m)))
    total = p.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bhkd->bhqd", np.where(total > 0, p / np.where(total > 0, total, 1), 0.0), v)
    lse = np.where(total[..., 0] > 0, m[..., 0] + np.log(np.where(total[..., 0] > 0, total[..., 0], 1)), -np.inf)
    return out, lse


def to_bnsh(x, layout, heads):
    if layout == "BNSH":
        return x
    if layout == "3D":
        b, s, w = x.shape
        x = x.reshape(b, s, heads, w // heads)
    return x.transpose(0, 2, 1, 3)


def run_case(rng, dtype, layout, mask, causal, window, softcap, scale, seqlens, gqa, sq, skv, d=16, dv=16, with_lse=True):
    np_t, onnx_t = DTYPES[dtype]
    B, Nkv = 2, 2
    Nq = Nkv * gqa
    shape = lambda n, s, h: {"BSNH": (B, s, n, h), "BNSH": (B, n, s, h), "3D": (B, s, n * h)}[layout]
    q = rng.standard_normal(shape(Nq, sq, d)).astype(np.float32).astype(np_t)
    k = rng.standard_normal(shape(Nkv, skv, d)).astype(np.float32).astype(np_t)
    v = rng.standard_normal(shape(Nkv, skv, dv)).astype(np.float32).astype(np_t)
    attrs = {}
    if layout == "BNSH":
        attrs["layout"] = "BNSH"
    if layout == "3D":
        attrs["num_heads"] = Nq
    if causal:
        attrs["causal"] = 1
    if window != (-1, -1):
        attrs["window_left"], attrs["window_right"] = window
    if softcap:
        attrs["softcap"] = softcap
    if scale is not None:
        attrs["scale"] = scale
    feeds = {"query": q, "key": k, "value": v}
    inputs = [helper.make_tensor_value_info(n, onnx_t, a.shape) for n, a in feeds.items()]
    names = ["query", "key", "value"]
    ref_kw = {}
    if mask is not None:
        kind, mshape = mask
        if kind == "bool":
            m = rng.random(mshape) > 0.25
            inputs.append(helper.make_tensor_value_info("attn_mask", TensorProto.BOOL, m.shape))
            ref_kw["bool_mask"] = m
        else:
            m = np.where(rng.random(mshape) < 0.2, -np.inf, rng.uniform(-2, 2, mshape)).astype(np.float32).astype(np_t)
            inputs.append(helper.make_tensor_value_info("attn_mask", onnx_t, m.shape))
            ref_kw["add_mask"] = m.astype(np.float64)
        feeds["attn_mask"] = m
        names.append("attn_mask")
    if seqlens:
        lens = rng.integers(0, skv + 1, B).astype(np.int32)
        if mask is None:
            names.append("")
        names.append("key_seqlens")
        feeds["key_seqlens"] = lens
        inputs.append(helper.make_tensor_value_info("key_seqlens", TensorProto.INT32, lens.shape))
        ref_kw["seqlens"] = lens
    sess = session(names, attrs, inputs, with_lse=with_lse)
    out_shape = {"BSNH": (B, sq, Nq, dv), "BNSH": (B, Nq, sq, dv), "3D": (B, sq, Nq * dv)}[layout]
    got = run_poisoned(sess, feeds, [(out_shape, dtype)] + ([((B, Nq, sq), "float32")] if with_lse else []))
    f64 = lambda x: to_bnsh(x.astype(np.float64), layout, Nq if x is q else Nkv)
    want, want_lse = reference(f64(q), to_bnsh(k.astype(np.float64), layout, Nkv), to_bnsh(v.astype(np.float64), layout, Nkv),
                               scale=scale if scale is not None else 1 / np.sqrt(d), softcap=softcap, causal=causal, window=window, **ref_kw)
    out = to_bnsh(got[0].astype(np.float64), layout, Nq)
    assert not np.isnan(out).any(), "NaN in output"
    atol, rtol = TOL[dtype]
    err = np.abs(out - want)
    assert (err <= atol + rtol * np.abs(want)).all(), f"seed {SEED}: max err {err.max()}"
    if with_lse:
        lse = got[1]
        assert lse.shape == (B, Nq, sq)
        assert np.array_equal(np.isneginf(lse), np.isneginf(want_lse)), f"seed {SEED}: -inf rows differ"
        fin = np.isfinite(want_lse)
        assert np.abs(lse[fin] - want_lse[fin]).max(initial=0) < 1e-3


FEATURES = list(itertools.product(
    list(DTYPES), ["BSNH", "BNSH", "3D"],
    [None, ("bool", (2, 1, 1, 23)), ("add", (17, 23)), ("add", (2, 4, 17, 23)), ("bool", (23,))],
))


@pytest.mark.parametrize("dtype,layout,mask", FEATURES)
def test_layouts_masks_dtypes(dtype, layout, mask):
    rng = np.random.default_rng(SEED)
    run_case(rng, dtype, layout, mask, causal=False, window=(-1, -1), softcap=0.0, scale=None, seqlens=False, gqa=2, sq=17, skv=23)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("causal,window", [(True, (-1, -1)), (False, (4, 2)), (True, (3, -1)), (False, (0, 0))])
@pytest.mark.parametrize("sq,skv", [(1, 129), (17, 17), (33, 9)])
def test_causal_and_windows(dtype, causal, window, sq, skv):
    rng = np.random.default_rng(SEED)
    run_case(rng, dtype, "BSNH", None, causal, window, 0.0, None, False, gqa=4, sq=sq, skv=skv)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_softcap_scale_seqlens_mqa(dtype):
    rng = np.random.default_rng(SEED)
    run_case(rng, dtype, "BNSH", ("add", (17, 40)), True, (-1, -1), 20.0, 0.3, True, gqa=3, sq=17, skv=40, d=40, dv=24)
    run_case(rng, dtype, "3D", None, False, (-1, -1), 0.0, None, True, gqa=1, sq=5, skv=1000, d=64, dv=64, with_lse=False)


def test_bad_inputs_are_refused_with_clear_messages():
    f = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
    with pytest.raises(Exception, match="multiple of key/value heads"):
        session(["query", "key", "value"], {}, [f("query", (1, 4, 3, 8)), f("key", (1, 4, 2, 8)), f("value", (1, 4, 2, 8))])
    with pytest.raises(Exception, match="attribute 'causal' must be 0 or 1"):
        session(["query", "key", "value"], {"causal": 5}, [f("query", (1, 4, 2, 8)), f("key", (1, 4, 2, 8)), f("value", (1, 4, 2, 8))])
    # Dynamic shapes: refused at run time, and the session keeps serving.
    dyn = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", n + "s", n + "h", n + "d"])
    s = session(["query", "key", "value"], {}, [dyn("query"), dyn("key"), dyn("value")], with_lse=False)
    a = lambda *shape: np.random.default_rng(SEED).standard_normal(shape).astype(np.float32)
    with pytest.raises(Exception, match="head_dim of 'key'"):
        s.run(None, {"query": a(1, 3, 2, 8), "key": a(1, 3, 2, 16), "value": a(1, 3, 2, 8)})
    with pytest.raises(Exception, match="at most 256"):
        s.run(None, {"query": a(1, 3, 2, 300), "key": a(1, 3, 2, 300), "value": a(1, 3, 2, 8)})
    assert s.run(None, {"query": a(1, 3, 2, 8), "key": a(1, 3, 2, 8), "value": a(1, 3, 2, 8)})[0].shape == (1, 3, 2, 8)


def test_intra_op_threads_setting_is_respected():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    f = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
    s = session(["query", "key", "value"], {"causal": 1}, [f("query", (1, 300, 4, 32)), f("key", (1, 300, 4, 32)), f("value", (1, 300, 4, 32))], with_lse=False, options=so)
    a = np.random.default_rng(SEED).standard_normal((1, 300, 4, 32)).astype(np.float32)
    out = s.run(None, {"query": a, "key": a, "value": a})[0]
    t = a.astype(np.float64).transpose(0, 2, 1, 3)
    want, _ = reference(t, t, t, scale=1 / np.sqrt(32), causal=True)
    assert np.abs(out.transpose(0, 2, 1, 3) - want).max() < 1e-4


def test_unknown_output_dims_stay_unknown_for_downstream_shape_ops():
    """An output dim ORT cannot know must not be published as the value -1: a downstream
    Shape→Gather→Concat(…, -1)→Reshape would constant-fold it into a second -1 and refuse to load."""
    from onnx import numpy_helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, None, 4, 8]) for n in ("q", "k", "v")]
    nodes = [
        helper.make_node("FlashAttention", ["q", "k", "v"], ["o"], domain="ai.flashattn"),
        helper.make_node("Shape", ["o"], ["sh"]),
        helper.make_node("Gather", ["sh", "i0"], ["d0"]),
        helper.make_node("Gather", ["sh", "i1"], ["d1"]),
        helper.make_node("Concat", ["d0", "d1", "m1"], ["tgt"], axis=0),
        helper.make_node("Reshape", ["o", "tgt"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([x], np.int64), n) for n, x in (("i0", 0), ("i1", 1), ("m1", -1))]
    graph = helper.make_graph(nodes, "g", ins, [helper.make_empty_tensor_value_info("y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.flashattn", 1)], ir_version=8)
    so = ort.SessionOptions()
    so.register_custom_ops_library(LIB)
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(SEED).standard_normal((2, 5, 4, 8)).astype(np.float32)
    assert s.run(None, {"q": x, "k": x, "v": x})[0].shape == (2, 5, 32)


def test_inputs_without_declared_shapes():
    """Graph inputs with no shape at all (rank unknown when the session is built) are checked at run time."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("query", "key", "value")]
    ins.append(helper.make_tensor_value_info("attn_mask", TensorProto.BOOL, None))
    s = session(["query", "key", "value", "attn_mask"], {"causal": 1}, ins, with_lse=False)
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((1, 6, 2, 8)).astype(np.float32)
    m = rng.random((1, 1, 1, 6)) > 0.3
    m[..., 0] = True
    out = s.run(None, {"query": x, "key": x, "value": x, "attn_mask": m})[0]
    t = x.astype(np.float64).transpose(0, 2, 1, 3)
    want, _ = reference(t, t, t, scale=1 / np.sqrt(8), bool_mask=m, causal=True)
    assert np.abs(out.transpose(0, 2, 1, 3) - want).max() < 1e-4
