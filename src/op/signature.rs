//! The op's declared inputs/outputs and its ORT shape inference, shared by every execution provider.

use std::ffi::{c_char, CStr};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use ort::operator::{OperatorInput, OperatorOutput, ShapeInferenceContext};
use ort::value::{Shape, SymbolicDimensions, TensorElementType, ValueType};
use ort::AsPointer;

use super::invalid;
use crate::params::MaskKind;
use crate::schema::{self, InputShapes, OpAttributes};

/// What `attn_mask` holds for one registered variant of the op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskType {
    /// bool: true = attend.
    Bool,
    /// Additive, the same float type as query.
    Additive,
}

impl MaskType {
    /// The kernels' mask kind for a call where the mask is `present` or absent.
    pub fn kind(self, present: bool) -> MaskKind {
        match (present, self) {
            (false, _) => MaskKind::None,
            (true, MaskType::Bool) => MaskKind::Bool,
            (true, MaskType::Additive) => MaskKind::Additive,
        }
    }
}

pub fn inputs(t: TensorElementType, mask: MaskType) -> Vec<OperatorInput> {
    let mask_t = match mask {
        MaskType::Bool => TensorElementType::Bool,
        MaskType::Additive => t,
    };
    vec![
        OperatorInput::required(t),
        OperatorInput::required(t),
        OperatorInput::required(t),
        OperatorInput::optional(mask_t),
        OperatorInput::optional(TensorElementType::Int32),
        // KV cache (#8): past_key, past_value, past_seqlens, cos_cache, sin_cache, position_ids.
        OperatorInput::optional(t),
        OperatorInput::optional(t),
        OperatorInput::optional(TensorElementType::Int32),
        OperatorInput::optional(t),
        OperatorInput::optional(t),
        OperatorInput::optional(TensorElementType::Int64),
    ]
}

pub fn outputs(t: TensorElementType) -> Vec<OperatorOutput> {
    vec![
        OperatorOutput::required(t),
        OperatorOutput::optional(TensorElementType::Float32),
        // present_key, present_value
        OperatorOutput::optional(t),
        OperatorOutput::optional(t),
    ]
}

/// One input's type and shape as ORT knows it at graph-build time.
struct InputInfo {
    ty: TensorElementType,
    dims: Vec<i64>,
    symbols: Vec<String>,
}

/// Reads input `i`; None when the input is absent (an empty name in the node).
fn input_info(ctx: &ShapeInferenceContext, i: usize) -> Option<InputInfo> {
    let api = ort::api();
    let mut info = ptr::null_mut();
    let status = unsafe { (api.ShapeInferContext_GetInputTypeShape)(ctx.ptr(), i, &mut info) };
    if !status.0.is_null() {
        unsafe { (api.ReleaseStatus)(status.0) };
        return None;
    }
    if info.is_null() {
        return None;
    }
    let read = || -> Option<InputInfo> {
        let mut ty = ort::sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
        let mut rank = 0usize;
        unsafe {
            if !(api.GetTensorElementType)(info, &mut ty).0.is_null() || !(api.GetDimensionsCount)(info, &mut rank).0.is_null() {
                return None;
            }
        }
        if rank == 0 {
            // An input whose shape the graph does not declare; every input of the op has rank ≥ 1.
            return None;
        }
        let mut dims = vec![0i64; rank];
        let mut syms: Vec<*const c_char> = vec![ptr::null(); rank];
        unsafe {
            if !(api.GetDimensions)(info, dims.as_mut_ptr(), rank).0.is_null() || !(api.GetSymbolicDimensions)(info, syms.as_mut_ptr(), rank).0.is_null() {
                return None;
            }
        }
        let symbols = syms
            .iter()
            .map(|p| if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(*p) }.to_string_lossy().into_owned() })
            .collect();
        Some(InputInfo { ty: ty.into(), dims, symbols })
    };
    // The info belongs to the context (ORT frees it): read it, never release it.
    read()
}

/// An output type for ORT. ORT reads a dimension with no symbol as a fixed value, so an unknown
/// dimension (-1) that has no symbol of its own gets a fresh unique one: -1 would be taken literally
/// (constant-folded by Shape, and equal to every other "-1" for the memory planner).
fn tensor_type(ty: TensorElementType, dims: &[i64], mut symbols: Vec<String>) -> ValueType {
    static FRESH: AtomicUsize = AtomicUsize::new(0);
    for (d, s) in dims.iter().zip(symbols.iter_mut()) {
        if *d >= 0 {
            s.clear();
        } else if s.is_empty() {
            *s = format!("flashattn_unk_{}", FRESH.fetch_add(1, Ordering::Relaxed));
        }
    }
    ValueType::Tensor { ty, shape: Shape::new(dims.iter().copied()), dimension_symbols: SymbolicDimensions::new(symbols) }
}

/// Validates static shapes and sets the outputs' types and shapes (symbolic dimensions carried over
/// from query, so downstream shapes stay named).
pub fn infer_shape(ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
    let attrs = OpAttributes::read(&*ctx).map_err(invalid)?;
    let mut count = 0usize;
    let st = unsafe { (ort::api().ShapeInferContext_GetInputCount)(ctx.ptr(), &mut count) };
    if !st.0.is_null() {
        unsafe { (ort::api().ReleaseStatus)(st.0) };
        return Ok(());
    }
    let info: Vec<Option<InputInfo>> = (0..schema::NUM_INPUTS).map(|i| if i < count { input_info(ctx, i) } else { None }).collect();
    let [Some(q), Some(_), Some(_), ..] = &info[..] else {
        // ORT could not tell us the types yet; the kernel validates at run time.
        return Ok(());
    };
    let same_type = [schema::KEY, schema::VALUE, schema::PAST_KEY, schema::PAST_VALUE, schema::COS_CACHE, schema::SIN_CACHE];
    for i in same_type {
        if let Some(x) = &info[i] {
            if x.ty != q.ty {
                let name = schema::INPUT_NAMES[i];
                return Err(invalid(format!("ai.flashattn::FlashAttention: input '{name}' has element type {:?} but 'query' has {:?}; they must match", x.ty, q.ty)));
            }
        }
    }
    let Some(shapes) = InputShapes::from_slots(std::array::from_fn(|i| info[i].as_ref().map(|x| x.dims.as_slice()))) else { return Ok(()) };
    let g = schema::geometry(&attrs, &shapes).map_err(invalid)?;
    let out = schema::output_shapes(&shapes, &g, &attrs);
    let sym = |i: usize| q.symbols.get(i).cloned().unwrap_or_default();
    let (heads, seq) = match (q.dims.len(), attrs.layout) {
        (4, schema::Layout::Bnsh) => (sym(1), sym(2)),
        (4, schema::Layout::Bsnh) => (sym(2), sym(1)),
        _ => (String::new(), sym(1)),
    };
    // The output's last dimension is value's head_dim (or heads·head_dim), never query's symbol.
    let mut out_syms: Vec<String> = (0..out.output.len()).map(sym).collect();
    if let Some(last) = out_syms.last_mut() {
        last.clear();
    }
    ctx.set_output(0, &tensor_type(q.ty, &out.output, out_syms))?;
    let lse = tensor_type(TensorElementType::Float32, &out.softmax_lse, vec![sym(0), heads, seq]);
    // The context cannot tell whether the node asks for softmax_lse. ORT 1.31 refuses index 1 on a
    // one-output node with an error; older runtimes (1.17 seen) index past the end and crash, so
    // there the lse shape is left for run time.
    if super::register::runtime_at_least(1, 31) {
        let _ = ctx.set_output(1, &lse);
        // present: [batch, heads_kv, seq, dim]; the sequence is past's (shared buffer) or a new symbol.
        let past_sym = |j: usize| info[schema::PAST_KEY].as_ref().and_then(|p| p.symbols.get(j).cloned()).unwrap_or_default();
        let seq_sym = if g.kv.shared { past_sym(2) } else { String::new() };
        let heads_sym = past_sym(1);
        let _ = ctx.set_output(2, &tensor_type(q.ty, &out.present_key, vec![sym(0), heads_sym.clone(), seq_sym.clone(), String::new()]));
        let _ = ctx.set_output(3, &tensor_type(q.ty, &out.present_value, vec![sym(0), heads_sym, seq_sym, String::new()]));
    }
    Ok(())
}

/// At kernel creation (session initialisation): checks whatever input shapes are already static, so
/// a model that can never run is refused when it loads (ORT only logs shape-inference failures).
pub fn check_static_shapes(kctx: &ort::operator::KernelContext, attrs: &OpAttributes) -> ort::Result<()> {
    // Absent optional inputs make ORT's input listing fail: then there is nothing static to check.
    let Ok(inputs) = kctx.inputs() else { return Ok(()) };
    let dims: Vec<Option<Vec<i64>>> = (0..schema::NUM_INPUTS)
        .map(|i| match inputs.get(i).map(|o| o.dtype()) {
            // Rank 0 here means "shape unknown" (every input of the op has rank ≥ 1): check at run time.
            Some(ValueType::Tensor { shape, .. }) if !shape.is_empty() => Some(shape.to_vec()),
            _ => None,
        })
        .collect();
    let Some(shapes) = InputShapes::from_slots(std::array::from_fn(|i| dims[i].as_deref())) else { return Ok(()) };
    schema::geometry(attrs, &shapes).map(|_| ()).map_err(invalid)
}
