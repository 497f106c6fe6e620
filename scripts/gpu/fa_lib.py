"""ctypes access to libflashattn_ort's GPU entry points (src/gpu/ffi.rs) on PyTorch tensors, and the
float64 / same-precision references. Used by numerics.py and bench.py; no Rust needed on the GPU machine."""
import ctypes
import math
import os

import torch

_TYPES = {1: ctypes.c_uint8, 4: None, 8: None}


def load(path):
    lib = ctypes.CDLL(path)
    lib.flashattn_ort_params_field.restype = ctypes.c_char_p
    lib.flashattn_ort_params_field.argtypes = [ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    lib.flashattn_ort_params_size.restype = ctypes.c_size_t
    lib.flashattn_ort_gpu_launch.restype = ctypes.c_int
    lib.flashattn_ort_gpu_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.flashattn_ort_gpu_last_error.restype = ctypes.c_char_p
    lib.flashattn_ort_gpu_kernel_name.restype = ctypes.c_int
    lib.flashattn_ort_gpu_kernel_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.flashattn_ort_gpu_set_kernel.restype = None
    lib.flashattn_ort_gpu_set_kernel.argtypes = [ctypes.c_char_p]
    lib.flashattn_ort_gpu_set_persistent.restype = None
    lib.flashattn_ort_gpu_set_persistent.argtypes = [ctypes.c_int]
    if hasattr(lib, "flashattn_ort_gpu_set_prefill_cluster"):  # builds before the Hopper clusters lack it
        lib.flashattn_ort_gpu_set_prefill_cluster.restype = None
        lib.flashattn_ort_gpu_set_prefill_cluster.argtypes = [ctypes.c_int]
    lib.flashattn_ort_gpu_launch_workspace.restype = ctypes.c_int
    lib.flashattn_ort_gpu_launch_workspace.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
    lib.flashattn_ort_gpu_workspace_size.restype = ctypes.c_int
    lib.flashattn_ort_gpu_workspace_size.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
    lib.flashattn_ort_gpu_set_decode_splits.restype = None
    lib.flashattn_ort_gpu_set_decode_splits.argtypes = [ctypes.c_int]
    lib.flashattn_ort_gpu_set_dependent_launch.restype = None
    lib.flashattn_ort_gpu_set_dependent_launch.argtypes = [ctypes.c_int]
    # Build the ctypes mirror of AttnParams from the library's own layout table.
    fields, i = [], 0
    while True:
        off, size = ctypes.c_size_t(), ctypes.c_size_t()
        name = lib.flashattn_ort_params_field(i, ctypes.byref(off), ctypes.byref(size))
        if not name:
            break
        fields.append((name.decode(), off.value, size.value))
        i += 1
    float_fields = {"scale", "softcap"}
    unsigned = {n for n, _, _ in fields if n.endswith("_ptr")}
    cfields, pos = [], 0
    for name, off, size in sorted(fields, key=lambda f: f[1]):
        assert off == pos, f"gap before {name}"
        if name in float_fields:
            t = ctypes.c_float
        elif size == 8:
            t = ctypes.c_uint64 if name in unsigned else ctypes.c_int64
        else:
            t = ctypes.c_int32
        cfields.append((name, t))
        pos = off + size
    Params = type("AttnParams", (ctypes.Structure,), {"_fields_": cfields})
    assert ctypes.sizeof(Params) == lib.flashattn_ort_params_size(), "ctypes mirror size differs"
    lib.Params = Params
    return lib


DTYPE_CODE = {torch.float16: 1, torch.bfloat16: 2, torch.float32: 0}


def make_params(lib, q, k, v, out, lse=None, mask=None, seqlens=None, layout="BSNH", causal=False, scale=None,
                softcap=0.0, window_left=-1, window_right=-1):
    """q/k/v/out 4D in `layout` (any strides, head_dim contiguous); mask broadcastable to [B, Hq, Sq, Skv]."""
    P = lib.Params()
    if layout == "BSNH":
        B, Sq, Hq, D = q.shape
        Skv, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
        ax = (0, 2, 1)  # batch, head, row axes
    else:
        B, Hq, Sq, D = q.shape
        Hkv, Skv, Dv = k.shape[1], k.shape[2], v.shape[3]
        ax = (0, 1, 2)
    for t in (q, k, v, out):
        assert t.stride(3) == 1
    for name, t in (("q", q), ("k", k), ("v", v), ("out", out)):
        setattr(P, f"{name}_ptr", t.data_ptr())
        setattr(P, f"{name}_batch_stride", t.stride(ax[0]))
        setattr(P, f"{name}_head_stride", t.stride(ax[1]))
        setattr(P, f"{name}_row_stride", t.stride(ax[2]))
    P.lse_ptr = lse.data_ptr() if lse is not None else 0
    if mask is not None:
        m4 = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
        target = (B, Hq, Sq, Skv)
        st = [0 if (m4.shape[i] == 1 and target[i] != 1) else m4.stride(i) for i in range(4)]
        P.mask_ptr = m4.data_ptr()
        P.mask_batch_stride, P.mask_head_stride, P.mask_row_stride, P.mask_col_stride = st
        P.mask_kind = 1 if mask.dtype == torch.bool else 2
    if seqlens is not None:
        P.seqlens_ptr = seqlens.data_ptr()
        P.has_seqlens = 1
    P.batch, P.heads_q, P.heads_kv, P.seq_q, P.seq_kv = B, Hq, Hkv, Sq, Skv
    P.head_dim, P.head_dim_v = D, Dv
    P.window_left = window_left
    wr = window_right
    if causal:
        wr = 0 if wr < 0 else min(wr, 0)
    P.window_right = wr
    P.dtype = DTYPE_CODE[q.dtype]
    P.scale = scale if scale is not None else 1.0 / math.sqrt(D)
    P.softcap = softcap
    return P


def workspace_bytes(lib, P, stream=None):
    """Device scratch the launch of P wants (split-KV decode partials; 0 for none)."""
    s = torch.cuda.current_stream().cuda_stream if stream is None else stream
    n = ctypes.c_size_t()
    if lib.flashattn_ort_gpu_workspace_size(ctypes.byref(P), ctypes.c_void_p(s), ctypes.byref(n)) != 0:
        raise RuntimeError(lib.flashattn_ort_gpu_last_error().decode())
    return n.value


def workspace(lib, P, stream=None):
    """A workspace tensor for P (None when it needs none); keep it for repeated launches."""
    n = workspace_bytes(lib, P, stream)
    return torch.empty(n, dtype=torch.uint8, device="cuda") if n else None


def launch(lib, P, stream=None, ws=None):
    """Queue the kernel for P on PyTorch's current stream. Without `ws`, a workspace of the size the library
    asks for is allocated here (stream-ordered: PyTorch reuses it only after this launch on the same stream)."""
    s = torch.cuda.current_stream().cuda_stream if stream is None else stream
    if ws is None:
        ws = workspace(lib, P, s)
    ptr, n = (ws.data_ptr(), ws.numel()) if ws is not None else (0, 0)
    rc = lib.flashattn_ort_gpu_launch_workspace(ctypes.byref(P), ctypes.c_void_p(s), ctypes.c_uint64(ptr), ctypes.c_size_t(n))
    if rc != 0:
        raise RuntimeError(lib.flashattn_ort_gpu_last_error().decode())


def set_decode_splits(lib, n):
    """-1: automatic; 0: split-KV decode kernel off; n >= 1: force n splits where it applies."""
    lib.flashattn_ort_gpu_set_decode_splits(n)


def _setting(lib, symbol, value, what):
    """Calls the library's int setting `symbol` with `value`; a build without it accepts only -1 (automatic)."""
    f = getattr(lib, symbol, None)
    if f is None:
        if value != -1:
            raise RuntimeError(f"this build of the library has no {what}")
        return
    f.restype = None
    f.argtypes = [ctypes.c_int]
    f(value)


def set_l2_promotion(lib, nbytes):
    """The tensor maps' L2 promotion: -1 the library's default, 0 none, 64, 128 or 256 bytes."""
    _setting(lib, "flashattn_ort_gpu_set_l2_promotion", nbytes, "L2 promotion setting")


def set_decode_cluster(lib, mode):
    """How decode splits merge on Hopper and newer: -1 automatic; 0 always through the workspace and the combine
    kernel; 1 inside a thread-block cluster whenever the split count fits one (automatic counts capped)."""
    _setting(lib, "flashattn_ort_gpu_set_decode_cluster", mode, "cluster merge for decode splits")


def set_decode_row_groups(lib, n):
    """Into how many row groups the decode kernel cuts an MQA step's packed rows: -1 automatic; 0 or 1 one group;
    n: n groups where possible."""
    _setting(lib, "flashattn_ort_gpu_set_decode_row_groups", n, "decode row groups")


def set_key_padding(lib, mode):
    """Key-padding masks through the plain kernel gated on a scan of the mask: -1 where it applies and the problem
    is large enough (default); 0 never (the masked kernel alone); 1 wherever it applies."""
    _setting(lib, "flashattn_ort_gpu_set_key_padding", mode, "key-padding fast path")


def set_prefill_splits(lib, n):
    """Split-KV of the Hopper prefill kernel (its `_packgqa` and `_split` instances): -1 automatic; 0 never; n > 1:
    n splits wherever a plain Hopper problem can run them."""
    _setting(lib, "flashattn_ort_gpu_set_prefill_splits", n, "prefill splits")


def set_dependent_launch(lib, on):
    """Programmatic dependent launches of the decode kernels on (default) or off (Hopper and newer)."""
    lib.flashattn_ort_gpu_set_dependent_launch(1 if on else 0)


def kernel_name(lib, P):
    buf = ctypes.create_string_buffer(128)
    if lib.flashattn_ort_gpu_kernel_name(ctypes.byref(P), buf, 128) != 0:
        return "?"
    return buf.value.decode()


def reference(q, k, v, mask=None, seqlens=None, layout="BSNH", causal=False, scale=None, softcap=0.0,
              window_left=-1, window_right=-1, dtype=torch.float64):
    """The schema's semantics in `dtype` (float64: the reference; the input dtype: the 'naive same-precision
    implementation' FA3-style tolerances compare against). Returns out (query layout) and lse [B, Hq, Sq]."""
    if layout == "BSNH":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    B, Hq, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    g = Hq // Hkv
    k = k.repeat_interleave(g, dim=1)
    v = v.repeat_interleave(g, dim=1)
    scale = scale if scale is not None else 1.0 / math.sqrt(D)
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    visible = torch.ones(B, Hq, Sq, Skv, dtype=torch.bool, device=q.device)
    if mask is not None:
        if mask.dtype == torch.bool:
            visible = visible & mask
        else:
            s = s + mask.to(dtype)
    i = torch.arange(Sq, device=q.device).view(-1, 1)
    j = torch.arange(Skv, device=q.device).view(1, -1)
    diag = i + (Skv - Sq)
    wr = window_right
    if causal:
        wr = 0 if wr < 0 else min(wr, 0)
    if wr >= 0:
        visible = visible & (j <= diag + wr)
    if window_left >= 0:
        visible = visible & (j >= diag - window_left)
    if seqlens is not None:
        visible = visible & (j.view(1, 1, 1, -1) < seqlens.view(-1, 1, 1, 1).clamp(0, Skv))
    s = s.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(s.float() if dtype != torch.float64 else s, dim=-1)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    l = p.sum(-1, keepdim=True)
    p = torch.where(l > 0, p / torch.where(l > 0, l, torch.ones_like(l)), torch.zeros_like(p))
    out = torch.matmul(p, v)
    if layout == "BSNH":
        out = out.transpose(1, 2)
    return out, lse
