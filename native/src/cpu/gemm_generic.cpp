#define FL_KERNEL_NAME kernel_6x16_generic
#include "gemm_kernel.inc"

namespace fl::cpu {
void gemm_micro_generic(int64_t kc, const float* A, const float* B, float* C) { kernel_6x16_generic(kc, A, B, C); }
}  // namespace fl::cpu
