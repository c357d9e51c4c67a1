// Built with -mavx2 -mfma (see CMakeLists.txt); only called when the CPU reports both.
#define FL_KERNEL_NAME kernel_6x16_avx2
#include "gemm_kernel.inc"

namespace fl::cpu {
void gemm_micro_avx2(int64_t kc, const float* A, const float* B, float* C) { kernel_6x16_avx2(kc, A, B, C); }
}  // namespace fl::cpu
