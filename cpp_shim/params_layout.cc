// The C++ view of AttnParams' layout, taken from the header cxx generates from src/params.rs (the header
// the CUDA kernels include). tests/params_layout.rs compares it with Rust's offset_of!/size_of.
#include <cstddef>
#include <cstdint>

#include "flashattn-ort/src/params.rs.h"

using flashattn::AttnParams;

#define FIELD(name) {#name, offsetof(AttnParams, name), sizeof(AttnParams::name)}

namespace {
struct FieldLayout {
  const char *name;
  std::size_t offset;
  std::size_t size;
};
const FieldLayout kFields[] = {
    FIELD(q_ptr), FIELD(k_ptr), FIELD(v_ptr), FIELD(out_ptr), FIELD(lse_ptr), FIELD(mask_ptr),
    FIELD(seqlens_ptr), FIELD(gate_ptr), FIELD(gate), FIELD(q_batch_stride), FIELD(q_head_stride), FIELD(q_row_stride),
    FIELD(k_batch_stride), FIELD(k_head_stride), FIELD(k_row_stride), FIELD(v_batch_stride),
    FIELD(v_head_stride), FIELD(v_row_stride), FIELD(out_batch_stride), FIELD(out_head_stride),
    FIELD(out_row_stride), FIELD(mask_batch_stride), FIELD(mask_head_stride), FIELD(mask_row_stride),
    FIELD(mask_col_stride), FIELD(batch), FIELD(heads_q), FIELD(heads_kv), FIELD(seq_q), FIELD(seq_kv),
    FIELD(head_dim), FIELD(head_dim_v), FIELD(window_left), FIELD(window_right), FIELD(mask_kind),
    FIELD(dtype), FIELD(has_seqlens), FIELD(scale), FIELD(softcap), FIELD(seqlens_offset),
    FIELD(diag_per_batch),
};
}  // namespace

extern "C" {
std::size_t flashattn_cxx_params_size() { return sizeof(AttnParams); }
std::size_t flashattn_cxx_params_align() { return alignof(AttnParams); }
std::size_t flashattn_cxx_kv_params_size() { return sizeof(flashattn::KvAppendParams); }
std::size_t flashattn_cxx_kv_params_align() { return alignof(flashattn::KvAppendParams); }
std::size_t flashattn_cxx_params_field_count() { return sizeof(kFields) / sizeof(kFields[0]); }
// Returns the name (NUL-terminated) of field i and writes its offset and size; null when i is out of range.
const char *flashattn_cxx_params_field(std::size_t i, std::size_t *offset, std::size_t *size) {
  if (i >= sizeof(kFields) / sizeof(kFields[0])) return nullptr;
  *offset = kFields[i].offset;
  *size = kFields[i].size;
  return kFields[i].name;
}
}
