//! The CPU execution provider's kernel of `ai.flashattn::FlashAttention`.

use std::sync::atomic::{AtomicBool, Ordering};

use ort::operator::ComputeContext;
use ort::value::{PrimitiveTensorElementType, Shape};

use super::ort_pool::OrtPool;
use super::invalid;
use super::operator::{missing, Backend};
use super::signature::MaskType;
use crate::cpu::kv::{self, Cache, Rotary};
use crate::cpu::{self, Element, Inputs, MaskData};
use crate::schema::{self, InputShapes, OpAttributes, INPUT_NAMES, OUTPUT_NAMES};

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
        let opt = |i: usize| -> ort::Result<Option<ort::value::ValueRef<'_>>> { if ctx.num_inputs()? > i { ctx.input(i) } else { Ok(None) } };
        let (past_k, past_v, past_lens) = (opt(schema::PAST_KEY)?, opt(schema::PAST_VALUE)?, opt(schema::PAST_SEQLENS)?);
        let (cos, sin, pos_ids) = (opt(schema::COS_CACHE)?, opt(schema::SIN_CACHE)?, opt(schema::POSITION_IDS)?);
        let past_k = past_k.as_ref().map(|x| typed::<T>(x, schema::PAST_KEY)).transpose()?;
        let past_v = past_v.as_ref().map(|x| typed::<T>(x, schema::PAST_VALUE)).transpose()?;
        let past_lens = past_lens.as_ref().map(|x| typed::<i32>(x, schema::PAST_SEQLENS)).transpose()?;
        let cos = cos.as_ref().map(|x| typed::<T>(x, schema::COS_CACHE)).transpose()?;
        let sin = sin.as_ref().map(|x| typed::<T>(x, schema::SIN_CACHE)).transpose()?;
        let pos_ids = pos_ids.as_ref().map(|x| typed::<i64>(x, schema::POSITION_IDS)).transpose()?;
        let shapes = InputShapes {
            query: qs,
            key: ks,
            value: vs,
            attn_mask: mask_shape.map(|s| &s[..]),
            key_seqlens: seqlens.map(|(s, _)| &s[..]),
            past_key: past_k.map(|(s, _)| &s[..]),
            past_value: past_v.map(|(s, _)| &s[..]),
            past_seqlens: past_lens.map(|(s, _)| &s[..]),
            cos_cache: cos.map(|(s, _)| &s[..]),
            sin_cache: sin.map(|(s, _)| &s[..]),
            position_ids: pos_ids.map(|(s, _)| &s[..]),
        };
        let n_out = ctx.num_outputs()?;
        let present = n_out > schema::PRESENT_VALUE;
        if n_out == schema::PRESENT_VALUE {
            return Err(invalid("ai.flashattn::FlashAttention: output 'present_key' needs 'present_value' too"));
        }
        let (params, kv_params, out_shapes) = schema::plan_kv(attrs, &shapes, T::DTYPE, mask_type.kind(mask.is_some()), present).map_err(invalid)?;
        let g = schema::geometry(attrs, &shapes).map_err(invalid)?;
        let past_lens = past_lens.map(|(_, d)| d);
        if let Some(l) = past_lens {
            if l.len() < params.batch as usize {
                return Err(invalid(format!("ai.flashattn::FlashAttention: input 'past_seqlens' holds {} elements, {} needed", l.len(), params.batch)));
            }
        }
        crate::kv_schema::check_data(&g.kv, params.batch as usize, params.seq_q as usize, past_lens, pos_ids.map(|(_, d)| d)).map_err(invalid)?;
        let alloc = |i: usize, shape: &[i64]| -> ort::Result<ort::value::ValueRefMut<'_>> {
            ctx.output(i, Shape::new(shape.iter().copied()))?.ok_or_else(|| invalid(format!("ai.flashattn::FlashAttention: output '{}' could not be allocated", OUTPUT_NAMES[i])))
        };
        let rotary = match (cos, sin) {
            (Some((_, c)), Some((_, s))) => Some(Rotary { cos: c, sin: s, position_ids: pos_ids.map(|(_, d)| d) }),
            _ => None,
        };
        // The append step: present written (in place when bound to past's buffer), rotary applied.
        let mut presents = None;
        if let Some(kp) = &kv_params {
            let mut pk = alloc(schema::PRESENT_KEY, &out_shapes.present_key)?;
            let mut pv = alloc(schema::PRESENT_VALUE, &out_shapes.present_value)?;
            // Past is read through raw pointers: with a shared buffer it is present's own memory.
            let past_k = past_k.map(|(_, d)| d.as_ptr());
            let past_v = past_v.map(|(_, d)| d.as_ptr());
            {
                let (_, pkd) = pk.try_extract_tensor_mut::<T>()?;
                let c = Cache { past: past_k, present: pkd, new: kd, strides: (kp.new_k_batch_stride, kp.new_k_head_stride, kp.new_k_row_stride), dim: kp.head_dim as usize };
                // SAFETY: past_key has the checked shape; it is disjoint from present or is present.
                unsafe { kv::append(kp, c, past_lens, rotary.as_ref()) };
            }
            {
                let (_, pvd) = pv.try_extract_tensor_mut::<T>()?;
                let c = Cache { past: past_v, present: pvd, new: vd, strides: (kp.new_v_batch_stride, kp.new_v_head_stride, kp.new_v_row_stride), dim: kp.head_dim_v as usize };
                // SAFETY: as above.
                unsafe { kv::append(kp, c, past_lens, None) };
            }
            presents = Some((pk, pv));
        }
        let q_rot = match (&kv_params, &rotary) {
            (Some(kp), Some(r)) => Some(kv::rotate_query(kp, qd, r, past_lens)),
            _ => None,
        };
        let mut out = alloc(schema::OUTPUT, &out_shapes.output)?;
        let mut lse = if n_out > 1 { ctx.output(1, Shape::new(out_shapes.softmax_lse.iter().copied()))? } else { None };
        let (_, od) = out.try_extract_tensor_mut::<T>()?;
        let lse = match lse.as_mut() {
            Some(l) => Some(l.try_extract_tensor_mut::<f32>()?.1),
            None => None,
        };
        let (kd, vd) = match (&presents, shapes.uses_cache()) {
            (Some((pk, pv)), true) => (pk.try_extract_tensor::<T>()?.1, pv.try_extract_tensor::<T>()?.1),
            _ => (kd, vd),
        };
        let attn_seqlens = if g.kv.shared { past_lens } else { seqlens.map(|(_, d)| d) };
        let inputs = Inputs { q: q_rot.as_deref().unwrap_or(qd), k: kd, v: vd, mask: mask_data, seqlens: attn_seqlens };
        let pool = OrtPool { ctx, panicked: AtomicBool::new(false) };
        cpu::attention(&params, &inputs, od, lse, &pool).map_err(invalid)?;
        if pool.panicked.load(Ordering::Relaxed) {
            return Err(ort::Error::new("ai.flashattn::FlashAttention: internal error in a CPU worker"));
        }
        Ok(())
    }
}
