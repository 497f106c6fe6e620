// The launch parameters: the very struct Rust defines in src/params.rs, through the header cxx generates
// from it at build time (build.rs puts it on nvcc's include path). Kernels take it by value.
#pragma once
#include "flashattn-ort/src/params.rs.h"

namespace flashattn {
// Mirrors of the Rust enums `MaskKind`, `DType` and `Gate` (src/params.rs); tests/params_layout.rs checks them.
enum : int32_t { kMaskNone = 0, kMaskBool = 1, kMaskAdditive = 2 };
enum : int32_t { kDtypeF32 = 0, kDtypeF16 = 1, kDtypeBF16 = 2 };
enum : int64_t { kGateNone = 0, kGateAllPrefix = 1, kGateSomeNotPrefix = 2 };
}  // namespace flashattn
