//! The op inside ONNX Runtime, loaded from the built `libflashattn_ort.so` the way a Rust user
//! would (`SessionBuilder::with_operator_library`): numerics over the schema, shape inference, and
//! bad inputs refused with messages that name the input and the problem.

use flashattn_ort::check::{self, Case, CaseData, CaseMask};
use flashattn_ort::model::{self, Attr, Dim, FlashNode};
use flashattn_ort::params::DType;
use flashattn_ort::runtime;
use onnx_protobuf::tensor_proto::DataType;
use ort::value::Tensor;
use rand::SeedableRng;

fn lib() -> std::path::PathBuf {
    runtime::default_library_path().expect("cargo builds the cdylib before the tests")
}

#[test]
fn randomized_matrix_through_ort() {
    let seed = check::test_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..60 {
        let case = check::random_case(&mut rng, 260);
        let c = check::check_through_ort(&case, &lib(), seed.wrapping_add(i)).unwrap_or_else(|e| panic!("FLASHATTN_SEED={seed}: {}: {e:#}", case.describe()));
        assert!(c.passed(), "FLASHATTN_SEED={seed}: {}: {c:?}", case.describe());
    }
}

#[test]
fn multithreaded_session_matches() {
    // ORT pins its pool threads; tiles are planned once per call on the calling thread.
    for threads in [1, 2, 4] {
        let mut c = Case::new(DType::F32, 2, 8, 2, 300, 300, 64);
        c.causal = true;
        let data = CaseData::generate(&c, threads as u64);
        let mut s = check::session(&c, &lib(), Some(threads)).unwrap();
        let (out, lse) = check::run_session(&mut s, &c, check::ort_inputs(&c, &data).unwrap()).unwrap();
        let cmp = check::compare(&c, &c.params().unwrap(), &out, lse.as_deref(), &check::reference(&c, &data).unwrap());
        assert!(cmp.passed(), "threads={threads}: {cmp:?}");
    }
}

fn fixed(d: &[i64]) -> Vec<Dim> {
    d.iter().map(|x| Dim::Fixed(*x)).collect()
}

/// Session creation for a one-node model; Err carries ORT's message.
fn create(inputs: Vec<(&str, DataType, Vec<Dim>)>, attrs: Vec<(&str, Attr)>) -> Result<ort::session::Session, String> {
    let m = model::flash_attention_model(&FlashNode { inputs, attrs, with_lse: false });
    runtime::session_builder(&lib()).unwrap().commit_from_memory(&model::to_bytes(&m)).map_err(|e| e.to_string())
}

fn qkv(q: &[i64], k: &[i64], v: &[i64]) -> Vec<(&'static str, DataType, Vec<Dim>)> {
    vec![("query", DataType::FLOAT, fixed(q)), ("key", DataType::FLOAT, fixed(k)), ("value", DataType::FLOAT, fixed(v))]
}

fn expect_refused(inputs: Vec<(&str, DataType, Vec<Dim>)>, attrs: Vec<(&str, Attr)>, needles: &[&str]) {
    let e = create(inputs, attrs).err().unwrap_or_else(|| panic!("session creation must fail ({needles:?})"));
    for n in needles {
        assert!(e.contains(n), "message should contain {n:?}: {e}");
    }
}

#[test]
fn static_shape_errors_are_refused_at_session_creation() {
    let ok = [1, 4, 2, 8];
    expect_refused(qkv(&[1, 4, 8], &ok, &ok), vec![], &["'key'", "same rank as 'query'"]);
    expect_refused(qkv(&[1, 4], &[1, 4], &[1, 4]), vec![], &["'query'", "must be 4D"]);
    expect_refused(qkv(&[1, 4, 8], &[1, 4, 8], &[1, 4, 8]), vec![], &["num_heads"]);
    expect_refused(qkv(&[1, 4, 3, 8], &ok, &ok), vec![], &["query heads (3)", "multiple of key/value heads (2)"]);
    expect_refused(qkv(&[1, 4, 2, 8], &[1, 4, 2, 16], &ok), vec![], &["head_dim of 'key' (16)"]);
    expect_refused(qkv(&[1, 4, 2, 300], &[1, 4, 2, 300], &[1, 4, 2, 300]), vec![], &["300", "at most 256"]);
    expect_refused(qkv(&[2, 4, 2, 8], &ok, &ok), vec![], &["batch sizes differ"]);
    expect_refused(qkv(&[1, 0, 2, 8], &ok, &ok), vec![], &["'query'", "empty dimension"]);
    expect_refused(qkv(&ok, &[1, 5, 2, 8], &ok), vec![], &["'key' and 'value'", "sequence length"]);
    let mut with_mask = qkv(&ok, &ok, &ok);
    with_mask.push(("attn_mask", DataType::BOOL, fixed(&[3, 4])));
    expect_refused(with_mask, vec![], &["'attn_mask'", "does not broadcast"]);
}

#[test]
fn bad_attributes_are_refused() {
    let ok = [1, 4, 2, 8];
    expect_refused(qkv(&ok, &ok, &ok), vec![("causal", Attr::Int(2))], &["'causal'", "0 or 1"]);
    expect_refused(qkv(&ok, &ok, &ok), vec![("layout", Attr::Str("NHWC".into()))], &["'layout'", "NHWC"]);
    expect_refused(qkv(&ok, &ok, &ok), vec![("softcap", Attr::Float(-1.0))], &["'softcap'"]);
    expect_refused(qkv(&ok, &ok, &ok), vec![("scale", Attr::Float(0.0))], &["'scale'"]);
    expect_refused(qkv(&ok, &ok, &ok), vec![("window_left", Attr::Int(-5))], &["'window_left'"]);
    expect_refused(qkv(&ok, &ok, &ok), vec![("num_heads", Attr::Int(0))], &["'num_heads'"]);
}

#[test]
fn mismatched_dtypes_are_refused() {
    let ok = fixed(&[1, 4, 2, 8]);
    let e = create(vec![("query", DataType::FLOAT, ok.clone()), ("key", DataType::FLOAT16, ok.clone()), ("value", DataType::FLOAT, ok)], vec![])
        .err()
        .expect("mixed float/float16 must be refused");
    assert!(e.contains("key") || e.contains("FlashAttention"), "{e}");
}

/// Dynamic shapes: validation happens at run time, the error names the input, and the session
/// keeps working for the next good request.
#[test]
fn runtime_errors_leave_the_session_usable() {
    let dynamic = |n: &str| vec![Dim::Named(format!("{n}b")), Dim::Named(format!("{n}s")), Dim::Named(format!("{n}h")), Dim::Named(format!("{n}d"))];
    let inputs = vec![("query", DataType::FLOAT, dynamic("q")), ("key", DataType::FLOAT, dynamic("k")), ("value", DataType::FLOAT, dynamic("v")), ("", DataType::FLOAT, vec![]), ("key_seqlens", DataType::INT32, vec![Dim::Named("b".into())])];
    let mut s = create(inputs, vec![]).unwrap();
    let t = |shape: [i64; 4]| Tensor::from_array((shape.to_vec(), vec![0.5f32; shape.iter().product::<i64>() as usize])).unwrap();
    let lens = |v: Vec<i32>| Tensor::from_array((vec![v.len() as i64], v)).unwrap();
    let run = |s: &mut ort::session::Session, q, k, v, l| s.run(ort::inputs!["query" => q, "key" => k, "value" => v, "key_seqlens" => l]).map(|_| ()).map_err(|e| e.to_string());
    let e = run(&mut s, t([1, 3, 3, 8]), t([1, 5, 2, 8]), t([1, 5, 2, 8]), lens(vec![5])).unwrap_err();
    assert!(e.contains("multiple of key/value heads"), "{e}");
    let e = run(&mut s, t([1, 3, 2, 8]), t([1, 5, 2, 8]), t([1, 5, 2, 8]), lens(vec![9])).unwrap_err();
    assert!(e.contains("'key_seqlens'[0] = 9"), "{e}");
    let e = run(&mut s, t([1, 3, 2, 8]), t([1, 5, 2, 8]), t([1, 5, 2, 8]), lens(vec![1, 2])).unwrap_err();
    assert!(e.contains("'key_seqlens'"), "{e}");
    run(&mut s, t([1, 3, 2, 8]), t([1, 5, 2, 8]), t([1, 5, 2, 8]), lens(vec![5])).expect("the session survives bad requests");
}

#[test]
fn shape_inference_names_output_dims() {
    let sym = |names: [&str; 4]| names.iter().map(|n| Dim::from(*n)).collect::<Vec<_>>();
    let mut inputs = vec![("query", DataType::FLOAT16, sym(["batch", "q_len", "8", "d"])), ("key", DataType::FLOAT16, sym(["batch", "kv_len", "2", "d"])), ("value", DataType::FLOAT16, sym(["batch", "kv_len", "2", "d"]))];
    // Heads fixed, head_dim fixed: the inferred output keeps batch/q_len symbolic and fixes the rest.
    inputs[0].2[2] = Dim::Fixed(8);
    inputs[0].2[3] = Dim::Fixed(64);
    inputs[1].2[2] = Dim::Fixed(2);
    inputs[1].2[3] = Dim::Fixed(64);
    inputs[2].2[2] = Dim::Fixed(2);
    inputs[2].2[3] = Dim::Fixed(32);
    let m = model::flash_attention_model(&FlashNode { inputs, attrs: vec![], with_lse: true });
    // ORT's own checker runs our inference when the model's outputs are left untyped: a graph that
    // consumes the output with a shape-dependent op would fail to load otherwise.
    let s = runtime::session_builder(&lib()).unwrap().commit_from_memory(&model::to_bytes(&m)).unwrap();
    assert_eq!(s.outputs().len(), 2);
}

#[test]
fn masks_of_every_kind_through_ort() {
    let seed = check::test_seed();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for mask in [CaseMask::Bool([2, 1, 1, 33]), CaseMask::Additive([2, 4, 17, 33]), CaseMask::Additive([1, 1, 17, 33])] {
            let mut c = Case::new(dtype, 2, 4, 2, 17, 33, 16);
            c.mask = mask;
            let r = check::check_through_ort(&c, &lib(), seed).unwrap_or_else(|e| panic!("{}: {e:#}", c.describe()));
            assert!(r.passed(), "FLASHATTN_SEED={seed}: {}: {r:?}", c.describe());
        }
    }
}
