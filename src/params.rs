//! The one description of an attention problem, shared by the Rust host code, the CPU kernel and the
//! CUDA kernels. `cxx` generates the C++ header the kernels include from this very definition, so the
//! two sides cannot drift (tests/params_layout.rs checks the generated header against Rust's layout).

#[cxx::bridge(namespace = "flashattn")]
pub mod ffi {
    /// Strides are in elements; head_dim is always the innermost, contiguous axis.
    #[derive(Debug, Clone, Copy, PartialEq, Default)]
    pub struct AttnParams {
        // Device (or host) addresses; 0 when absent. The CPU path ignores these and takes slices.
        pub q_ptr: u64,
        pub k_ptr: u64,
        pub v_ptr: u64,
        pub out_ptr: u64,
        pub lse_ptr: u64,
        pub mask_ptr: u64,
        pub seqlens_ptr: u64,

        pub q_batch_stride: i64,
        pub q_head_stride: i64,
        pub q_row_stride: i64,
        pub k_batch_stride: i64,
        pub k_head_stride: i64,
        pub k_row_stride: i64,
        pub v_batch_stride: i64,
        pub v_head_stride: i64,
        pub v_row_stride: i64,
        pub out_batch_stride: i64,
        pub out_head_stride: i64,
        pub out_row_stride: i64,
        /// Mask strides over [batch, q_head, q_row, k_col]; 0 on broadcast axes.
        pub mask_batch_stride: i64,
        pub mask_head_stride: i64,
        pub mask_row_stride: i64,
        pub mask_col_stride: i64,

        pub batch: i32,
        pub heads_q: i32,
        pub heads_kv: i32,
        pub seq_q: i32,
        pub seq_kv: i32,
        pub head_dim: i32,
        pub head_dim_v: i32,
        /// Window bounds relative to the bottom-right diagonal; -1 = unbounded. `causal` is folded in
        /// as window_right = 0.
        pub window_left: i32,
        pub window_right: i32,
        /// One of `MaskKind`'s values.
        pub mask_kind: i32,
        /// One of `DType`'s values.
        pub dtype: i32,
        pub has_seqlens: i32,

        pub scale: f32,
        /// 0 = off.
        pub softcap: f32,
    }
}

pub use ffi::AttnParams;

/// `AttnParams::mask_kind` values.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    None = 0,
    Bool = 1,
    Additive = 2,
}

/// `AttnParams::dtype` values.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

impl AttnParams {
    /// Offset between the diagonal of queries and keys: query i sees key j on the diagonal when
    /// j == i + diagonal_offset (bottom-right alignment).
    pub fn diagonal_offset(&self) -> i64 {
        self.seq_kv as i64 - self.seq_q as i64
    }

    /// Key columns [lo, hi) that query row `row` may see under causal/window masking alone.
    pub fn visible_keys(&self, row: i64) -> (i64, i64) {
        let diag = row + self.diagonal_offset();
        let lo = if self.window_left >= 0 { (diag - self.window_left as i64).max(0) } else { 0 };
        let hi = if self.window_right >= 0 {
            (diag + self.window_right as i64 + 1).min(self.seq_kv as i64)
        } else {
            self.seq_kv as i64
        };
        (lo, hi.max(lo))
    }

    pub fn mask_kind(&self) -> MaskKind {
        match self.mask_kind {
            1 => MaskKind::Bool,
            2 => MaskKind::Additive,
            _ => MaskKind::None,
        }
    }

    pub fn group_size(&self) -> i32 {
        self.heads_q / self.heads_kv
    }
}
