//! Small dense tensors for constant folding and mask probing: every element is held as f64 with the
//! ONNX element type alongside (integers up to 2^53 are exact, which covers shapes and indices).

use anyhow::{bail, Result};
use onnx_protobuf::{tensor_proto::DataLocation, TensorProto};

/// ONNX `TensorProto.DataType` codes the rewriter deals with.
pub mod dt {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const BFLOAT16: i32 = 16;

    pub fn is_float(t: i32) -> bool {
        matches!(t, FLOAT | FLOAT16 | DOUBLE | BFLOAT16)
    }
    pub fn name(t: i32) -> &'static str {
        match t {
            FLOAT => "float",
            UINT8 => "uint8",
            INT8 => "int8",
            UINT16 => "uint16",
            INT16 => "int16",
            INT32 => "int32",
            INT64 => "int64",
            BOOL => "bool",
            FLOAT16 => "float16",
            DOUBLE => "double",
            UINT32 => "uint32",
            UINT64 => "uint64",
            BFLOAT16 => "bfloat16",
            _ => "other",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: i32,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    pub fn new(dtype: i32, shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { dtype, shape, data }
    }
    pub fn scalar(dtype: i32, v: f64) -> Tensor {
        Tensor { dtype, shape: vec![], data: vec![v] }
    }
    pub fn vec_i64(v: &[i64]) -> Tensor {
        Tensor { dtype: dt::INT64, shape: vec![v.len()], data: v.iter().map(|&x| x as f64).collect() }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn as_i64(&self) -> Vec<i64> {
        self.data.iter().map(|&x| x as i64).collect()
    }
    /// The single value of a one-element tensor.
    pub fn single(&self) -> Option<f64> {
        (self.data.len() == 1).then(|| self.data[0])
    }
    /// Rounds/saturates values the way a store into `dtype` would.
    pub fn normalize(mut self) -> Tensor {
        let t = self.dtype;
        for v in &mut self.data {
            *v = match t {
                dt::BOOL => (*v != 0.0) as i32 as f64,
                dt::FLOAT => *v as f32 as f64,
                dt::FLOAT16 | dt::BFLOAT16 => *v as f32 as f64,
                dt::DOUBLE => *v,
                _ if v.is_nan() => 0.0,
                _ => v.trunc(),
            }
        }
        self
    }
}

/// Decodes a TensorProto stored inline. External data is read through `external` (path relative to the
/// model's folder → bytes); `None` there means "not available".
pub fn decode(t: &TensorProto, external: &dyn Fn(&TensorProto) -> Option<Vec<u8>>) -> Result<Tensor> {
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = shape.iter().product();
    let ext;
    let raw: &[u8] = if t.data_location.enum_value() == Ok(DataLocation::EXTERNAL) {
        ext = match external(t) {
            Some(b) => b,
            None => bail!("external data of tensor '{}' is not readable", t.name),
        };
        &ext
    } else {
        &t.raw_data
    };
    let dtype = t.data_type;
    let data: Vec<f64> = if !raw.is_empty() {
        let w = match dtype {
            dt::FLOAT | dt::INT32 | dt::UINT32 => 4,
            dt::INT64 | dt::UINT64 | dt::DOUBLE => 8,
            dt::FLOAT16 | dt::BFLOAT16 | dt::INT16 | dt::UINT16 => 2,
            dt::BOOL | dt::INT8 | dt::UINT8 => 1,
            _ => bail!("tensor '{}': element type {} is not supported here", t.name, dtype),
        };
        if raw.len() != n * w {
            bail!("tensor '{}': {} data bytes for {} elements", t.name, raw.len(), n);
        }
        raw.chunks_exact(w)
            .map(|c| match dtype {
                dt::FLOAT => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                dt::INT32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
                dt::UINT32 => u32::from_le_bytes(c.try_into().unwrap()) as f64,
                dt::INT64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
                dt::UINT64 => u64::from_le_bytes(c.try_into().unwrap()) as f64,
                dt::DOUBLE => f64::from_le_bytes(c.try_into().unwrap()),
                dt::FLOAT16 => f16_to_f32(u16::from_le_bytes(c.try_into().unwrap())) as f64,
                dt::BFLOAT16 => f32::from_bits((u16::from_le_bytes(c.try_into().unwrap()) as u32) << 16) as f64,
                dt::INT16 => i16::from_le_bytes(c.try_into().unwrap()) as f64,
                dt::UINT16 => u16::from_le_bytes(c.try_into().unwrap()) as f64,
                dt::INT8 => c[0] as i8 as f64,
                _ => c[0] as f64,
            })
            .collect()
    } else {
        match dtype {
            dt::FLOAT => t.float_data.iter().map(|&x| x as f64).collect(),
            dt::DOUBLE => t.double_data.clone(),
            dt::INT64 => t.int64_data.iter().map(|&x| x as f64).collect(),
            dt::UINT32 | dt::UINT64 => t.uint64_data.iter().map(|&x| x as f64).collect(),
            dt::FLOAT16 => t.int32_data.iter().map(|&x| f16_to_f32(x as u16) as f64).collect(),
            dt::BFLOAT16 => t.int32_data.iter().map(|&x| f32::from_bits((x as u32) << 16) as f64).collect(),
            dt::INT32 | dt::INT16 | dt::INT8 | dt::UINT16 | dt::UINT8 | dt::BOOL => {
                t.int32_data.iter().map(|&x| x as f64).collect()
            }
            _ => bail!("tensor '{}': element type {} is not supported here", t.name, dtype),
        }
    };
    if data.len() != n {
        bail!("tensor '{}': {} values for shape {:?}", t.name, data.len(), shape);
    }
    Ok(Tensor { dtype, shape, data })
}

fn f16_to_f32(h: u16) -> f32 {
    let s = ((h >> 15) & 1) as u32;
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as u32;
    let v = if e == 0 {
        (m as f32) * (2f32).powi(-24)
    } else if e == 31 {
        if m == 0 { f32::INFINITY } else { f32::NAN }
    } else {
        f32::from_bits(((e + 112) as u32) << 23 | (m << 13))
    };
    if s == 1 { -v } else { v }
}

/// An int64 or float tensor proto (for new initializers the rewriter adds).
pub fn make_i64(name: &str, dims: &[i64], vals: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = dt::INT64;
    t.int64_data = vals.to_vec();
    t
}

pub fn is_external(t: &TensorProto) -> bool {
    t.data_location.enum_value() == Ok(DataLocation::EXTERNAL)
}
