#!/usr/bin/env python3
"""A numpy reference of ai.flashattn::FlashAttention for onnx.reference.ReferenceEvaluator, so that a rewritten
model can be checked against the exported model's PyTorch outputs without the compiled kernel:

    python models/reference_op.py REWRITTEN.onnx INPUTS.npz [--tol 1e-4]

INPUTS.npz holds the inputs by ONNX name and the expected output under "ref:output" (as models/export.py
writes them). Exit status 1 when the maximum absolute error exceeds --tol.
"""
import argparse
import sys

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun


def flash_attention(q, k, v, attn_mask=None, key_seqlens=None, layout="BSNH", num_heads=0, causal=0, scale=None,
                    softcap=0.0, window_left=-1, window_right=-1):
    three_d = q.ndim == 3
    if three_d:
        b, sq, _ = q.shape
        h = q.shape[2] // num_heads
        hkv = k.shape[2] // h
        q = q.reshape(b, sq, num_heads, h)
        k = k.reshape(b, k.shape[1], hkv, h)
        v = v.reshape(b, v.shape[1], hkv, v.shape[2] // hkv)
        layout = "BSNH"
    if layout == "BSNH":
        q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    qf, kf, vf = (x.astype(np.float64) for x in (q, k, v))
    nq, nkv = qf.shape[1], kf.shape[1]
    g = nq // nkv
    kf = np.repeat(kf, g, axis=1)
    vf = np.repeat(vf, g, axis=1)
    sq, skv = qf.shape[2], kf.shape[2]
    if scale is None:
        scale = 1.0 / np.sqrt(qf.shape[3])
    s = scale * qf @ kf.transpose(0, 1, 3, 2)
    if softcap:
        s = softcap * np.tanh(s / softcap)
    allowed = np.ones(s.shape, dtype=bool)
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            allowed &= np.broadcast_to(attn_mask, s.shape)
        else:
            s = s + attn_mask.astype(np.float64)
    i = np.arange(sq)[:, None]
    j = np.arange(skv)[None, :]
    diag = i + skv - sq
    if causal:
        window_right = 0 if window_right < 0 else min(window_right, 0)
    if window_right >= 0:
        allowed &= (j <= diag + window_right)
    if window_left >= 0:
        allowed &= (j >= diag - window_left)
    if key_seqlens is not None:
        allowed &= (np.arange(skv)[None, None, None, :] < key_seqlens.astype(np.int64)[:, None, None, None])
    s = np.where(allowed, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    p = np.exp(s - m)
    denom = p.sum(axis=-1, keepdims=True)
    p = np.where(denom > 0, p / np.where(denom > 0, denom, 1), 0)
    o = p @ vf
    if layout == "BSNH":
        o = o.transpose(0, 2, 1, 3)
    if three_d:
        o = o.reshape(o.shape[0], o.shape[1], -1)
    return o.astype(q.dtype)


class FlashAttention(OpRun):
    op_domain = "ai.flashattn"

    def _run(self, q, k, v, attn_mask=None, key_seqlens=None, layout=None, num_heads=None, causal=None, scale=None,
             softcap=None, window_left=None, window_right=None):
        lay = layout or "BSNH"
        if isinstance(lay, bytes):
            lay = lay.decode()
        out = flash_attention(q, k, v, attn_mask, key_seqlens, lay, num_heads or 0, causal or 0, scale, softcap or 0.0,
                              -1 if window_left is None else window_left, -1 if window_right is None else window_right)
        return (out,)


def run(model_path, feeds):
    ev = ReferenceEvaluator(model_path, new_ops=[FlashAttention])
    return ev.run(None, feeds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("npz")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    d = np.load(a.npz)
    feeds = {k: d[k] for k in d.files if not k.startswith("ref:")}
    out = run(a.model, feeds)[0]
    err = float(np.abs(out.astype(np.float64) - d["ref:output"]).max())
    print(f"max abs error {err:.3e}")
    return 0 if err <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
