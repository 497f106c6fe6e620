//! The `rewrite` and `verify` commands on good and bad input: exit codes, messages, no partial output,
//! the input never touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use onnx_protobuf::Message;

fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flashattn-ort"))
}

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/exported").join(name)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flashattn-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    exe().args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn rewrite_writes_a_fused_model_and_verifies_it() {
    let d = tmpdir("good");
    let out = d.join("out.onnx");
    let input = model("llama_sdpa_dynamo.onnx");
    let before = std::fs::read(&input).unwrap();
    let o = run(&["rewrite", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--verify"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("2 attention layer(s) fused"), "{t}");
    assert!(t.contains("PASSED"), "{t}");
    let m = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(m.graph.node.iter().filter(|n| n.op_type == "FlashAttention").count(), 2);
    assert_eq!(before, std::fs::read(&input).unwrap(), "input modified");

    // The standalone verify command agrees.
    let o = run(&["verify", input.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn verifies_kv_cache_exports() {
    // torch.onnx exports with past_key_values: the generated attention_mask spans past + new positions.
    let d = tmpdir("kv");
    for name in ["llama_kv_dynamo.onnx", "mistral_kv_dynamo.onnx"] {
        let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/kv").join(name);
        let out = d.join(name);
        let o = run(&["rewrite", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--verify"]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert!(text(&o).contains("PASSED"), "{name}: {}", text(&o));
    }
}

#[test]
fn dry_run_and_json() {
    let d = tmpdir("dry");
    let out = d.join("never.onnx");
    let o = run(&["rewrite", model("bert_eager_ts.onnx").to_str().unwrap(), "-o", out.to_str().unwrap(), "--dry-run", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!out.exists(), "dry run wrote a file");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(j["report"]["fused"].as_array().unwrap().len(), 2);
    assert!(j["report"]["fused"][0]["mask"].as_str().unwrap().contains("key padding"));
}

#[test]
fn verify_fails_on_a_wrong_model() {
    let d = tmpdir("wrong");
    let out = d.join("out.onnx");
    let input = model("gpt2_sdpa_dynamo.onnx");
    let o = run(&["rewrite", input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // Break the rewrite: double every fused node's scale.
    let bad = with_scaled_attention(&out, 2.0, &d.join("bad.onnx"));
    let o = run(&["verify", input.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("BEYOND TOLERANCE"), "{}", text(&o));
}

/// A copy of the rewritten model `path` at `bad` with every FlashAttention node's scale multiplied by `factor`.
fn with_scaled_attention(path: &Path, factor: f32, bad: &Path) -> PathBuf {
    let mut m = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap();
    for n in m.graph.as_mut().unwrap().node.iter_mut().filter(|n| n.op_type == "FlashAttention") {
        for a in n.attribute.iter_mut().filter(|a| a.name == "scale") {
            a.f *= factor;
        }
    }
    std::fs::write(bad, m.write_to_bytes().unwrap()).unwrap();
    bad.to_path_buf()
}

/// `--fuse-rmsnorm --verify` on a float16 export: its five norms fused, and the fused model within the float16
/// tolerance of the original (a few units in the last place), while a broken float16 rewrite still fails it.
#[test]
fn fused_rmsnorm_verifies_and_fp16_verify_still_catches_errors() {
    let d = tmpdir("rmsnorm");
    let out = d.join("out.onnx");
    let input = model("llamafp16_sdpa_ts.onnx");
    let o = run(&["rewrite", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--fuse-rmsnorm", "--verify", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(j["report"]["rmsnorms_fused"], 5, "{j}");
    assert_eq!(j["verify"]["passed"], true, "{j}");
    let m = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    let norms = m.graph.node.iter().filter(|n| n.op_type == "SimplifiedLayerNormalization").count();
    assert_eq!(norms, 5);
    let bad = with_scaled_attention(&out, 1.25, &d.join("bad.onnx"));
    let o = run(&["verify", input.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn bad_inputs_fail_cleanly() {
    let d = tmpdir("bad");
    let out = d.join("out.onnx");
    let o_s = out.to_str().unwrap();

    // Missing file.
    let o = run(&["rewrite", d.join("missing.onnx").to_str().unwrap(), "-o", o_s]);
    assert!(!o.status.success());
    assert!(text(&o).contains("cannot read"), "{}", text(&o));
    assert!(!out.exists());

    // Truncated protobuf.
    let bytes = std::fs::read(model("bert_eager_ts.onnx")).unwrap();
    let trunc = d.join("trunc.onnx");
    std::fs::write(&trunc, &bytes[..bytes.len() / 3]).unwrap();
    let o = run(&["rewrite", trunc.to_str().unwrap(), "-o", o_s]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a valid ONNX model"), "{}", text(&o));
    assert!(!out.exists(), "partial output left behind");

    // Not a protobuf at all.
    let junk = d.join("junk.onnx");
    std::fs::write(&junk, b"this is not an onnx model\n").unwrap();
    let o = run(&["rewrite", junk.to_str().unwrap(), "-o", o_s]);
    assert!(!o.status.success());
    assert!(!out.exists());

    // Unsupported opset.
    let mut m = onnx_protobuf::ModelProto::parse_from_bytes(&bytes).unwrap();
    for op in m.opset_import.iter_mut().filter(|o| o.domain.is_empty()) {
        op.version = 9;
    }
    let old = d.join("old.onnx");
    std::fs::write(&old, m.write_to_bytes().unwrap()).unwrap();
    let o = run(&["rewrite", old.to_str().unwrap(), "-o", o_s]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unsupported ai.onnx opset 9"), "{}", text(&o));
    assert!(!out.exists());

    // Output path equal to the input: refused, input untouched.
    let copy = d.join("copy.onnx");
    std::fs::write(&copy, &bytes).unwrap();
    let o = run(&["rewrite", copy.to_str().unwrap(), "-o", copy.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is the input file"), "{}", text(&o));
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);

    // Missing -o.
    let o = run(&["rewrite", copy.to_str().unwrap()]);
    assert!(!o.status.success());
}
