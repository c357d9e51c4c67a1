// Architecture dispatch for the unsuffixed entry points of kernels.h.
#include "kernels.h"
#include "tensor_map.h"

namespace fluxk {

cudaError_t gemm_bf16(const GemmArgs& a, cudaStream_t stream) {
  return sm90::device_is_sm90() ? gemm_bf16_sm90(a, stream) : gemm_bf16_sm80(a, stream);
}

cudaError_t gemm_f32_bf16w(const GemmF32Args& a, cudaStream_t stream) {
  return sm90::device_is_sm90() ? gemm_f32_bf16w_sm90(a, stream) : gemm_f32_bf16w_sm80(a, stream);
}

cudaError_t gemm_nf4(const Nf4GemmArgs& a, cudaStream_t stream) {
  if (a.m <= 16) return gemv_nf4(a, stream);
  return sm90::device_is_sm90() ? gemm_nf4_sm90(a, stream) : gemm_nf4_sm80(a, stream);
}

cudaError_t attention_fwd(const AttentionArgs& a, cudaStream_t stream) {
  return sm90::device_is_sm90() ? attention_fwd_sm90(a, stream) : attention_fwd_sm80(a, stream);
}

}  // namespace fluxk
