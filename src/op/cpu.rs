//! The CPU execution provider's kernel of `ai.flashattn::FlashAttention`.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput, ShapeInferenceContext};
use ort::value::{PrimitiveTensorElementType, Shape};

use super::ort_pool::OrtPool;
use super::signature::{self, MaskType};
use super::{guard, invalid};
use crate::cpu::{self, Element, Inputs, MaskData};
use crate::params::MaskKind;
use crate::schema::{self, InputShapes, OpAttributes, INPUT_NAMES};

/// One registered variant: storage type T, and what attn_mask holds.
pub struct CpuOp<T> {
    mask: MaskType,
    _t: PhantomData<fn() -> T>,
}

impl<T> CpuOp<T> {
    pub fn new(mask: MaskType) -> Self {
        CpuOp { mask, _t: PhantomData }
    }
}

pub struct CpuKernel<T> {
    attrs: OpAttributes,
    mask: MaskType,
    _t: PhantomData<fn() -> T>,
}

impl<T: Element + PrimitiveTensorElementType> Operator for CpuOp<T> {
    type Kernel<'attr> = CpuKernel<T>;

    fn name(&self) -> &str {
        crate::OP_NAME
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        signature::inputs(T::into_tensor_element_type(), self.mask)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        signature::outputs(T::into_tensor_element_type())
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<CpuKernel<T>> {
        guard("kernel creation", || {
            let attrs = OpAttributes::read(kctx).map_err(invalid)?;
            signature::check_static_shapes(kctx, &attrs)?;
            Ok(CpuKernel { attrs, mask: self.mask, _t: PhantomData })
        })
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        guard("shape inference", || signature::infer_shape(ctx))
    }
}

fn missing(i: usize) -> ort::Error {
    invalid(format!("ai.flashattn::FlashAttention: required input '{}' is missing", INPUT_NAMES[i]))
}

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

impl<T: Element + PrimitiveTensorElementType> Kernel for CpuKernel<T> {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        guard("compute", || self.run(ctx))
    }
}

impl<T: Element + PrimitiveTensorElementType> CpuKernel<T> {
    fn run(&self, ctx: &ComputeContext) -> ort::Result<()> {
        let q = ctx.input(schema::QUERY)?.ok_or_else(|| missing(schema::QUERY))?;
        let k = ctx.input(schema::KEY)?.ok_or_else(|| missing(schema::KEY))?;
        let v = ctx.input(schema::VALUE)?.ok_or_else(|| missing(schema::VALUE))?;
        let mask = ctx.input(schema::ATTN_MASK)?;
        let seqlens = ctx.input(schema::KEY_SEQLENS)?;
        let (qs, qd) = typed::<T>(&q, schema::QUERY)?;
        let (ks, kd) = typed::<T>(&k, schema::KEY)?;
        let (vs, vd) = typed::<T>(&v, schema::VALUE)?;
        let (mask_shape, mask_data, mask_kind) = match (&mask, self.mask) {
            (None, _) => (None, MaskData::None, MaskKind::None),
            (Some(m), MaskType::Bool) => {
                let (s, d) = typed::<bool>(m, schema::ATTN_MASK)?;
                (Some(s), MaskData::Bool(d), MaskKind::Bool)
            }
            (Some(m), MaskType::Additive) => {
                let (s, d) = typed::<T>(m, schema::ATTN_MASK)?;
                (Some(s), MaskData::Additive(d), MaskKind::Additive)
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
        let (params, out_shapes) = schema::plan(&self.attrs, &shapes, T::DTYPE, mask_kind).map_err(invalid)?;
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
