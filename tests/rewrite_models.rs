//! Rewrites every bundled model (models/exported: torch.onnx exports; models/synthetic: fused ONNX /
//! com.microsoft attention ops) and checks that every attention layer is fused, that the rewrite keeps
//! the model's interface, is idempotent, and that the rewritten model, run in ONNX Runtime with our
//! custom-op library, reproduces the reference outputs (PyTorch's, or ONNX Runtime's for its own ops).

use std::path::{Path, PathBuf};

use flashattn_ort::rewrite::{self, io, Options};
use half::f16;
use onnx_protobuf::{Message, ModelProto};
use ort::value::{DynValue, Tensor};

fn models() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut v = vec![];
    for dir in ["exported", "synthetic"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "onnx") {
                v.push(p);
            }
        }
    }
    v.sort();
    assert!(v.len() >= 20, "bundled models missing: {v:?}");
    v
}

/// Attention sites in an original model: Softmax nodes (decomposed attention) and fused attention ops.
fn attention_sites(m: &ModelProto) -> usize {
    m.graph
        .node
        .iter()
        .filter(|n| {
            (n.domain.is_empty() && (n.op_type == "Softmax" || n.op_type == "Attention"))
                || (n.domain == "com.microsoft" && matches!(n.op_type.as_str(), "MultiHeadAttention" | "GroupQueryAttention" | "Attention"))
        })
        .count()
}

fn rewritten(path: &Path) -> (ModelProto, ModelProto, rewrite::Report) {
    let orig = io::load(path).unwrap();
    let mut m = orig.clone();
    let rep = rewrite::rewrite_model(&mut m, path.parent(), &Options::default()).unwrap();
    (orig, m, rep)
}

#[test]
fn every_attention_layer_is_fused() {
    for p in models() {
        let (orig, m, rep) = rewritten(&p);
        let name = p.file_name().unwrap().to_string_lossy();
        let sites = attention_sites(&orig);
        assert!(sites >= 1, "{name}: no attention found in the original");
        assert_eq!(rep.fused.len(), sites, "{name}: fused {} of {sites}; skipped: {:?}", rep.fused.len(), rep.skipped);
        assert_eq!(attention_sites(&m), 0, "{name}: attention left after the rewrite");
        let fa = m.graph.node.iter().filter(|n| n.domain == "ai.flashattn" && n.op_type == "FlashAttention").count();
        assert_eq!(fa, sites, "{name}");
        // Interface, initializers used by the graph, metadata and the opset import.
        let names = |m: &ModelProto| -> (Vec<String>, Vec<String>) {
            (m.graph.input.iter().map(|v| v.name.clone()).collect(), m.graph.output.iter().map(|v| v.name.clone()).collect())
        };
        assert_eq!(names(&orig), names(&m), "{name}: graph inputs/outputs changed");
        assert_eq!(orig.metadata_props, m.metadata_props);
        assert_eq!(orig.ir_version, m.ir_version);
        assert!(m.opset_import.iter().any(|o| o.domain == "ai.flashattn" && o.version == 1), "{name}: no ai.flashattn opset import");
        let produced: std::collections::HashSet<&str> = m
            .graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(|s| s.as_str()))
            .chain(m.graph.initializer.iter().map(|t| t.name.as_str()))
            .chain(m.graph.input.iter().map(|t| t.name.as_str()))
            .collect();
        for n in &m.graph.node {
            for i in n.input.iter().filter(|s| !s.is_empty()) {
                assert!(produced.contains(i.as_str()), "{name}: node {} reads undefined '{i}'", n.name);
            }
        }
        assert!(m.graph.node.len() < orig.graph.node.len() || name.starts_with("ms_") || name.starts_with("onnx_"), "{name}: dead nodes not removed");
    }
}

#[test]
fn rewrite_is_idempotent() {
    for p in models() {
        let (_, m, _) = rewritten(&p);
        let once = m.write_to_bytes().unwrap();
        let mut again = m.clone();
        let rep = rewrite::rewrite_model(&mut again, p.parent(), &Options::default()).unwrap();
        assert!(rep.fused.is_empty(), "{}: second run fused {:?}", p.display(), rep.fused);
        assert_eq!(once, again.write_to_bytes().unwrap(), "{}: second run changed the model", p.display());
    }
}

#[test]
fn dry_run_changes_nothing() {
    let p = &models()[0];
    let orig = io::load(p).unwrap();
    let mut m = orig.clone();
    let rep = rewrite::rewrite_model(&mut m, p.parent(), &Options { dry_run: true, ..Options::default() }).unwrap();
    assert!(!rep.fused.is_empty());
    assert_eq!(orig.write_to_bytes().unwrap(), m.write_to_bytes().unwrap());
}

/// The mapping the rewriter chose, per model family (the fast paths must be used where provable).
#[test]
fn masks_map_to_fast_paths() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/exported");
    let check = |file: &str, causal: bool, window: i64, mask: &str| {
        let (_, _, rep) = rewritten(&dir.join(file));
        for f in &rep.fused {
            assert_eq!(f.causal, causal, "{file}: {f:?}");
            assert!(f.mask.contains(mask), "{file}: {f:?}");
            if window >= 0 {
                assert_eq!(f.window_left, window, "{file}: {f:?}");
            }
        }
    };
    for ex in ["dynamo", "ts"] {
        for imp in ["eager", "sdpa"] {
            check(&format!("bert_{imp}_{ex}.onnx"), false, -1, "key padding");
            check(&format!("gpt2_{imp}_{ex}.onnx"), true, -1, "key padding");
            check(&format!("llama_{imp}_{ex}.onnx"), true, -1, "key padding");
            check(&format!("vit_{imp}_{ex}.onnx"), false, -1, "");
        }
        check(&format!("mistral_sdpa_{ex}.onnx"), true, 3, "window_left=3");
    }
    // Gemma2 alternates sliding-window and global layers; both must be told apart.
    let (_, _, rep) = rewritten(&dir.join("gemma2_eager_dynamo.onnx"));
    let windows: Vec<i64> = rep.fused.iter().map(|f| f.window_left).collect();
    assert_eq!(windows, vec![3, -1], "{:?}", rep.fused);
    assert!(rep.fused.iter().all(|f| f.softcap == 50.0));
}

// ---- numerics through ONNX Runtime ----

fn load_io(p: &Path) -> (Vec<(String, DynValue)>, Vec<f64>, Vec<usize>) {
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(p.with_extension("io.json")).unwrap()).unwrap();
    let mut inputs = vec![];
    for (name, t) in j["inputs"].as_object().unwrap() {
        let shape: Vec<i64> = t["shape"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        let data = t["data"].as_array().unwrap();
        let v: DynValue = match t["dtype"].as_str().unwrap() {
            "float32" => Tensor::from_array((shape, data.iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>())).unwrap().into_dyn(),
            "float16" => Tensor::from_array((shape, data.iter().map(|x| f16::from_f64(x.as_f64().unwrap())).collect::<Vec<_>>())).unwrap().into_dyn(),
            "int64" => Tensor::from_array((shape, data.iter().map(|x| x.as_i64().unwrap()).collect::<Vec<_>>())).unwrap().into_dyn(),
            "int32" => Tensor::from_array((shape, data.iter().map(|x| x.as_i64().unwrap() as i32).collect::<Vec<_>>())).unwrap().into_dyn(),
            "bool" => Tensor::from_array((shape, data.iter().map(|x| x.as_bool().unwrap()).collect::<Vec<_>>())).unwrap().into_dyn(),
            d => panic!("dtype {d}"),
        };
        inputs.push((name.clone(), v));
    }
    let out = &j["output"];
    let want = out["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let shape = out["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    (inputs, want, shape)
}

/// Runs the session and returns the max abs error of its "output" (f32 or f16) against `want`.
fn max_error(s: &mut ort::session::Session, inputs: Vec<(String, DynValue)>, want: &[f64], shape: &[usize]) -> Result<f64, String> {
    let outs = s.run(inputs).map_err(|e| e.to_string())?;
    let (got_shape, got): (Vec<usize>, Vec<f64>) = match outs["output"].try_extract_tensor::<f32>() {
        Ok((s, d)) => (s.iter().map(|&x| x as usize).collect(), d.iter().map(|&x| x as f64).collect()),
        Err(_) => {
            let (s, d) = outs["output"].try_extract_tensor::<f16>().map_err(|e| e.to_string())?;
            (s.iter().map(|&x| x as usize).collect(), d.iter().map(|x| x.to_f64()).collect())
        }
    };
    if got_shape != shape {
        return Err(format!("output shape {got_shape:?}, expected {shape:?}"));
    }
    Ok(got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max))
}

/// Runs the rewritten `m` of bundled model `p` in ONNX Runtime with our library and checks its output against
/// the reference: fp32 end to end, the reference went through the same float32 math in another order; fp16
/// models differ from PyTorch's fp16 CPU run by fp16 rounding (ONNX Runtime on the original model does too).
fn check_against_reference(p: &Path, m: &ModelProto) -> Result<(), String> {
    let lib = flashattn_ort::runtime::default_library_path().expect("custom-op library");
    let (inputs, want, shape) = load_io(p);
    let mut s = flashattn_ort::runtime::session_builder(&lib)
        .unwrap()
        .commit_from_memory(&m.write_to_bytes().unwrap())
        .map_err(|e| format!("{}: ORT cannot load the rewritten model: {e}", p.display()))?;
    let err = max_error(&mut s, inputs, &want, &shape).map_err(|e| format!("{}: run failed: {e}", p.display()))?;
    let fp16 = m.graph.output[0].type_.tensor_type().elem_type == 10;
    if err > if fp16 { 2e-2 } else { 1e-4 } {
        return Err(format!("{}: max abs error {err:.3e}", p.display()));
    }
    Ok(())
}

#[test]
fn rewritten_models_match_reference_outputs() {
    flashattn_ort::runtime::init().expect("ONNX Runtime");
    let failures: Vec<String> = models().iter().filter_map(|p| check_against_reference(p, &rewritten(p).1).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Written-out RMSNorms: ReduceMean over a square (Pow(x, 2) or Mul(x, x)).
fn written_out_rmsnorms(m: &ModelProto) -> usize {
    let producer = |t: &str| m.graph.node.iter().find(|n| n.output.iter().any(|o| o == t));
    m.graph
        .node
        .iter()
        .filter(|n| n.op_type == "ReduceMean")
        .filter(|n| producer(&n.input[0]).is_some_and(|p| p.op_type == "Pow" || (p.op_type == "Mul" && p.input[0] == p.input[1])))
        .count()
}

/// `--fuse-rmsnorm`: every RMSNorm of the decoder exports (Llama, Mistral, T5's encoder; fp32 and fp16) becomes
/// one normalization node, nothing else changes count, and every bundled model still reproduces its reference.
#[test]
fn rmsnorm_fusion_keeps_reference_outputs() {
    flashattn_ort::runtime::init().expect("ONNX Runtime");
    let opts = Options { fuse_rmsnorm: true, ..Options::default() };
    let mut failures = vec![];
    let mut fused_total = 0;
    for p in models() {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let orig = io::load(&p).unwrap();
        let mut m = orig.clone();
        let rep = rewrite::rewrite_model(&mut m, p.parent(), &opts).unwrap();
        let norm_nodes = |m: &ModelProto| {
            m.graph.node.iter().filter(|n| matches!(n.op_type.as_str(), "SimplifiedLayerNormalization" | "RMSNormalization")).count()
        };
        assert_eq!(norm_nodes(&m) - norm_nodes(&orig), rep.rmsnorms_fused, "{name}");
        assert_eq!(written_out_rmsnorms(&orig) - written_out_rmsnorms(&m), rep.rmsnorms_fused, "{name}");
        if ["llama", "mistral", "t5enc"].iter().any(|k| name.starts_with(k)) {
            assert!(rep.rmsnorms_fused > 0 && written_out_rmsnorms(&m) == 0, "{name}: {} RMSNorm(s) left", written_out_rmsnorms(&m));
        }
        assert_eq!(rep.fused.len(), rewritten(&p).2.fused.len(), "{name}: attention fusions changed");
        fused_total += rep.rmsnorms_fused;
        failures.extend(check_against_reference(&p, &m).err());
    }
    assert!(fused_total >= 10, "only {fused_total} RMSNorms fused over the bundled models");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Models over 2 GB keep their weights in external data files: the rewrite must keep them working,
/// copying the data file beside an output written to another folder, and leave the input alone.
#[test]
fn external_data_is_kept() {
    use onnx_protobuf::tensor_proto::DataLocation;
    use onnx_protobuf::StringStringEntryProto;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/exported/llama_eager_ts.onnx");
    let base = std::env::temp_dir().join(format!("flashattn-extdata-{}", std::process::id()));
    let (a, b) = (base.join("in"), base.join("out"));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut m = io::load(&src).unwrap();
    let mut blob = Vec::new();
    let mut moved = 0;
    for t in m.graph.as_mut().unwrap().initializer.iter_mut() {
        if t.raw_data.len() >= 256 {
            let entry = |k: &str, v: String| {
                let mut e = StringStringEntryProto::new();
                e.key = k.into();
                e.value = v;
                e
            };
            t.external_data = vec![
                entry("location", "weights.bin".into()),
                entry("offset", blob.len().to_string()),
                entry("length", t.raw_data.len().to_string()),
            ];
            blob.extend_from_slice(&t.raw_data);
            t.raw_data.clear();
            t.data_location = DataLocation::EXTERNAL.into();
            moved += 1;
        }
    }
    assert!(moved > 5);
    std::fs::write(a.join("weights.bin"), &blob).unwrap();
    let input = a.join("model.onnx");
    std::fs::write(&input, m.write_to_bytes().unwrap()).unwrap();
    let before = std::fs::read(&input).unwrap();

    let mut model = io::load(&input).unwrap();
    let rep = rewrite::rewrite_model(&mut model, Some(&a), &Options::default()).unwrap();
    assert_eq!(rep.fused.len(), 2, "{:?}", rep.skipped);
    let out = b.join("model.onnx");
    io::check_paths(&input, &out, &model).unwrap();
    io::save(&model, &a, &out).unwrap();
    assert_eq!(std::fs::read(b.join("weights.bin")).unwrap(), blob, "external data not copied");
    assert_eq!(std::fs::read(&input).unwrap(), before, "input modified");
    assert!(io::check_paths(&input, &a.join("weights.bin"), &model).is_err(), "overwriting external data must be refused");

    flashattn_ort::runtime::init().expect("ONNX Runtime");
    let lib = flashattn_ort::runtime::default_library_path().unwrap();
    let (inputs, want, shape) = load_io(&src);
    let mut s = flashattn_ort::runtime::session_builder(&lib).unwrap().commit_from_file(&out).unwrap();
    let err = max_error(&mut s, inputs, &want, &shape).unwrap();
    assert!(err < 1e-4, "max abs error {err}");
    let _ = std::fs::remove_dir_all(&base);
}
