//! The CPU execution provider's kernel of `ai.flashattn::FlashAttention`.

use std::sync::atomic::{AtomicBool, Ordering};

use ort::operator::ComputeContext;
use ort::value::{PrimitiveTensorElementType, Shape};

use super::ort_pool::OrtPool;
use super::invalid;
use super::operator::{missing, Backend};
use super::signature::MaskType;
use crate::cpu::{self, Element, Inputs, MaskData};
use crate::schema::{self, InputShapes, OpAttributes, INPUT_NAMES};

/// Names the input whose element type is wrong (ORT's own message does not).
fn typed<'v, E: PrimitiveTensorElementType>(v: &'v ort::value::ValueRef<'_>, i: usize) -> ort::Result<(&'v Shape, &'v [E])> {
    v.try_extract_tensor::<E>().map_err(|e| {
        invalid(format!(
            "ai.flashattn::FlashAttention: input '{}' must be a tensor of {:?}: {e}",
            INPUT_NAMES[i],
            E::into_tensor_element_type()
        ))
    })
}

/// The CPU backend: the tiled kernel in `crate::cpu` on the session's intra-op thread pool.
pub struct Cpu;

impl Backend for Cpu {
    const EXECUTION_PROVIDER: Option<&'static str> = None;

    fn compute<T: Element + PrimitiveTensorElementType>(attrs: &OpAttributes, mask_type: MaskType, ctx: &ComputeContext) -> ort::Result<()> {
        let q = ctx.input(schema::QUERY)?.ok_or_else(|| missing(schema::QUERY))?;
        let k = ctx.input(schema::KEY)?.ok_or_else(|| missing(schema::KEY))?;
        let v = ctx.input(schema::VALUE)?.ok_or_else(|| missing(schema::VALUE))?;
        let mask = ctx.input(schema::ATTN_MASK)?;
        let seqlens = ctx.input(schema::KEY_SEQLENS)?;
        let (qs, qd) = typed::<T>(&q, schema::QUERY)?;
        let (ks, kd) = typed::<T>(&k, schema::KEY)?;
        let (vs, vd) = typed::<T>(&v, schema::VALUE)?;
        let (mask_shape, mask_data) = match (&mask, mask_type) {
            (None, _) => (None, MaskData::None),
            (Some(m), MaskType::Bool) => {
                let (s, d) = typed::<bool>(m, schema::ATTN_MASK)?;
                (Some(s), MaskData::Bool(d))
            }
            (Some(m), MaskType::Additive) => {
                let (s, d) = typed::<T>(m, schema::ATTN_MASK)?;
                (Some(s), MaskData::Additive(d))
            }
        };
        let seqlens = match &seqlens {
            Some(s) => Some(typed::<i32>(s, schema::KEY_SEQLENS)?),
            None => None,
        };
        let shapes = InputShapes {
            query: qs,
            key: ks,
            value: vs,
            attn_mask: mask_shape.map(|s| &s[..]),
            key_seqlens: seqlens.map(|(s, _)| &s[..]),
        };
        let (params, out_shapes) = schema::plan(attrs, &shapes, T::DTYPE, mask_type.kind(mask.is_some())).map_err(invalid)?;
        let mut out = ctx.output(0, Shape::new(out_shapes.output.iter().copied()))?.ok_or_else(|| invalid("output 'output' could not be allocated"))?;
        let mut lse = if ctx.num_outputs()? > 1 { ctx.output(1, Shape::new(out_shapes.softmax_lse.iter().copied()))? } else { None };
        let (_, od) = out.try_extract_tensor_mut::<T>()?;
        let lse = match lse.as_mut() {
            Some(l) => Some(l.try_extract_tensor_mut::<f32>()?.1),
            None => None,
        };
        let inputs = Inputs { q: qd, k: kd, v: vd, mask: mask_data, seqlens: seqlens.map(|(_, d)| d) };
        let pool = OrtPool { ctx, panicked: AtomicBool::new(false) };
        cpu::attention(&params, &inputs, od, lse, &pool).map_err(invalid)?;
        if pool.panicked.load(Ordering::Relaxed) {
            return Err(ort::Error::new("ai.flashattn::FlashAttention: internal error in a CPU worker"));
        }
        Ok(())
    }
}
