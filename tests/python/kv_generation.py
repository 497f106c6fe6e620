"""Greedy generation loops over the bundled KV-cache decoders (models/kv/), shared by the CPU test
(test_generation.py) and the GPU check (scripts/gpu/kv_cuda.py). No pytest here.

- `generate_buffer`: GenAI style (genai_gqa_decoder*): right-padded prompts, caches of capacity CAP; mode
  "shared" binds one OrtValue per cache as both past and present (IOBinding: appended in place, as ORT
  GenAI's past_present_share_buffer), mode "copy" binds a second buffer as present and swaps them each step;
- `generate_concat`: (ort_mha_decoder*): left-padded prompts, past/present growing by concatenation, the
  attention mask covering the whole cache, present fed back as past.
- `generate_hf`: torch.onnx exports of Hugging Face decoders (*_kv_dynamo: past_key_values.{i}.key/value in,
  present.{i}.key/value out): prefill from an empty past, left-padded second prompt, present fed back.
All return (tokens [B, steps+1], logits at each chosen position [B, steps+1, V] as float64)."""
import pathlib

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[2]
KV_DIR = ROOT / "models" / "kv"
STEPS = 32
LENS = (7, 4)
CAP = 48
VOCAB = 64


def session(path, lib=None, providers=("CPUExecutionProvider",)):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if lib:
        so.register_custom_ops_library(str(lib))
    return ort.InferenceSession(str(path), so, providers=list(providers))


def prompts(seed, left_pad):
    rng = np.random.default_rng(seed)
    S = max(LENS)
    p = rng.integers(1, VOCAB, (len(LENS), S)).astype(np.int64)
    for b, n in enumerate(LENS):
        if left_pad:
            p[b, : S - n] = 0
        else:
            p[b, n:] = 0
    return p


def _cache_type(sess):
    t = next(i.type for i in sess.get_inputs() if i.name.startswith("past_key_values."))
    return np.float16 if "float16" in t else np.float32


def generate_buffer(sess, mode, prompt, device="cpu", steps=STEPS):
    B = len(LENS)
    names = [i.name for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    heads = sess.get_inputs()[2].shape[1]
    hd = sess.get_inputs()[2].shape[3]
    dt = _cache_type(sess)
    buf = lambda: ort.OrtValue.ortvalue_from_numpy(np.zeros((B, heads, CAP, hd), dt), device, 0)
    past = {n: buf() for n in names}
    spare = {n: buf() for n in names} if mode == "copy" else None
    lens = np.array(LENS)
    ids = prompt
    mask = (np.arange(ids.shape[1])[None] < lens[:, None]).astype(np.int64)
    tokens, chosen = [], []
    for step in range(steps + 1):
        b = sess.io_binding()
        b.bind_cpu_input("input_ids", ids)
        b.bind_cpu_input("attention_mask", mask)
        b.bind_output("logits")
        for n in names:
            b.bind_ortvalue_input(n, past[n])
            b.bind_ortvalue_output(n.replace("past_key_values.", "present."), past[n] if mode == "shared" else spare[n])
        sess.run_with_iobinding(b)
        logits = b.get_outputs()[0].numpy().astype(np.float64)
        rows = lens - 1 if step == 0 else np.zeros(B, int)
        last = logits[np.arange(B), rows]
        nxt = last.argmax(-1)
        tokens.append(nxt)
        chosen.append(last)
        if mode == "copy":
            past, spare = spare, past
        if step > 0:
            lens = lens + 1
        ids = nxt[:, None].astype(np.int64)
        mask = (np.arange(lens.max() + 1)[None] < (lens + 1)[:, None]).astype(np.int64)
    return np.stack(tokens, 1), np.stack(chosen, 1)


def generate_concat(sess, prompt, steps=STEPS):
    B, S = prompt.shape
    names = [i.name for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    heads = sess.get_inputs()[2].shape[1]
    hd = sess.get_inputs()[2].shape[3]
    dt = _cache_type(sess)
    outs = ["logits"] + [n.replace("past_key_values.", "present.") for n in names]
    past = {n: np.zeros((B, heads, 0, hd), dt) for n in names}
    mask = (np.arange(S)[None] >= (S - np.array(LENS))[:, None]).astype(np.int64)
    ids = prompt
    tokens, chosen = [], []
    for _ in range(steps + 1):
        r = sess.run(outs, {"input_ids": ids, "attention_mask": mask, **past})
        last = r[0][:, -1].astype(np.float64)
        nxt = last.argmax(-1)
        tokens.append(nxt)
        chosen.append(last)
        past = dict(zip(names, r[1:]))
        ids = nxt[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], 1)
    return np.stack(tokens, 1), np.stack(chosen, 1)


def generate_hf(sess, seed=0, steps=STEPS, vocab=128):
    past_in = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    out_names = [o.name for o in sess.get_outputs()]
    B, S = 2, 6
    past = {i.name: np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32) for i in past_in}
    ids = np.random.default_rng(seed).integers(1, vocab, (B, S)).astype(np.int64)
    mask = np.ones((B, S), np.int64)
    mask[1, :2] = 0  # left padding
    tokens, chosen = [], []
    for _ in range(steps + 1):
        r = sess.run(None, {"input_ids": ids, "attention_mask": mask, **past})
        last = r[0][:, -1].astype(np.float64)
        nxt = last.argmax(-1)
        tokens.append(nxt)
        chosen.append(last)
        past = {n.replace("present.", "past_key_values."): v for n, v in zip(out_names[1:], r[1:])}
        ids = nxt[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], 1)
    return np.stack(tokens, 1), np.stack(chosen, 1)


def compare(t0, l0, t1, l1, rtol):
    """None when the generations agree (same tokens, logits within rtol of their scale), else why not."""
    if len(set(t0.reshape(-1).tolist())) <= 3:
        return f"degenerate generation {t0.tolist()}"
    if not (t0 == t1).all():
        return f"tokens differ\noriginal  {t0.tolist()}\nrewritten {t1.tolist()}"
    err = np.abs(l0 - l1).max()
    if err > rtol * max(1.0, np.abs(l0).max()):
        return f"logits differ by {err:.3e} (scale {np.abs(l0).max():.1f})"
    return None
