//! The op as ORT sees it, once for every execution provider: name, inputs/outputs, shape inference,
//! attribute and static-shape checks at kernel creation, panic guards. A `Backend` supplies only the
//! provider's name and how one call is computed.

use std::marker::PhantomData;

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput, ShapeInferenceContext};
use ort::value::PrimitiveTensorElementType;

use super::signature::{self, MaskType};
use super::{guard, invalid};
use crate::cpu::Element;
use crate::schema::{OpAttributes, INPUT_NAMES};

/// Where a registered variant runs.
pub trait Backend: 'static {
    /// ORT's name of the execution provider; None for the CPU.
    const EXECUTION_PROVIDER: Option<&'static str>;
    /// Computes one call of the op on storage type T.
    fn compute<T: Element + PrimitiveTensorElementType>(attrs: &OpAttributes, mask: MaskType, ctx: &ComputeContext) -> ort::Result<()>;
}

/// One registered variant: storage type T, backend B, and what attn_mask holds.
pub struct FlashAttentionOp<T, B> {
    mask: MaskType,
    _p: PhantomData<fn() -> (T, B)>,
}

impl<T, B> FlashAttentionOp<T, B> {
    pub fn new(mask: MaskType) -> Self {
        FlashAttentionOp { mask, _p: PhantomData }
    }
}

pub struct FlashAttentionKernel<T, B> {
    attrs: OpAttributes,
    mask: MaskType,
    _p: PhantomData<fn() -> (T, B)>,
}

impl<T: Element + PrimitiveTensorElementType, B: Backend> Operator for FlashAttentionOp<T, B> {
    type Kernel<'attr> = FlashAttentionKernel<T, B>;

    fn name(&self) -> &str {
        crate::OP_NAME
    }

    fn execution_provider_type(&self) -> Option<&str> {
        B::EXECUTION_PROVIDER
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        signature::inputs(T::into_tensor_element_type(), self.mask)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        signature::outputs(T::into_tensor_element_type())
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<FlashAttentionKernel<T, B>> {
        guard("kernel creation", || {
            let attrs = OpAttributes::read(kctx).map_err(invalid)?;
            signature::check_static_shapes(kctx, &attrs)?;
            Ok(FlashAttentionKernel { attrs, mask: self.mask, _p: PhantomData })
        })
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        guard("shape inference", || signature::infer_shape(ctx))
    }
}

impl<T: Element + PrimitiveTensorElementType, B: Backend> Kernel for FlashAttentionKernel<T, B> {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        guard("compute", || B::compute::<T>(&self.attrs, self.mask, ctx))
    }
}

/// The error for an absent required input.
pub fn missing(i: usize) -> ort::Error {
    invalid(format!("ai.flashattn::FlashAttention: required input '{}' is missing", INPUT_NAMES[i]))
}
