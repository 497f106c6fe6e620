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
        /// int32 [batch] written on the device by the key-padding scan (kernels/key_padding.cuh): 1 where a
        /// batch entry's key-only mask keeps exactly the keys below its length. Read only when `gate` != 0.
        pub gate_ptr: u64,
        /// One of `Gate`'s values: whether the Hopper forward kernel runs at all, decided on the device from
        /// `gate_ptr` (the key-padding fast path queues a plain and a masked launch; one of them runs). 64 bits
        /// wide so that the struct has no padding (the ctypes mirror is built from a gap-free field table).
        pub gate: i64,

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

        // KV cache (appended for #8). With has_seqlens, the keys of batch b are
        // clamp(seqlens[b] + seqlens_offset, 0, seq_kv): the shared-buffer mode passes the past lengths
        // and the number of new tokens here.
        pub seqlens_offset: i32,
        /// 1: causal/window are aligned bottom-right per batch row, to that row's own key count
        /// (diagonal = kv_len_b - seq_q) instead of to seq_kv - seq_q.
        pub diag_per_batch: i32,
    }

    /// The KV-cache append that runs before attention (kernels/kv_append.cuh, src/cpu/kv.rs): writes the
    /// new keys/values into the present cache — after a copy of the past in concat mode, in place at each
    /// row's own length in shared-buffer mode — applying rotary embedding to them and to the query.
    /// Caches are [batch, heads_kv, cache_seq, head_dim] (row-major); strides in elements.
    #[derive(Debug, Clone, Copy, PartialEq, Default)]
    pub struct KvAppendParams {
        pub new_k_ptr: u64,
        pub new_v_ptr: u64,
        pub past_k_ptr: u64,
        pub past_v_ptr: u64,
        pub present_k_ptr: u64,
        pub present_v_ptr: u64,
        /// int32 [batch]: past lengths (shared-buffer mode); 0 = every row has past_seq keys (concat).
        pub past_lens_ptr: u64,
        pub q_ptr: u64,
        /// Rotated query, laid out with q's strides; 0 = no rotary.
        pub q_rot_ptr: u64,
        /// [max_pos, rotary_dim / 2] each, of the cache's type.
        pub cos_ptr: u64,
        pub sin_ptr: u64,
        /// int64 [batch, seq_q]; 0 = position of new token i of row b is past_len_b + i.
        pub pos_ids_ptr: u64,

        pub q_batch_stride: i64,
        pub q_head_stride: i64,
        pub q_row_stride: i64,
        pub new_k_batch_stride: i64,
        pub new_k_head_stride: i64,
        pub new_k_row_stride: i64,
        pub new_v_batch_stride: i64,
        pub new_v_head_stride: i64,
        pub new_v_row_stride: i64,

        pub batch: i32,
        pub heads_q: i32,
        pub heads_kv: i32,
        pub seq_q: i32,
        /// New tokens (key/value rows).
        pub seq_new: i32,
        /// past_key's sequence axis: the past length (concat) or the capacity (shared buffer).
        pub past_seq: i32,
        /// present_key's sequence axis.
        pub present_seq: i32,
        pub head_dim: i32,
        pub head_dim_v: i32,
        /// 0 = no rotary; otherwise even, ≤ head_dim.
        pub rotary_dim: i32,
        pub rotary_interleaved: i32,
        /// Rows of the cos/sin caches.
        pub rotary_max_pos: i32,
        /// One of `DType`'s values.
        pub dtype: i32,
        /// 1: shared buffer (append in place at past_lens); 0: concat (present = past ++ new).
        pub shared_buffer: i32,
    }
}

pub use ffi::KvAppendParams;

pub use ffi::AttnParams;

/// `AttnParams::mask_kind` values.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    None = 0,
    Bool = 1,
    Additive = 2,
}

/// `AttnParams::gate` values (kernels/key_padding.cuh `gate_open`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Always runs.
    None = 0,
    /// Runs when every batch entry's key-padding mask is a prefix (`gate_ptr`[b] == 1 for all b).
    AllPrefix = 1,
    /// Runs when some batch entry's is not.
    SomeNotPrefix = 2,
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

    /// Keys that exist for batch entry `b`: seq_kv, or `key_seqlens`/past lengths (+ seqlens_offset)
    /// clamped to [0, seq_kv]. The same rule as `schedule_block` in kernels/tile_scheduler.cuh.
    pub fn kv_len(&self, seqlens: Option<&[i32]>, b: usize) -> i64 {
        match seqlens {
            Some(l) if self.has_seqlens != 0 => (l[b] as i64 + self.seqlens_offset as i64).clamp(0, self.seq_kv as i64),
            _ => self.seq_kv as i64,
        }
    }

    /// Key columns [lo, hi) that query row `row` may see under causal/window masking alone.
    pub fn visible_keys(&self, row: i64) -> (i64, i64) {
        self.visible_keys_in(row, self.seq_kv as i64)
    }

    /// Key columns [lo, hi) that query row `row` of a batch entry with `kv_len` keys may see under
    /// causal/window masking and the key count: `visible_cols` in kernels/mask.cuh.
    pub fn visible_keys_in(&self, row: i64, kv_len: i64) -> (i64, i64) {
        let diag = if self.diag_per_batch != 0 { row + kv_len - self.seq_q as i64 } else { row + self.diagonal_offset() };
        let lo = if self.window_left >= 0 { (diag - self.window_left as i64).max(0) } else { 0 };
        let hi = if self.window_right >= 0 { (diag + self.window_right as i64 + 1).min(kv_len) } else { kv_len };
        let lo = lo.min(kv_len);
        (lo, hi.max(lo))
    }

    /// Blocks of `block` keys that hold every key some query row may see under causal/window masking (key
    /// lengths can only shrink it): the key tiles a kernel's query tile walks at most.
    pub fn visible_key_blocks(&self, block: i64) -> i64 {
        let (lo, _) = self.visible_keys(0);
        let (_, hi) = self.visible_keys(self.seq_q as i64 - 1);
        if hi <= lo {
            0
        } else {
            (hi + block - 1) / block - lo / block
        }
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
