"""Greedy generation through the bundled KV-cache decoders (models/kv/, made by models/make_kv_decoder.py),
original vs rewritten by `flashattn-ort rewrite`, in ONNX Runtime (CPU EP): prefill of a batch of 2 prompts of
different lengths + 32 decode steps. Same tokens, logits within tolerance.
- genai_gqa_decoder (GenAI-style com.microsoft GroupQueryAttention with past and rotary; right-padded
  prompts): both cache modes — one buffer of capacity CAP per cache bound as past and present (IOBinding,
  appended in place, as ORT GenAI's past_present_share_buffer) and separate past/present buffers swapped
  each step;
- ort_mha_decoder (com.microsoft MultiHeadAttention with past, as ORT's transformer optimizer emits;
  left-padded prompts, key padding mask over the cache): the concat mode, present fed back as past."""
import os
import pathlib
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from test_op import LIB, ROOT

MODEL = ROOT / "models" / "kv" / "genai_gqa_decoder.onnx"
MHA_MODEL = ROOT / "models" / "kv" / "ort_mha_decoder.onnx"
CLI = os.environ.get("FLASHATTN_ORT_CLI", str(pathlib.Path(LIB).parent / "flashattn-ort"))
STEPS = 32
LENS = (7, 4)
CAP = 48


def rewrite(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("kv") / (model.stem + ".flash.onnx")
    r = subprocess.run([CLI, "rewrite", str(model), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    return rewrite(MODEL, tmp_path_factory)


@pytest.fixture(scope="module")
def rewritten_mha(tmp_path_factory):
    return rewrite(MHA_MODEL, tmp_path_factory)


def test_every_gqa_layer_is_fused_with_its_cache(rewritten):
    m = onnx.load(str(rewritten))
    ops = [n.op_type for n in m.graph.node]
    assert "GroupQueryAttention" not in ops
    fa = [n for n in m.graph.node if n.op_type == "FlashAttention"]
    assert len(fa) == 2
    for n in fa:
        assert n.input[5].startswith("past_key_values.") and n.input[6].startswith("past_key_values."), list(n.input)
        assert n.input[7] and n.input[8] == "cos_cache" and n.input[9] == "sin_cache", list(n.input)
        assert n.output[2].startswith("present.") and n.output[3].startswith("present."), list(n.output)
    orig = onnx.load(str(MODEL))
    assert [i.name for i in m.graph.input] == [i.name for i in orig.graph.input]
    assert [o.name for o in m.graph.output] == [o.name for o in orig.graph.output]
    again = rewritten.with_name("again.onnx")
    r = subprocess.run([CLI, "rewrite", str(rewritten), "-o", str(again)], capture_output=True, text=True)
    assert r.returncode == 0 and onnx.load(str(again)).SerializeToString() == m.SerializeToString(), "second rewrite changed the model" 


def session(path, custom):
    so = ort.SessionOptions()
    if custom:
        so.register_custom_ops_library(LIB)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def generate(sess, mode, prompt):
    """Greedy decode; returns (tokens [B, STEPS+1], logits of each chosen position [B, STEPS+1, V])."""
    B = len(LENS)
    names = [i.name for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    shape = lambda: np.zeros((B, 2, CAP, 16), np.float32)
    past = {n: ort.OrtValue.ortvalue_from_numpy(shape()) for n in names}
    spare = {n: ort.OrtValue.ortvalue_from_numpy(shape()) for n in names} if mode == "copy" else None
    lens = np.array(LENS)
    ids = prompt
    mask = (np.arange(ids.shape[1])[None] < lens[:, None]).astype(np.int64)
    tokens, chosen = [], []
    for step in range(STEPS + 1):
        b = sess.io_binding()
        b.bind_cpu_input("input_ids", ids)
        b.bind_cpu_input("attention_mask", mask)
        b.bind_output("logits")
        for n in names:
            b.bind_ortvalue_input(n, past[n])
            present = n.replace("past_key_values.", "present.")
            b.bind_ortvalue_output(present, past[n] if mode == "shared" else spare[n])
        sess.run_with_iobinding(b)
        logits = b.get_outputs()[0].numpy()
        rows = lens - 1 if step == 0 else np.zeros(B, int)
        last = logits[np.arange(B), rows]
        nxt = last.argmax(-1)
        tokens.append(nxt)
        chosen.append(last)
        if mode == "copy":
            past, spare = spare, past
        if step > 0:
            lens = lens + 1
        else:
            lens = np.array(LENS)
        ids = nxt[:, None].astype(np.int64)
        total = lens.max() + 1
        mask = (np.arange(total)[None] < (lens + 1)[:, None]).astype(np.int64)
    return np.stack(tokens, 1), np.stack(chosen, 1)


@pytest.mark.parametrize("mode", ["shared", "copy"])
def test_generation_same_tokens(rewritten, mode):
    rng = np.random.default_rng(5)
    prompt = rng.integers(1, 64, (len(LENS), max(LENS))).astype(np.int64)
    for b, n in enumerate(LENS):
        prompt[b, n:] = 0
    t0, l0 = generate(session(MODEL, False), mode, prompt)
    t1, l1 = generate(session(rewritten, True), mode, prompt)
    assert len(set(t0[0].tolist())) > 3, f"degenerate generation {t0}"
    assert (t0 == t1).all(), f"{mode}: tokens differ\noriginal  {t0}\nrewritten {t1}"
    err = np.abs(l0 - l1).max()
    assert err <= 1e-4 * max(1.0, np.abs(l0).max()), f"{mode}: logits differ by {err}"


def test_bundled_prefill_reference(rewritten):
    """The bundled io: one prefill step; the rewritten model's logits on the real (unpadded) positions."""
    d = np.load(MODEL.with_suffix(".npz"))
    feeds = {k: d[k] for k in d.files if not k.startswith("ref:")}
    got = session(rewritten, True).run(["logits"], feeds)[0]
    got = np.where(feeds["attention_mask"][..., None] == 1, got, 0.0)
    assert np.abs(got - d["ref:output"]).max() <= 1e-4 * max(1.0, np.abs(d["ref:output"]).max())


def generate_concat(sess, prompt, lens):
    """Left-padded prompts, past/present growing by concatenation (numpy feeds, present fed back)."""
    B, S = prompt.shape
    names = [i.name for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    outs = ["logits"] + [n.replace("past_key_values.", "present.") for n in names]
    past = {n: np.zeros((B, 4, 0, 16), np.float32) for n in names}
    mask = (np.arange(S)[None] >= (S - np.array(lens))[:, None]).astype(np.int64)
    ids = prompt
    tokens, chosen = [], []
    for _ in range(STEPS + 1):
        r = sess.run(outs, {"input_ids": ids, "attention_mask": mask, **past})
        last = r[0][:, -1]
        nxt = last.argmax(-1)
        tokens.append(nxt)
        chosen.append(last)
        past = dict(zip(names, r[1:]))
        ids = nxt[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], 1)
    return np.stack(tokens, 1), np.stack(chosen, 1)


def test_mha_every_layer_fused_and_generation_same_tokens(rewritten_mha):
    m = onnx.load(str(rewritten_mha))
    fa = [n for n in m.graph.node if n.op_type == "FlashAttention"]
    assert len(fa) == 2 and "MultiHeadAttention" not in [n.op_type for n in m.graph.node]
    assert all(n.input[5].startswith("past_key_values.") and n.output[2].startswith("present.") for n in fa)
    rng = np.random.default_rng(6)
    S = max(LENS)
    prompt = rng.integers(1, 64, (len(LENS), S)).astype(np.int64)
    for b, n in enumerate(LENS):
        prompt[b, : S - n] = 0
    t0, l0 = generate_concat(session(MHA_MODEL, False), prompt, LENS)
    t1, l1 = generate_concat(session(rewritten_mha, True), prompt, LENS)
    assert len(set(t0[0].tolist())) > 3, f"degenerate generation {t0}"
    assert (t0 == t1).all(), f"tokens differ\noriginal  {t0}\nrewritten {t1}"
    err = np.abs(l0 - l1).max()
    assert err <= 1e-4 * max(1.0, np.abs(l0).max()), f"logits differ by {err}"
    d = np.load(MHA_MODEL.with_suffix(".npz"))
    feeds = {k: d[k] for k in d.files if not k.startswith("ref:")}
    got = session(rewritten_mha, True).run(["logits"], feeds)[0]
    got = np.where(feeds["attention_mask"][..., None] == 1, got, 0.0)
    assert np.abs(got - d["ref:output"]).max() <= 1e-4 * max(1.0, np.abs(d["ref:output"]).max())
