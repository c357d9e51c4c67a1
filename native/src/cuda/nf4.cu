// NF4 on the device, bit-identical to the CPU path (cpu/nf4.cpp) and to bitsandbytes: the same float operations
// in the same order, with FMA contraction ruled out (__fmul_rn/__fadd_rn) where bitsandbytes computes a product
// and a sum in separate kernels.
#include "common.cuh"

namespace fl::cuda {

namespace {

__constant__ float kThresholds[15] = {-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,
                                      -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
                                      -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
                                      0.2035212516784668f,  0.2920137718319893f,   0.3893125355243683f,
                                      0.5016634166240692f,  0.6427869200706482f,   0.8614784181118011f};

__device__ __forceinline__ uint8_t nf4_code(float x) {
  uint8_t c = 0;
#pragma unroll
  for (int i = 0; i < 15; i++) c += x > kThresholds[i];
  return c;
}

// One thread per quantization block (64 values: the block's absmax, then 32 packed bytes).
template <class T>
__global__ void quantize_kernel(const T* w, int64_t n, int64_t blocksize, uint8_t* packed, float* absmax) {
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = b * blocksize, e = min(n, s + blocksize);
    float m = 0.f;
    for (int64_t i = s; i < e; i++) m = fmaxf(m, fabsf(to_f(w[i])));
    absmax[b] = m;
    const float scale = __frcp_rn(m);
    for (int64_t i = s; i < e; i += 2) {
      const uint8_t hi = nf4_code(__fmul_rn(to_f(w[i]), scale));
      const uint8_t lo = nf4_code(__fmul_rn(i + 1 < e ? to_f(w[i + 1]) : 0.f, scale));
      packed[i / 2] = uint8_t((hi << 4) | lo);
    }
  }
}

__global__ void absmax_kernel(NF4View v, float* out) {
  const int64_t blocks = (v.rows * v.cols + v.blocksize - 1) / v.blocksize;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x) {
    out[b] = v.absmax_codes
                 ? __fadd_rn(__fmul_rn(v.nested_map[v.absmax_codes[b]], v.nested_absmax[b / v.nested_blocksize]), v.offset)
                 : v.absmax[b];
  }
}

template <class T>
__global__ void dequantize_kernel(NF4View v, const float* absmax, T* out) {
  const int64_t n = v.rows * v.cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint8_t byte = v.packed[i >> 1];
    const uint8_t code = (i & 1) ? (byte & 0x0f) : (byte >> 4);
    out[i] = from_f<T>(__fmul_rn(v.quant_map[code], absmax[i / v.blocksize]));
  }
}

// The same values, 8 per 16-byte store, memory bound at 2.5 bytes per weight: [12288, 3072] ≈ 94 MB ≈ 32 µs at the
// ~2.9 TB/s an H100 copies. Lane l of a warp converts output vector o = base + 32·i + l from one 4-byte load, so a
// warp instruction loads 128 and stores 512 contiguous bytes, kUnroll vectors in flight per lane. The kernel before
// gave each thread 64 contiguous output bytes (a warp's store instruction touching 32 vectors 64 bytes apart): the
// NF4 gelu projection [4608,3072]x[12288,3072]ᵀ took 0.656 ms against 0.560 ms with bf16 weights in the same step,
// ~96 µs of dequantizing (H100, bench/results/profiles/2026-11-26-h100-9e2e8ed-qkv-epilogue.log).
constexpr int kDequantUnroll = 4;

template <class T>
__global__ void dequantize_vec_kernel(const uint32_t* packed, const float* quant_map, const float* absmax,
                                      int64_t vecs_per_block, int64_t vecs, uint4* out) {
  static_assert(sizeof(T) == 2, "16-bit outputs");
  __shared__ float map[16];
  if (threadIdx.x < 16) map[threadIdx.x] = quant_map[threadIdx.x];
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  constexpr int64_t kChunk = 32 * kDequantUnroll;
  for (int64_t chunk = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; chunk * kChunk < vecs; chunk += warps) {
    uint32_t words[kDequantUnroll];
    float scales[kDequantUnroll];
#pragma unroll
    for (int i = 0; i < kDequantUnroll; i++) {
      const int64_t o = chunk * kChunk + 32 * i + lane;
      words[i] = o < vecs ? __ldg(packed + o) : 0u;
      scales[i] = o < vecs ? __ldg(absmax + o / vecs_per_block) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < kDequantUnroll; i++) {
      const int64_t o = chunk * kChunk + 32 * i + lane;
      if (o >= vecs) continue;
      // 4 packed bytes, little-endian in the word: byte j holds values 2j (high nibble) and 2j + 1 (low nibble)
      alignas(16) T v[8];
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const uint32_t byte = (words[i] >> (8 * j)) & 0xffu;
        v[2 * j] = from_f<T>(__fmul_rn(map[byte >> 4], scales[i]));
        v[2 * j + 1] = from_f<T>(__fmul_rn(map[byte & 0x0fu], scales[i]));
      }
      out[o] = *reinterpret_cast<const uint4*>(v);
    }
  }
}

// torch's CUDA mean in its own order (see torch_cuda_mean in cpu/nf4.cpp): lane t of `lanes` accumulates four
// partial sums, by stride below 128 values and by 4-wide vector from 128 on; then the lanes fold in halves.
__global__ void mean_kernel(const float* a, int64_t n, int lanes, float* offset, float* centered) {
  __shared__ float part[512];
  const int t = threadIdx.x;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if (t < lanes) {
    if (n >= 128) {
      for (int64_t v = t; v * 4 + 3 < n; v += lanes) {
        for (int i = 0; i < 4; i++) acc[i] = __fadd_rn(acc[i], a[v * 4 + i]);
      }
      const int64_t tail = n - n % 4;
      if (tail + t < n) acc[0] = __fadd_rn(acc[0], a[tail + t]);
    } else {
      for (int64_t idx = t; idx < n; idx += 4 * int64_t(lanes)) {
        for (int i = 0; i < 4; i++) {
          const int64_t j = idx + i * int64_t(lanes);
          if (j < n) acc[i] = __fadd_rn(acc[i], a[j]);
        }
      }
    }
    part[t] = __fadd_rn(__fadd_rn(__fadd_rn(acc[0], acc[1]), acc[2]), acc[3]);
  }
  __syncthreads();
  for (int width = lanes; width > 1; width /= 2) {
    if (t < width / 2) part[t] = __fadd_rn(part[t], part[t + width / 2]);
    __syncthreads();
  }
  const float off = __fmul_rn(part[0], __frcp_rn(float(n)));
  if (t == 0) *offset = off;
  for (int64_t i = t; i < n; i += blockDim.x) centered[i] = __fsub_rn(a[i], off);
}

// bitsandbytes' dQuantize<0> (see cpu/nf4.cpp).
__device__ uint8_t quantize_dynamic(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    const float midpoint = __fmul_rn(__fadd_rn(upper, val), 0.5f);
    return uint8_t(x > midpoint ? upper_pivot : pivot);
  }
  const float midpoint = __fmul_rn(__fadd_rn(lower, val), 0.5f);
  return uint8_t(x < midpoint ? lower_pivot : pivot);
}

// One block per nested block: its absmax, then one code per value.
__global__ void nested_kernel(const float* centered, int64_t blocks, int64_t nested_blocksize, const float* map,
                              uint8_t* codes, float* nested_absmax) {
  __shared__ float code[256];
  __shared__ float red[32];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) code[i] = map[i];
  const int64_t s = int64_t(blockIdx.x) * nested_blocksize, e = min(blocks, s + nested_blocksize);
  float m = 0.f;
  for (int64_t i = s + threadIdx.x; i < e; i += blockDim.x) m = fmaxf(m, fabsf(centered[i]));
  m = warp_max(m);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? red[threadIdx.x] : 0.f;
    v = warp_max(v);
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  const float amax = red[0];
  if (threadIdx.x == 0) nested_absmax[blockIdx.x] = amax;
  const float scale = __frcp_rn(amax);
  for (int64_t i = s + threadIdx.x; i < e; i += blockDim.x) codes[i] = quantize_dynamic(code, __fmul_rn(centered[i], scale));
}

}  // namespace

void nf4_quantize(const void* w, DType dt, int64_t n, int64_t blocksize, uint8_t* packed, float* absmax,
                  cudaStream_t s) {
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    quantize_kernel<T><<<grid_for(blocks, 128), 128, 0, s>>>(static_cast<const T*>(w), n, blocksize, packed, absmax);
  });
}

void nf4_absmax(const NF4View& v, float* out, cudaStream_t s) {
  const int64_t blocks = (v.rows * v.cols + v.blocksize - 1) / v.blocksize;
  absmax_kernel<<<grid_for(blocks, 256), 256, 0, s>>>(v, out);
}

void nf4_dequantize(const NF4View& v, const float* absmax, void* out, DType dt, cudaStream_t s) {
  const int64_t n = v.rows * v.cols;
  const bool vec = (dt == DType::BF16 || dt == DType::F16) && n % 8 == 0 && v.blocksize % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(v.packed) % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (vec) {
    const int64_t vecs = n / 8;
    const unsigned grid = grid_for((vecs + kDequantUnroll - 1) / kDequantUnroll, 256);
    const uint32_t* packed = reinterpret_cast<const uint32_t*>(v.packed);
    if (dt == DType::BF16) {
      dequantize_vec_kernel<__nv_bfloat16><<<grid, 256, 0, s>>>(packed, v.quant_map, absmax, v.blocksize / 8, vecs,
                                                                static_cast<uint4*>(out));
    } else {
      dequantize_vec_kernel<__half><<<grid, 256, 0, s>>>(packed, v.quant_map, absmax, v.blocksize / 8, vecs,
                                                         static_cast<uint4*>(out));
    }
    return;
  }
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    dequantize_kernel<T><<<grid_for(n, 256), 256, 0, s>>>(v, absmax, static_cast<T*>(out));
  });
}

void double_quant(const float* absmax, int64_t blocks, int64_t nested_blocksize, const float* dyn_map, uint8_t* codes,
                  float* nested_absmax, float* offset, float* centered, cudaStream_t s) {
  FL_CHECK(nested_blocksize <= 4096, "ops.nf4Quantize: nested blocksize ", nested_blocksize, " > 4096 on CUDA");
  int64_t lanes = 1;
  const int64_t items = blocks >= 128 ? blocks / 4 : blocks;
  while (lanes * 2 <= items && lanes < 512) lanes *= 2;
  mean_kernel<<<1, 512, 0, s>>>(absmax, blocks, int(lanes), offset, centered);
  const int64_t nested = (blocks + nested_blocksize - 1) / nested_blocksize;
  const int threads = nested_blocksize >= 1024 ? 1024 : nested_blocksize >= 256 ? 256 : 32;
  nested_kernel<<<unsigned(nested), threads, 0, s>>>(centered, blocks, nested_blocksize, dyn_map, codes, nested_absmax);
}

}  // namespace fl::cuda
