//! `AttnParams` is defined once (src/params.rs); cxx generates the C++ header the CUDA kernels include.
//! This checks that C++ (compiled against that header in cpp_shim/) and Rust agree on its layout, and that
//! the field table the GPU test script builds its ctypes mirror from covers every byte.

use flashattn_ort::gpu::ffi::{cxx_kv_params_layout, cxx_params_layout, rust_params_layout};
use flashattn_ort::params::AttnParams;

#[test]
fn cxx_header_and_rust_agree_on_attn_params() {
    let (size, align, cxx) = cxx_params_layout();
    assert_eq!(size, std::mem::size_of::<AttnParams>(), "sizeof(AttnParams) differs between C++ and Rust");
    assert_eq!(align, std::mem::align_of::<AttnParams>(), "alignof(AttnParams) differs between C++ and Rust");
    let rust = rust_params_layout();
    assert_eq!(cxx.len(), rust.len(), "C++ and Rust list different numbers of fields");
    for ((cn, co, cs), (rn, ro, rs)) in cxx.iter().zip(rust.iter()) {
        assert_eq!((cn.as_str(), *co, *cs), (*rn, *ro, *rs), "field layout differs");
    }
}

#[test]
fn cxx_header_and_rust_agree_on_kv_append_params() {
    use flashattn_ort::params::KvAppendParams;
    let (size, align) = cxx_kv_params_layout();
    assert_eq!(size, std::mem::size_of::<KvAppendParams>(), "sizeof(KvAppendParams) differs between C++ and Rust");
    assert_eq!(align, std::mem::align_of::<KvAppendParams>(), "alignof(KvAppendParams) differs between C++ and Rust");
}

#[test]
fn field_table_covers_the_struct_without_gaps() {
    // A field added to AttnParams but missing from the tables leaves a gap or a short total.
    let mut fields = rust_params_layout();
    fields.sort_by_key(|f| f.1);
    let mut end = 0;
    for (name, off, size) in &fields {
        assert_eq!(*off, end, "gap (an unlisted field?) before {name}");
        end = off + size;
    }
    assert_eq!(end, std::mem::size_of::<AttnParams>(), "fields do not reach the end of AttnParams");
}

#[test]
fn enum_codes_match_the_kernels() {
    // kernels/params.cuh mirrors these values.
    use flashattn_ort::params::{DType, Gate, MaskKind};
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/params.cuh")).unwrap();
    for (name, v) in [("kMaskNone", MaskKind::None as i32), ("kMaskBool", MaskKind::Bool as i32), ("kMaskAdditive", MaskKind::Additive as i32)] {
        assert!(src.contains(&format!("{name} = {v}")), "{name} != {v} in kernels/params.cuh");
    }
    for (name, v) in [("kGateNone", Gate::None as i32), ("kGateAllPrefix", Gate::AllPrefix as i32), ("kGateSomeNotPrefix", Gate::SomeNotPrefix as i32)] {
        assert!(src.contains(&format!("{name} = {v}")), "{name} != {v} in kernels/params.cuh");
    }
    for (name, v) in [("kDtypeF32", DType::F32 as i32), ("kDtypeF16", DType::F16 as i32), ("kDtypeBF16", DType::BF16 as i32)] {
        assert!(src.contains(&format!("{name} = {v}")), "{name} != {v} in kernels/params.cuh");
    }
}
