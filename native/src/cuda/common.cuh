// Device-side helpers shared by the kernels: typed loads/stores with float32 arithmetic, dtype dispatch, warp
// reductions, launch sizes.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../core/error.h"
#include "check.h"
#include "launch.h"

namespace fl::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
__device__ __forceinline__ float to_f(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else {
    return static_cast<float>(v);
  }
}

template <class T>
__device__ __forceinline__ T from_f(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else {
    return static_cast<T>(v);
  }
}

// A float parameter of run-time dtype (norm weights, attention bias).
__device__ __forceinline__ float load_any(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::U8: return float(static_cast<const uint8_t*>(p)[i]);
    case DType::I32: return float(static_cast<const int32_t*>(p)[i]);
    case DType::I64: return float(static_cast<const int64_t*>(p)[i]);
  }
  return 0.f;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over a block of kThreads threads; `red` holds 32 floats of shared memory. Every thread gets the result.
template <int kThreads>
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read from the previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? red[lane] : 0.f;
  return warp_sum(v);
}

// Element offsets of operand `op` for a linear index over it.shape.
__device__ __forceinline__ int64_t strided_offset(const Strided& it, int op, int64_t linear) {
  int64_t off = 0;
  for (int d = it.nd - 1; d >= 0; d--) {
    int64_t idx = linear % it.shape[d];
    linear /= it.shape[d];
    off += idx * it.stride[op][d];
  }
  return off;
}

inline unsigned grid_for(int64_t n, int threads, int64_t cap = int64_t(1) << 20) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return unsigned(blocks < cap ? blocks : cap);
}

}  // namespace fl::cuda

// Binds T to the CUDA storage type of a float dtype.
#define FL_CUDA_FLOAT_SWITCH(dtype, T, ...)                                                   \
  switch (dtype) {                                                                            \
    case ::fl::DType::F32: {                                                                  \
      using T = float;                                                                        \
      __VA_ARGS__;                                                                            \
      break;                                                                                  \
    }                                                                                         \
    case ::fl::DType::BF16: {                                                                 \
      using T = __nv_bfloat16;                                                                \
      __VA_ARGS__;                                                                            \
      break;                                                                                  \
    }                                                                                         \
    case ::fl::DType::F16: {                                                                  \
      using T = __half;                                                                       \
      __VA_ARGS__;                                                                            \
      break;                                                                                  \
    }                                                                                         \
    default:                                                                                  \
      ::fl::fail(::fl::cat("CUDA kernel: expects a float dtype, got ", ::fl::dtype_name(dtype))); \
  }

// Binds T to the storage type of any dtype.
#define FL_CUDA_ANY_SWITCH(dtype, T, ...) \
  switch (dtype) {                        \
    case ::fl::DType::U8: {               \
      using T = uint8_t;                  \
      __VA_ARGS__;                        \
      break;                              \
    }                                     \
    case ::fl::DType::I32: {              \
      using T = int32_t;                  \
      __VA_ARGS__;                        \
      break;                              \
    }                                     \
    case ::fl::DType::I64: {              \
      using T = int64_t;                  \
      __VA_ARGS__;                        \
      break;                              \
    }                                     \
    default:                              \
      FL_CUDA_FLOAT_SWITCH(dtype, T, __VA_ARGS__) \
  }
