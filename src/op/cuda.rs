//! The CUDA execution provider's kernel of `ai.flashattn::FlashAttention`: the same op name, domain and
//! schema as the CPU kernel (src/op/cpu.rs), registered for `CUDAExecutionProvider` for float16 and
//! bfloat16. Inputs and outputs are device memory; the kernel is queued on ORT's compute stream (whose
//! context picks the device) with no host synchronisation, so ORT's CUDA graph capture works; the only
//! allocation is the split-KV decode workspace, taken from ORT's allocator. float32 has no CUDA kernel: ORT
//! places float32 nodes on the CPU kernel (copying the tensors).
//!
//! On the GPU, `key_seqlens` values are clamped to [0, seq_kv] inside the kernel (the CPU kernel rejects
//! out-of-range values; reading them here would need a device-to-host copy and a stream sync); so are
//! `past_seqlens` (to [0, capacity - new tokens]) and rotary positions (to the cos/sin rows).
//!
//! KV cache (#8): the append step (src/gpu/kv_append.rs) writes present_key/present_value and rotates the
//! query into a scratch buffer from ORT's allocator for this kernel, then attention reads the cache. When
//! there is nothing to copy (shared buffer, or no past) and the split-KV decode kernel serves the step, that
//! kernel appends and rotates itself: one launch fewer per decode step.

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::operator::ComputeContext;
use ort::value::{PrimitiveTensorElementType, Shape, TensorElementType, ValueType};
use ort::AsPointer;

use super::invalid;
use super::operator::{missing, Backend};
use super::signature::MaskType;
use crate::cpu::Element;
use crate::schema::{self, InputShapes, OpAttributes, INPUT_NAMES, OUTPUT_NAMES};

pub const CUDA_EP: &str = "CUDAExecutionProvider";

/// A present input: its shape and device address, after checking its element type.
struct DeviceTensor {
    shape: Vec<i64>,
    addr: u64,
}

fn device_tensor(v: &ort::value::ValueRef<'_>, i: usize, want: TensorElementType) -> ort::Result<DeviceTensor> {
    let ValueType::Tensor { ty, shape, .. } = v.dtype() else {
        return Err(invalid(format!("ai.flashattn::FlashAttention: input '{}' must be a tensor", INPUT_NAMES[i])));
    };
    if *ty != want {
        return Err(invalid(format!("ai.flashattn::FlashAttention: input '{}' must be a tensor of {want:?}, got {ty:?}", INPUT_NAMES[i])));
    }
    Ok(DeviceTensor { shape: shape.to_vec(), addr: data_address(v.ptr())? })
}

fn data_address(value: *const ort::sys::OrtValue) -> ort::Result<u64> {
    let mut p: *mut ort::sys::c_void = std::ptr::null_mut();
    let st = unsafe { (ort::api().GetTensorMutableData)(value.cast_mut(), &mut p) };
    if !st.0.is_null() {
        unsafe { (ort::api().ReleaseStatus)(st.0) };
        return Err(ort::Error::new("ai.flashattn::FlashAttention: could not read a tensor's device address"));
    }
    Ok(p as u64)
}

/// The CUDA backend: our kernels on ORT's compute stream.
pub struct Cuda;

impl Backend for Cuda {
    const EXECUTION_PROVIDER: Option<&'static str> = Some(CUDA_EP);

    fn compute<T: Element + PrimitiveTensorElementType>(attrs: &OpAttributes, mask_type: MaskType, ctx: &ComputeContext) -> ort::Result<()> {
        let t = T::into_tensor_element_type();
        let input = |i: usize| ctx.input(i);
        let q = input(schema::QUERY)?.ok_or_else(|| missing(schema::QUERY))?;
        let k = input(schema::KEY)?.ok_or_else(|| missing(schema::KEY))?;
        let v = input(schema::VALUE)?.ok_or_else(|| missing(schema::VALUE))?;
        let q = device_tensor(&q, schema::QUERY, t)?;
        let k = device_tensor(&k, schema::KEY, t)?;
        let v = device_tensor(&v, schema::VALUE, t)?;
        let mask = match ctx.input(schema::ATTN_MASK)? {
            None => None,
            Some(m) => {
                let want = match mask_type {
                    MaskType::Bool => TensorElementType::Bool,
                    MaskType::Additive => t,
                };
                Some(device_tensor(&m, schema::ATTN_MASK, want)?)
            }
        };
        let seqlens = match ctx.input(schema::KEY_SEQLENS)? {
            None => None,
            Some(s) => Some(device_tensor(&s, schema::KEY_SEQLENS, TensorElementType::Int32)?),
        };
        let n_in = ctx.num_inputs()?;
        let opt = |i: usize, want: TensorElementType| -> ort::Result<Option<DeviceTensor>> {
            if n_in <= i {
                return Ok(None);
            }
            match ctx.input(i)? {
                None => Ok(None),
                Some(x) => Ok(Some(device_tensor(&x, i, want)?)),
            }
        };
        let past_k = opt(schema::PAST_KEY, t)?;
        let past_v = opt(schema::PAST_VALUE, t)?;
        let past_lens = opt(schema::PAST_SEQLENS, TensorElementType::Int32)?;
        let cos = opt(schema::COS_CACHE, t)?;
        let sin = opt(schema::SIN_CACHE, t)?;
        let pos_ids = opt(schema::POSITION_IDS, TensorElementType::Int64)?;
        let sh = |x: &Option<DeviceTensor>| -> Option<Vec<i64>> { x.as_ref().map(|d| d.shape.clone()) };
        let (pks, pvs, pls, cs, ss, ps) = (sh(&past_k), sh(&past_v), sh(&past_lens), sh(&cos), sh(&sin), sh(&pos_ids));
        let shapes = InputShapes {
            query: &q.shape,
            key: &k.shape,
            value: &v.shape,
            attn_mask: mask.as_ref().map(|m| m.shape.as_slice()),
            key_seqlens: seqlens.as_ref().map(|s| s.shape.as_slice()),
            past_key: pks.as_deref(),
            past_value: pvs.as_deref(),
            past_seqlens: pls.as_deref(),
            cos_cache: cs.as_deref(),
            sin_cache: ss.as_deref(),
            position_ids: ps.as_deref(),
        };
        let n_out = ctx.num_outputs()?;
        if n_out == schema::PRESENT_VALUE {
            return Err(invalid("ai.flashattn::FlashAttention: output 'present_key' needs 'present_value' too"));
        }
        let (mut params, kv_params, out_shapes) = schema::plan_kv(attrs, &shapes, T::DTYPE, mask_type.kind(mask.is_some()), n_out > schema::PRESENT_VALUE).map_err(invalid)?;
        let alloc = |i: usize, shape: &[i64]| -> ort::Result<ort::value::ValueRefMut<'_>> {
            ctx.output(i, Shape::new(shape.iter().copied()))?.ok_or_else(|| invalid(format!("ai.flashattn::FlashAttention: output '{}' could not be allocated", OUTPUT_NAMES[i])))
        };
        let out = alloc(schema::OUTPUT, &out_shapes.output)?;
        let lse = if n_out > 1 { ctx.output(1, Shape::new(out_shapes.softmax_lse.iter().copied()))? } else { None };
        let stream = ctx
            .stream()?
            .ok_or_else(|| ort::Error::new("ai.flashattn::FlashAttention: ONNX Runtime gave the CUDA kernel no compute stream"))?;
        params.q_ptr = q.addr;
        params.k_ptr = k.addr;
        params.v_ptr = v.addr;
        // The KV append step: present's buffers, and what attention reads from them.
        let mut append = None;
        if let Some(mut kp) = kv_params {
            let pk = alloc(schema::PRESENT_KEY, &out_shapes.present_key)?;
            let pv = alloc(schema::PRESENT_VALUE, &out_shapes.present_value)?;
            kp.present_k_ptr = data_address(pk.ptr())?;
            kp.present_v_ptr = data_address(pv.ptr())?;
            kp.new_k_ptr = k.addr;
            kp.new_v_ptr = v.addr;
            // No copy when the caller bound present to past's own buffer (shared-buffer mode).
            kp.past_k_ptr = past_k.as_ref().map_or(0, |x| if x.addr == kp.present_k_ptr { 0 } else { x.addr });
            kp.past_v_ptr = past_v.as_ref().map_or(0, |x| if x.addr == kp.present_v_ptr { 0 } else { x.addr });
            if (kp.past_k_ptr == 0) != (kp.past_v_ptr == 0) && past_k.is_some() {
                return Err(invalid("ai.flashattn::FlashAttention: present_key and present_value must both share past's buffers or neither"));
            }
            kp.past_lens_ptr = past_lens.as_ref().map_or(0, |x| x.addr);
            kp.cos_ptr = cos.as_ref().map_or(0, |x| x.addr);
            kp.sin_ptr = sin.as_ref().map_or(0, |x| x.addr);
            kp.pos_ids_ptr = pos_ids.as_ref().map_or(0, |x| x.addr);
            kp.q_ptr = q.addr;
            if shapes.uses_cache() {
                params.k_ptr = kp.present_k_ptr;
                params.v_ptr = kp.present_v_ptr;
            }
            if kp.shared_buffer != 0 {
                params.seqlens_ptr = kp.past_lens_ptr;
            }
            append = Some(kp);
        }
        params.out_ptr = data_address(out.ptr())?;
        params.lse_ptr = match &lse {
            Some(l) => data_address(l.ptr())?,
            None => 0,
        };
        params.mask_ptr = mask.as_ref().map_or(0, |m| m.addr);
        if params.seqlens_ptr == 0 {
            params.seqlens_ptr = seqlens.as_ref().map_or(0, |s| s.addr);
        }
        let stream = stream.as_ptr().cast();
        let gpu_err = |e: crate::gpu::GpuError| ort::Error::new(e.to_string());
        let mut prepared = crate::gpu::prepare(&params, stream).map_err(gpu_err)?;
        // The append runs inside the split-KV decode kernel where it can (nothing to copy), else as its own
        // kernel first, rotating the query into scratch from ORT's allocator (`_q_rot` lives until attention
        // is queued).
        let allocator;
        let mut _q_rot = None;
        let fused = match (&mut prepared, &append) {
            (Some(prepared), Some(kp)) => prepared.fuse_append(kp),
            _ => false,
        };
        if let (false, Some(mut kp)) = (fused, append) {
            if let (true, Some(prepared)) = (kp.rotary_dim > 0, &prepared) {
                let info = MemoryInfo::new(AllocationDevice::CUDA, prepared.device(), AllocatorType::Device, MemoryType::Default)?;
                allocator = ctx.allocator(&info)?;
                let block = allocator.alloc::<T>(q.shape.iter().product::<i64>() as usize)?;
                kp.q_rot_ptr = block.as_ptr() as u64;
                _q_rot = Some(block);
            }
            crate::gpu::kv_append::launch_append(&kp, stream).map_err(gpu_err)?;
            if let (true, Some(prepared)) = (kp.q_rot_ptr != 0, &mut prepared) {
                prepared.set_query(kp.q_rot_ptr);
            }
        }
        let Some(prepared) = prepared else {
            return Ok(()); // an empty dimension: nothing to compute
        };
        let ws_bytes = prepared.workspace_bytes();
        if ws_bytes == 0 {
            return prepared.launch(crate::gpu::decode::Workspace::default()).map_err(gpu_err);
        }
        // Split-KV decode scratch from ORT's allocator of this device (its arena under CUDA graphs too).
        // Freed when Compute returns, before the kernels have run: like the CUDA EP's own scratch buffers
        // this relies on the next user of the block being queued on the same compute stream.
        let info = MemoryInfo::new(AllocationDevice::CUDA, prepared.device(), AllocatorType::Device, MemoryType::Default)?;
        let ws_allocator = ctx.allocator(&info)?;
        let block = ws_allocator.alloc::<u8>(ws_bytes)?;
        let ws = crate::gpu::decode::Workspace { ptr: block.as_ptr() as u64, bytes: ws_bytes };
        prepared.launch(ws).map_err(gpu_err)
    }
}
