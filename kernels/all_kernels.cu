// The one translation unit build.rs compiles into the fatbin: every file of entry points.
#include "flash_fwd_sm80.cu"
#include "flash_fwd_sm90.cu"
#include "flash_fwd_sm100.cu"
#include "key_padding.cu"
#include "selfcheck_broken.cu"
