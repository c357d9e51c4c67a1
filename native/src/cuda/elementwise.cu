// Memory-bound elementwise kernels: grid-stride loops, float32 arithmetic, one pass over each operand.
#include <cmath>

#include "common.cuh"

namespace fl::cuda {

namespace {

constexpr int kThreads = 256;

template <class S, class D>
__device__ __forceinline__ D convert_one(S v) {
  constexpr bool s_int = std::is_integral_v<S>, d_int = std::is_integral_v<D>;
  if constexpr (s_int && d_int) {
    return static_cast<D>(static_cast<int64_t>(v));
  } else if constexpr (d_int) {
    return static_cast<D>(static_cast<int64_t>(to_f(v)));  // truncation toward zero, like torch
  } else {
    return from_f<D>(to_f(v));
  }
}

template <class S, class D>
__global__ void convert_kernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    dst[i] = convert_one<S, D>(src[i]);
  }
}

template <class T>
__global__ void fill_kernel(T* dst, int64_t n, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    dst[i] = value;
  }
}

__device__ __forceinline__ float apply_unary(float v, UnaryOp op, float a, float b) {
  switch (op) {
    case UnaryOp::Gelu: return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    case UnaryOp::GeluTanh: return 0.5f * v * (1.f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case UnaryOp::QuickGelu: return v / (1.f + expf(-1.702f * v));
    case UnaryOp::Silu: return v / (1.f + expf(-v));
    case UnaryOp::Tanh: return tanhf(v);
    case UnaryOp::Sigmoid: return 1.f / (1.f + expf(-v));
    case UnaryOp::Exp: return expf(v);
    case UnaryOp::Affine: return v * a + b;
    case UnaryOp::Clamp: return fminf(fmaxf(v, a), b);
  }
  return v;
}

template <class T>
__global__ void unary_kernel(const T* x, T* y, int64_t n, UnaryOp op, float a, float b) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = from_f<T>(apply_unary(to_f(x[i]), op, a, b));
  }
}

__device__ __forceinline__ float apply_binary(float x, float y, BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return x + y;
    case BinaryOp::Sub: return x - y;
    case BinaryOp::Mul: return x * y;
    case BinaryOp::Div: return x / y;
  }
  return 0.f;
}

template <class T>
__global__ void binary_kernel(T* out, const T* a, const T* b, Strided it, int64_t n, BinaryOp op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float x = to_f(a[strided_offset(it, 1, i)]), y = to_f(b[strided_offset(it, 2, i)]);
    out[i] = from_f<T>(apply_binary(x, y, op));
  }
}

// Same-shape operands: no index arithmetic.
template <class T>
__global__ void binary_flat_kernel(T* out, const T* a, const T* b, int64_t n, BinaryOp op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = from_f<T>(apply_binary(to_f(a[i]), to_f(b[i]), op));
  }
}

template <class T>
__global__ void modulate_kernel(T* out, const T* x, const T* shift, const T* scale, Strided it, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float v = to_f(x[strided_offset(it, 1, i)]);
    float sc = to_f(scale[strided_offset(it, 3, i)]), sh = to_f(shift[strided_offset(it, 2, i)]);
    out[i] = from_f<T>(v * (1.f + sc) + sh);
  }
}

template <class T>
T host_value(double value) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<int64_t>(value));
  } else if constexpr (std::is_same_v<T, float>) {
    return static_cast<float>(value);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(value));
  } else {
    return __float2half_rn(static_cast<float>(value));
  }
}

bool same_as_output(const Strided& it, int op) {
  int64_t s = 1;
  for (int d = it.nd - 1; d >= 0; d--) {
    if (it.shape[d] != 1 && it.stride[op][d] != s) return false;
    s *= it.shape[d];
  }
  return true;
}

int64_t numel(const Strided& it) {
  int64_t n = 1;
  for (int d = 0; d < it.nd; d++) n *= it.shape[d];
  return n;
}

}  // namespace

void convert(const void* src, DType sd, void* dst, DType dd, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  FL_CUDA_ANY_SWITCH(sd, S, {
    FL_CUDA_ANY_SWITCH(dd, D, {
      convert_kernel<S, D><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<const S*>(src), static_cast<D*>(dst), n);
    });
  });
}

void fill(void* dst, DType dt, int64_t n, double value, cudaStream_t s) {
  if (n == 0) return;
  FL_CUDA_ANY_SWITCH(dt, T, {
    fill_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(dst), n, host_value<T>(value));
  });
}

void unary(const void* x, void* y, DType dt, int64_t n, UnaryOp op, float a, float b, cudaStream_t s) {
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    unary_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), n, op, a, b);
  });
}

void binary(void* out, const void* a, const void* b, DType dt, const Strided& it, BinaryOp op, cudaStream_t s) {
  const int64_t n = numel(it);
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    if (same_as_output(it, 1) && same_as_output(it, 2)) {
      binary_flat_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(out), static_cast<const T*>(a),
                                                                        static_cast<const T*>(b), n, op);
    } else {
      binary_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(out), static_cast<const T*>(a),
                                                                   static_cast<const T*>(b), it, n, op);
    }
  });
}

void modulate(void* out, const void* x, const void* shift, const void* scale, DType dt, const Strided& it,
              cudaStream_t s) {
  const int64_t n = numel(it);
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    modulate_kernel<T><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(out), static_cast<const T*>(x),
                                                                   static_cast<const T*>(shift),
                                                                   static_cast<const T*>(scale), it, n);
  });
}

}  // namespace fl::cuda
