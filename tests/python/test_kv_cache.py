"""The op's KV cache (issue #8) in ONNX Runtime (CPU EP), against an independent float64 numpy reference:
past/present in concat mode, the shared-buffer mode (past and present bound to one buffer through
IOBinding, appended in place at per-row lengths, ragged batches), rotary embedding (half-split and
interleaved, default and explicit positions), all three types, with outputs poisoned with NaN and the
unused cache capacity poisoned too; a decode loop; bad cache inputs refused with clear messages."""
import os

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from test_op import DTYPES, LIB, SEED, TOL, ort_value, reference

# Rounding of a rotated value stored in T: half an ulp, twice (f32 vs f64 evaluation).
ROT_TOL = {"float32": 1e-6, "float16": 2 ** -10, "bfloat16": 2 ** -7}
INPUTS = ["query", "key", "value", "attn_mask", "key_seqlens", "past_key", "past_value", "past_seqlens", "cos_cache", "sin_cache", "position_ids"]
OUTPUTS = ["output", "softmax_lse", "present_key", "present_value"]


def kv_session(feeds_types, attrs, outputs=OUTPUTS):
    """One FlashAttention node; feeds_types: {input name: (onnx type, shape)} (absent inputs skipped)."""
    last = max(INPUTS.index(n) for n in feeds_types)
    node_inputs = [n if n in feeds_types else "" for n in INPUTS[: last + 1]]
    node = helper.make_node("FlashAttention", node_inputs, outputs, domain="ai.flashattn", **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, t, s) for n, (t, s) in feeds_types.items()]
    graph = helper.make_graph([node], "g", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.flashattn", 1)], ir_version=8)
    so = ort.SessionOptions()
    so.register_custom_ops_library(LIB)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def value(a, dtype=None):
    if dtype is not None:
        return ort_value(a, dtype)
    return ort.OrtValue.ortvalue_from_numpy(a)


def rotate(x, cos, sin, pos, interleaved):
    """x [B, N, S, D] float64; cos/sin [P, R/2]; pos [B, S] -> x with its first R dims rotated."""
    half = cos.shape[1]
    c = cos[pos][:, None]  # [B, 1, S, R/2]
    s = sin[pos][:, None]
    out = x.copy()
    if interleaved:
        a, b = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
        out[..., 0 : 2 * half : 2] = a * c - b * s
        out[..., 1 : 2 * half : 2] = b * c + a * s
    else:
        a, b = x[..., :half], x[..., half : 2 * half]
        out[..., :half] = a * c - b * s
        out[..., half : 2 * half] = b * c + a * s
    return out


def to_bnsh(x, layout, heads):
    if layout == "BNSH":
        return x
    if layout == "3D":
        b, s, w = x.shape
        x = x.reshape(b, s, heads, w // heads)
    return x.transpose(0, 2, 1, 3)


def from_bnsh(x, layout):
    if layout == "BNSH":
        return x
    x = x.transpose(0, 2, 1, 3)
    if layout == "3D":
        b, s, n, d = x.shape
        x = x.reshape(b, s, n * d)
    return np.ascontiguousarray(x)


def run_kv_case(rng, dtype, mode, rotary, layout, causal, window, gqa, mask, *, B=2, Nkv=2, D=16, Dv=16, S_new=3, past=5, cap=12):
    """mode: 'none' (present from new only), 'concat', 'shared_inplace', 'shared_copy'.
    rotary: None, 'half', 'interleaved', 'interleaved_pos' (explicit position_ids)."""
    np_t, onnx_t = DTYPES[dtype]
    Nq = Nkv * gqa
    cast = lambda a: a.astype(np.float32).astype(np_t)
    q = cast(rng.standard_normal((B, Nq, S_new, D)))
    k = cast(rng.standard_normal((B, Nkv, S_new, D)))
    v = cast(rng.standard_normal((B, Nkv, S_new, Dv)))
    shared = mode.startswith("shared")
    if mode == "none":
        past_lens = np.zeros(B, np.int64)
        ps = 0
    elif mode == "concat":
        past_lens = np.full(B, past)
        ps = past
    else:
        past_lens = rng.integers(0, cap - S_new + 1, B)  # ragged
        ps = cap
    pk = cast(rng.standard_normal((B, Nkv, ps, D)))
    pv = cast(rng.standard_normal((B, Nkv, ps, Dv)))
    if shared:  # capacity beyond each row's length is garbage: NaN, so reading it fails the check
        for b in range(B):
            pk[b, :, past_lens[b]:] = np.nan
            pv[b, :, past_lens[b]:] = np.nan
    attrs = {"scale": 0.3}
    if layout == "BNSH":
        attrs["layout"] = "BNSH"
    if layout == "3D":
        attrs["num_heads"] = Nq
    if causal:
        attrs["causal"] = 1
    if window != (-1, -1):
        attrs["window_left"], attrs["window_right"] = window
    feeds = {"query": from_bnsh(q, layout), "key": from_bnsh(k, layout), "value": from_bnsh(v, layout)}
    types = {n: (onnx_t, a.shape) for n, a in feeds.items()}
    total = ps + S_new if mode in ("none", "concat") else cap
    ref_mask = None
    if mask:
        m = rng.random((B, 1, 1, total)) > 0.2
        feeds["attn_mask"] = m
        types["attn_mask"] = (TensorProto.BOOL, m.shape)
        ref_mask = m
    if mode != "none":
        feeds["past_key"], feeds["past_value"] = pk, pv
        types["past_key"], types["past_value"] = (onnx_t, pk.shape), (onnx_t, pv.shape)
    if shared:
        feeds["past_seqlens"] = past_lens.astype(np.int32)
        types["past_seqlens"] = (TensorProto.INT32, [B])
    pos = past_lens[:, None] + np.arange(S_new)[None]
    if rotary:
        R = D if rng.random() < 0.5 else D // 2
        P = int(pos.max()) + 4
        if rotary == "interleaved_pos":
            pos = rng.integers(0, P, (B, S_new))
            feeds["position_ids"] = pos.astype(np.int64)
            types["position_ids"] = (TensorProto.INT64, pos.shape)
        ang = rng.uniform(0, 2 * np.pi, (P, R // 2))
        cos, sin = cast(np.cos(ang)), cast(np.sin(ang))
        feeds["cos_cache"], feeds["sin_cache"] = cos, sin
        types["cos_cache"], types["sin_cache"] = (onnx_t, cos.shape), (onnx_t, sin.shape)
        attrs["rotary_interleaved"] = int(rotary.startswith("interleaved"))
        f = lambda x: cast(rotate(x.astype(np.float64), cos.astype(np.float64), sin.astype(np.float64), pos, rotary.startswith("interleaved")))
        qr, kr = f(q), f(k)
    else:
        qr, kr = q, k
    # Expected present.
    if shared:
        ek, ev = pk.copy(), pv.copy()
        for b in range(B):
            ek[b, :, past_lens[b] : past_lens[b] + S_new] = kr[b]
            ev[b, :, past_lens[b] : past_lens[b] + S_new] = v[b]
    else:
        ek, ev = np.concatenate([pk, kr], 2), np.concatenate([pv, v], 2)
    # Expected output: per row, bottom-right over the row's own keys.
    f64 = lambda a: a.astype(np.float64)
    out_ref = np.zeros((B, Nq, S_new, Dv))
    lse_ref = np.zeros((B, Nq, S_new))
    for b in range(B):
        n = past_lens[b] + S_new if shared else total
        kw = {"bool_mask": ref_mask[b : b + 1, ..., :n]} if mask else {}
        o, l = reference(f64(qr[b : b + 1]), f64(ek[b : b + 1, :, :n]), f64(ev[b : b + 1, :, :n]), scale=0.3, causal=causal, window=window, **kw)
        out_ref[b], lse_ref[b] = o[0], l[0]
    sess = kv_session(types, attrs)
    binding = sess.io_binding()
    bf = dtype if dtype == "bfloat16" else None
    for name, a in feeds.items():
        if name in ("past_key", "past_value") and mode == "shared_inplace":
            continue
        binding.bind_ortvalue_input(name, value(a, bf if a.dtype == np_t else None))
    out = np.full(feeds["query"].shape[:-1] + (Nq * Dv if layout == "3D" else Dv,), np.nan, np.float32).astype(np_t)
    lse = np.full((B, Nq, S_new), np.nan, np.float32)
    binding.bind_ortvalue_output("output", value(out, bf))
    binding.bind_ortvalue_output("softmax_lse", value(lse))
    if mode == "shared_inplace":
        present_k, present_v = pk.copy(), pv.copy()  # the one buffer bound as past and present
        vk, vv = value(present_k, bf), value(present_v, bf)
        binding.bind_ortvalue_input("past_key", vk)
        binding.bind_ortvalue_input("past_value", vv)
        binding.bind_ortvalue_output("present_key", vk)
        binding.bind_ortvalue_output("present_value", vv)
    else:
        present_k = np.full(ek.shape, np.nan, np.float32).astype(np_t)
        present_v = np.full(ev.shape, np.nan, np.float32).astype(np_t)
        binding.bind_ortvalue_output("present_key", value(present_k, bf))
        binding.bind_ortvalue_output("present_value", value(present_v, bf))
    sess.run_with_iobinding(binding)
    desc = f"FLASHATTN_SEED={SEED} {dtype} {mode} rotary={rotary} {layout} causal={causal} window={window} gqa={gqa} mask={mask} past_lens={past_lens.tolist()}"
    atol, rtol = TOL[dtype]
    got = to_bnsh(f64(out), layout, Nq)
    assert np.all(np.abs(got - out_ref) <= atol + rtol * np.abs(out_ref)), f"{desc}: output max err {np.nanmax(np.abs(got - out_ref))}, NaN {np.isnan(got).sum()}"
    fin = np.isfinite(lse_ref)
    assert np.all(np.isfinite(lse[fin])) and np.all(np.abs(lse[fin] - lse_ref[fin]) <= 1e-3 * (1 + np.abs(lse_ref[fin]))), f"{desc}: lse"
    rt = ROT_TOL[dtype]
    for name, g, e in [("present_key", present_k, ek), ("present_value", present_v, ev)]:
        g, e = f64(g), f64(e)
        same = (np.isnan(g) & np.isnan(e)) | (np.abs(g - e) <= rt * np.abs(e) + 1e-7)
        assert same.all(), f"{desc}: {name} differs at {np.argwhere(~same)[:5].tolist()}"


CASES = []
_r = np.random.default_rng(12345)
for dtype in DTYPES:
    for mode in ["none", "concat", "shared_inplace", "shared_copy"]:
        for rotary in [None, "half", "interleaved", "interleaved_pos"]:
            if mode == "none" and rotary is None:
                continue  # no cache at all: test_op.py's domain
            layout = ["BSNH", "BNSH", "3D"][_r.integers(3)]
            causal = bool(_r.integers(2)) or mode.startswith("shared")
            window = [(-1, -1), (3, -1), (2, 0)][_r.integers(3)]
            CASES.append((dtype, mode, rotary, layout, causal, window, int(_r.choice([1, 2, 3])), bool(_r.integers(2))))


@pytest.mark.parametrize("dtype,mode,rotary,layout,causal,window,gqa,mask", CASES)
def test_kv_cache_matches_reference(dtype, mode, rotary, layout, causal, window, gqa, mask):
    rng = np.random.default_rng([SEED, CASES.index((dtype, mode, rotary, layout, causal, window, gqa, mask))])
    run_kv_case(rng, dtype, mode, rotary, layout, causal, window, gqa, mask)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_decode_prefill_shapes(dtype):
    """A prefill (new tokens = queries > 1) into an empty shared buffer, and a one-token decode step."""
    rng = np.random.default_rng([SEED, 99])
    run_kv_case(rng, dtype, "shared_inplace", "half", "BSNH", True, (-1, -1), 2, False, S_new=6, cap=16)
    run_kv_case(rng, dtype, "shared_inplace", None, "BSNH", True, (-1, -1), 4, False, S_new=1, cap=7)


def test_decode_loop_in_place_equals_full_attention():
    """Ragged prefill (right-padded) + 8 decode steps through one shared buffer bound in place; every step's
    output equals causal attention over that row's whole sequence computed at once."""
    rng = np.random.default_rng([SEED, 7])
    B, N, D, cap = 2, 2, 8, 24
    lens = np.array([5, 3])
    steps = 8
    total = lens.max() + steps
    xs = rng.standard_normal((B, N, total, D)).astype(np.float32)  # q = k = v per position (simple)
    f = np.float32
    types = {
        "query": (TensorProto.FLOAT, ["b", "s", N, D]), "key": (TensorProto.FLOAT, ["b", "s", N, D]), "value": (TensorProto.FLOAT, ["b", "s", N, D]),
        "past_key": (TensorProto.FLOAT, ["b", N, cap, D]), "past_value": (TensorProto.FLOAT, ["b", N, cap, D]), "past_seqlens": (TensorProto.INT32, ["b"]),
    }
    sess = kv_session(types, {"causal": 1}, outputs=["output", "softmax_lse", "present_key", "present_value"])
    ck, cv = np.full((B, N, cap, D), np.nan, f), np.full((B, N, cap, D), np.nan, f)
    vk, vv = value(ck), value(cv)
    seq = [list(range(lens[b])) for b in range(B)]  # positions of each row's tokens
    cur = np.zeros(B, np.int64)
    for step in range(steps + 1):
        if step == 0:
            S = lens.max()
            idx = [list(range(S)) for _ in range(B)]  # right-padded prefill: the pads are ignored later
        else:
            S = 1
            idx = [[cur[b]] for b in range(B)]
        new = np.stack([xs[b][:, idx[b]] for b in range(B)]).transpose(0, 2, 1, 3).copy()  # BSNH
        binding = sess.io_binding()
        for n in ("query", "key", "value"):
            binding.bind_ortvalue_input(n, value(new))
        binding.bind_ortvalue_input("past_key", vk)
        binding.bind_ortvalue_input("past_value", vv)
        binding.bind_ortvalue_input("past_seqlens", value(cur.astype(np.int32)))
        binding.bind_ortvalue_output("present_key", vk)
        binding.bind_ortvalue_output("present_value", vv)
        binding.bind_output("output")
        binding.bind_output("softmax_lse")
        sess.run_with_iobinding(binding)
        out = binding.get_outputs()[2].numpy()  # in binding order: present_key, present_value, output
        for b in range(B):
            rows = range(lens[b]) if step == 0 else [0]
            for r in rows:
                p = r if step == 0 else cur[b]
                x = xs[b][:, : p + 1].astype(np.float64)
                ref, _ = reference(xs[b][None, :, p : p + 1].astype(np.float64), x[None], x[None], scale=D ** -0.5)
                got = out[b, r].astype(np.float64)
                assert np.allclose(got, ref[0, :, 0], atol=1e-4, rtol=1e-4), f"FLASHATTN_SEED={SEED} step {step} row {b} pos {p}"
        cur = lens.copy() if step == 0 else cur + 1
    assert np.isnan(ck[0, :, total:]).all(), "capacity past the last token must be untouched"


def _bad(types, attrs, feeds, needles, outputs=OUTPUTS):
    """Refused at session creation (static) or at run (dynamic) with a message containing needles."""
    try:
        sess = kv_session(types, attrs, outputs)
    except Exception as e:  # noqa: BLE001
        msg = str(e)
    else:
        with pytest.raises(Exception) as ei:
            sess.run(None, feeds)
        msg = str(ei.value)
        # the session keeps serving good requests afterwards is checked in test_session_survives
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def _base(B=2, S=1, N=2, D=8, cap=4):
    f = np.float32
    feeds = {
        "query": np.zeros((B, S, N, D), f), "key": np.zeros((B, S, N, D), f), "value": np.zeros((B, S, N, D), f),
        "past_key": np.zeros((B, N, cap, D), f), "past_value": np.zeros((B, N, cap, D), f),
    }
    return feeds


def _types(feeds):
    t = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32, np.dtype(np.int64): TensorProto.INT64}
    return {n: (t[a.dtype], list(a.shape)) for n, a in feeds.items()}


def test_bad_cache_inputs_are_refused():
    f = _base()
    g = {k: f[k] for k in ("query", "key", "value", "past_key")}
    _bad(_types(g), {}, g, ["'past_key' and 'past_value' must be given together"])
    g = dict(f, past_key=np.zeros((2, 3, 4, 8), np.float32))
    _bad(_types(g), {}, g, ["'past_key' has 3 heads", "2 key/value heads"])
    g = dict(f, past_value=np.zeros((2, 2, 4, 4), np.float32))
    _bad(_types(g), {}, g, ["'past_value' has head_dim 4", "'value' has 8"])
    g = dict(f, past_key=np.zeros((3, 2, 4, 8), np.float32))
    _bad(_types(g), {}, g, ["'past_key' has batch 3"])
    g = dict(f, past_key=np.zeros((2, 2, 8), np.float32))
    _bad(_types(g), {}, g, ["'past_key' must be 4D"])
    _bad(_types(f), {}, f, ["'present_key' and 'present_value' are required"], outputs=["output"])
    # shared buffer: static capacity, dynamic lengths
    g = dict(_base(S=5, cap=4), past_seqlens=np.zeros(2, np.int32))
    _bad(_types(g), {}, g, ["cache is too small", "4 positions", "5 new tokens"])
    g = dict(f, past_seqlens=np.array([1, 4], np.int32))
    _bad(_types(g), {}, g, ["cache is too small", "'past_seqlens'[1] = 4", "capacity 4"])
    g = dict(f, past_seqlens=np.array([-1, 0], np.int32))
    _bad(_types(g), {}, g, ["'past_seqlens'[0] = -1 is negative"])
    g = dict(f, past_seqlens=np.zeros(3, np.int32))
    _bad(_types(g), {}, g, ["'past_seqlens' must be 1D [batch] = [2]"])
    g = dict(f, past_seqlens=np.zeros(2, np.int32), key_seqlens=np.ones(2, np.int32))
    _bad(_types(g), {}, g, ["'key_seqlens' and 'past_seqlens' cannot be combined"])
    g = {k: f[k] for k in ("query", "key", "value")}
    g["past_seqlens"] = np.zeros(2, np.int32)
    _bad(_types(g), {}, g, ["'past_seqlens'", "needs 'past_key'"])
    # rotary
    cs = np.ones((6, 4), np.float32)
    g = dict(f, cos_cache=cs)
    _bad(_types(g), {}, g, ["'cos_cache' and 'sin_cache' must be given together"])
    g = dict(f, cos_cache=np.ones((6, 5), np.float32), sin_cache=np.ones((6, 5), np.float32))
    _bad(_types(g), {}, g, ["rotary dimension 2*5", "exceeds head_dim 8"])
    g = dict(f, cos_cache=cs, sin_cache=cs)  # concat: position of the new token = 4 + 0 < 6, fine; 7 rows short:
    g = dict(f, cos_cache=cs[:4], sin_cache=cs[:4])
    _bad(_types(g), {}, g, ["position of new token 0 of row 0", "= 4 is outside [0, 4)"])
    g = dict(f, cos_cache=cs, sin_cache=cs, position_ids=np.array([[0], [9]], np.int64))
    _bad(_types(g), {}, g, ["'position_ids'[1, 0] = 9 is outside [0, 6)"])
    g = dict(f, position_ids=np.zeros((2, 1), np.int64))
    _bad(_types(g), {}, g, ["'position_ids' needs the rotary caches"])
    _bad(_types(f), {"rotary_interleaved": 2}, f, ["'rotary_interleaved' must be 0 or 1"])


def test_session_survives_bad_lengths():
    f = dict(_base(), past_seqlens=np.array([0, 3], np.int32))
    sess = kv_session(_types(f), {})
    with pytest.raises(Exception, match="cache is too small"):
        sess.run(None, dict(f, past_seqlens=np.array([0, 4], np.int32)))
    out = sess.run(None, f)
    assert out[2].shape == (2, 2, 4, 8)
