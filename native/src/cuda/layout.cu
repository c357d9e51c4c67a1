// Layout kernels: strided copies (permute, slice, concat), gathers, rotary embedding, upsampling.
#include "common.cuh"

namespace fl::cuda {

namespace {

constexpr int kThreads = 256;

// Copies whole elements as unsigned words of the element's size.
template <class W>
__global__ void strided_copy_kernel(W* dst, const W* src, Strided it, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    dst[strided_offset(it, 0, i)] = src[strided_offset(it, 1, i)];
  }
}

template <class W, class I>
__global__ void embedding_kernel(const W* weight, int64_t V, int64_t D, const I* ids, int64_t n, W* out) {
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const int64_t id = static_cast<int64_t>(ids[row]);
    const bool valid = id >= 0 && id < V;  // out-of-range ids read zeros (checked on the CPU path)
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      out[row * D + d] = valid ? weight[id * D + d] : W{};
    }
  }
}

template <class T, class C>
__global__ void rope_kernel(const T* x, T* out, int64_t pairs, int64_t L, int64_t D, const C* cos, const C* sin) {
  const int64_t half = D / 2;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = p / half, i = 2 * (p % half);
    const int64_t l = row % L;
    const float re = to_f(x[row * D + i]), im = to_f(x[row * D + i + 1]);
    const float c0 = to_f(cos[l * D + i]), c1 = to_f(cos[l * D + i + 1]);
    const float s0 = to_f(sin[l * D + i]), s1 = to_f(sin[l * D + i + 1]);
    out[row * D + i] = from_f<T>(re * c0 - im * s0);
    out[row * D + i + 1] = from_f<T>(im * c1 + re * s1);
  }
}

template <class W>
__global__ void upsample_kernel(const W* x, W* out, int64_t planes, int64_t H, int64_t W2) {
  const int64_t OW = 2 * W2, OH = 2 * H;
  const int64_t n = planes * OH * OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ox = i % OW, oy = (i / OW) % OH, p = i / (OW * OH);
    out[i] = x[(p * H + oy / 2) * W2 + ox / 2];
  }
}

template <class F>
void by_size(DType dt, F&& f) {
  switch (dtype_size(dt)) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    default: f(uint64_t{}); break;
  }
}

}  // namespace

void strided_copy(void* dst, const void* src, DType dt, const Strided& it, cudaStream_t s) {
  int64_t n = 1;
  for (int d = 0; d < it.nd; d++) n *= it.shape[d];
  by_size(dt, [&](auto w) {
    using W = decltype(w);
    strided_copy_kernel<W><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<W*>(dst), static_cast<const W*>(src),
                                                                       it, n);
  });
}

void embedding(const void* weight, DType wdt, int64_t V, int64_t D, const void* ids, DType idt, int64_t n, void* out,
               cudaStream_t s) {
  const unsigned grid = unsigned(n < 65535 ? n : 65535);
  const int threads = D >= 256 ? 256 : D >= 64 ? 64 : 32;
  by_size(wdt, [&](auto w) {
    using W = decltype(w);
    if (idt == DType::I64) {
      embedding_kernel<W, int64_t><<<grid, threads, 0, s>>>(static_cast<const W*>(weight), V, D,
                                                             static_cast<const int64_t*>(ids), n, static_cast<W*>(out));
    } else {
      embedding_kernel<W, int32_t><<<grid, threads, 0, s>>>(static_cast<const W*>(weight), V, D,
                                                             static_cast<const int32_t*>(ids), n, static_cast<W*>(out));
    }
  });
}

void rope(const void* x, void* out, DType dt, int64_t rows, int64_t L, int64_t D, const void* cos, const void* sin,
          DType cdt, cudaStream_t s) {
  const int64_t pairs = rows * (D / 2);
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    FL_CUDA_FLOAT_SWITCH(cdt, C, {
      rope_kernel<T, C><<<grid_for(pairs, kThreads), kThreads, 0, s>>>(
          static_cast<const T*>(x), static_cast<T*>(out), pairs, L, D, static_cast<const C*>(cos),
          static_cast<const C*>(sin));
    });
  });
}

void upsample_nearest2x(const void* x, void* out, DType dt, int64_t planes, int64_t H, int64_t W, cudaStream_t s) {
  const int64_t n = planes * 4 * H * W;
  by_size(dt, [&](auto w) {
    using E = decltype(w);
    upsample_kernel<E><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<const E*>(x), static_cast<E*>(out), planes,
                                                                   H, W);
  });
}

}  // namespace fl::cuda
