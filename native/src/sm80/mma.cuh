// Ampere-class tensor-core building blocks (mma.sync, ldmatrix, cp.async), valid on sm_80 and
// newer. Used by the portable kernels and by the skinny NF4 path on every architecture.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define FLUXK_SM80_DEVICE 1
#else
#define FLUXK_SM80_DEVICE 0
#endif

namespace fluxk {
namespace sm80 {

#if FLUXK_SM80_DEVICE

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// D = A · B + D, m16n8k16, bf16 inputs, fp32 accumulators. Fragment layout (g = lane/4, c = lane%4):
// a0 (row g, k 2c..2c+1), a1 (row g+8, same k), a2 (row g, k 2c+8..), a3 (row g+8, k 2c+8..);
// b0 (k 2c..2c+1, col g), b1 (k 2c+8.., col g); d0/d1 (row g, cols 2c, 2c+1), d2/d3 (row g+8).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 16-byte global->shared copy; src_bytes < 16 zero-fills the rest (0 = all zeros, no read).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Rows of 64 bf16 (128 bytes) in shared memory, 16-byte chunks XOR-swizzled by row % 8 so that
// both the cp.async writes and the ldmatrix reads of 8 consecutive rows hit distinct banks.
__device__ __forceinline__ uint32_t swz128(int row, int chunk) {
  return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4));
}

#endif  // FLUXK_SM80_DEVICE

}  // namespace sm80
}  // namespace fluxk
