// Attention with wide heads (the VAE mid block: 1 head x 512 dims over 16384 tokens at 1024²) as GEMMs: a flash
// kernel would keep a 64x512 fp32 output tile per CTA and re-read Q from shared memory for every 32-key block,
// making the Q·Kᵀ half shared-memory bound with mma.sync; the 128x128 implicit-GEMM tiles do better. Per (batch,
// head) and chunk of queries:
//   S = Q·Kᵀ            fp32 [rows, Lk]   conv2d_implicit_gemm as a GEMM (K = head_dim)
//   P = softmax(S·scale + bias, mask) rounded to the input dtype, rows padded to Lkp = Lk rounded up to 8
//   O = P·V             split-K over the Lk reduction into fp32 slices (a chunk has only rows/128 x D/128
//                       tiles), then summed and rounded into O; Vᵀ [D, Lkp] is transposed once per head.
// Napkin math (1 x 16384 x 16384 x 512): 4·L²·D = 550 GFLOP, ~1.8 ms at 300 TFLOP/s of mma.sync; S and P
// traffic ≈ 16384² x (4 write + 4 read + 2 write + 2 read) ≈ 3.2 GB, ~1.1 ms; chunks of 1024 queries keep the
// workspace at 16 MB (Vᵀ) + 64 MB (S) + 32 MB (P) + 16 MB (slices).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "vae_t5.h"

namespace fluxk {
namespace {

constexpr int kSoftmaxThreads = 256;
constexpr int kMaxSplits = 8;
constexpr int64_t kScoreBudget = int64_t(16) << 20;  // fp32 scores per chunk (64 MB)

__device__ __forceinline__ float load_elem(const void* p, ElemType t, int64_t i) {
  switch (t) {
    case ElemType::kF32: return static_cast<const float*>(p)[i];
    case ElemType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ElemType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    case ElemType::kU8: return float(static_cast<const uint8_t*>(p)[i]);
    case ElemType::kI32: return float(static_cast<const int32_t*>(p)[i]);
    case ElemType::kI64: return static_cast<const int64_t*>(p)[i] != 0 ? 1.f : 0.f;
  }
  return 0.f;
}

__device__ __forceinline__ void store_elem(void* p, ElemType t, int64_t i, float v) {
  if (t == ElemType::kF16) {
    static_cast<__half*>(p)[i] = __float2half_rn(v);
  } else if (t == ElemType::kBF16) {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

struct SoftmaxParams {
  ScoresSoftmaxArgs a;
  int64_t bias_base, mask_base;  // b/h offsets (elements)
};

__device__ __forceinline__ float score(const SoftmaxParams& p, const float* srow, int64_t q, int64_t j) {
  float t = srow[j] * p.a.scale;
  if (p.a.bias) t += load_elem(p.a.bias, p.a.bias_dtype, p.bias_base + q * p.a.bias_stride[2] + j * p.a.bias_stride[3]);
  if (p.a.mask &&
      load_elem(p.a.mask, p.a.mask_dtype, p.mask_base + q * p.a.mask_stride[2] + j * p.a.mask_stride[3]) == 0.f)
    t = -INFINITY;
  return t;
}

// Online (max, sum of exp) merge; -inf maxima contribute nothing.
__device__ __forceinline__ void merge(float& m, float& l, float m2, float l2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;
  l = (m == -INFINITY ? 0.f : l * __expf(m - mx)) + (m2 == -INFINITY ? 0.f : l2 * __expf(m2 - mx));
  m = mx;
}

__global__ void __launch_bounds__(kSoftmaxThreads) softmax_kernel(const SoftmaxParams p) {
  __shared__ float sm[kSoftmaxThreads / 32], sl[kSoftmaxThreads / 32];
  const int64_t r = blockIdx.x, q = p.a.q0 + r;
  const float* srow = p.a.s + r * p.a.lds;
  float m = -INFINITY, l = 0.f;
  for (int64_t j = threadIdx.x; j < p.a.cols; j += kSoftmaxThreads) {
    const float t = score(p, srow, q, j);
    if (t == -INFINITY) continue;
    if (t > m) {
      l = (m == -INFINITY ? 0.f : l * __expf(m - t)) + 1.f;
      m = t;
    } else {
      l += __expf(t - m);
    }
  }
  for (int o = 16; o > 0; o >>= 1) merge(m, l, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, l, o));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
  __syncthreads();
  m = -INFINITY;
  l = 0.f;
  for (int w = 0; w < kSoftmaxThreads / 32; ++w) merge(m, l, sm[w], sl[w]);
  const float inv = l > 0.f ? 1.f / l : 0.f;  // a row that keeps no key yields zeros
  for (int64_t j = threadIdx.x; j < p.a.cols_padded; j += kSoftmaxThreads) {
    float v = 0.f;
    if (j < p.a.cols && m != -INFINITY) {
      const float t = score(p, srow, q, j);
      v = t == -INFINITY ? 0.f : __expf(t - m) * inv;
    }
    store_elem(p.a.p, p.a.p_dtype, r * p.a.ldp + j, v);
  }
}

__global__ void splitk_kernel(const float* part, int splits, int rows, int cols, void* out, ElemType dt,
                              int64_t ldo) {
  const int64_t n = static_cast<int64_t>(rows) * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float v = 0.f;
    for (int z = 0; z < splits; ++z) v += part[z * n + i];
    const int64_t r = i / cols, c = i % cols;
    store_elem(out, dt, r * ldo + c, v);
  }
}

struct Plan {
  int64_t lkp, chunk;
};

Plan plan(const BiasAttentionArgs& a) {
  Plan p;
  p.lkp = (static_cast<int64_t>(a.seq_kv) + 7) / 8 * 8;
  int64_t chunk = kScoreBudget / p.lkp / 128 * 128;
  if (chunk < 128) chunk = 128;
  p.chunk = chunk < a.seq_q ? chunk : a.seq_q;
  return p;
}

bool two_byte(ElemType t) { return t == ElemType::kBF16 || t == ElemType::kF16; }
bool float_type(ElemType t) { return t == ElemType::kF32 || two_byte(t); }

}  // namespace

cudaError_t softmax_scores(const ScoresSoftmaxArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.cols < 0 || a.cols_padded < a.cols || a.lds < a.cols || a.ldp < a.cols_padded ||
      !float_type(a.p_dtype) || (a.bias && !float_type(a.bias_dtype)))
    return cudaErrorInvalidValue;
  if (a.rows == 0 || a.cols_padded == 0) return cudaSuccess;
  if (!a.s || !a.p) return cudaErrorInvalidValue;
  SoftmaxParams p{a, a.b * a.bias_stride[0] + a.h * a.bias_stride[1], a.b * a.mask_stride[0] + a.h * a.mask_stride[1]};
  softmax_kernel<<<static_cast<unsigned>(a.rows), kSoftmaxThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t splitk_reduce(const float* part, int splits, int rows, int cols, void* out, ElemType out_dtype,
                          int64_t ldo, cudaStream_t stream) {
  if (splits <= 0 || rows < 0 || cols < 0 || ldo < cols || !float_type(out_dtype)) return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  const int64_t n = static_cast<int64_t>(rows) * cols;
  int64_t blocks = (n + 255) / 256;
  if (blocks > 8192) blocks = 8192;
  splitk_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(part, splits, rows, cols, out, out_dtype, ldo);
  return cudaGetLastError();
}

size_t attention_wide_workspace_bytes(const BiasAttentionArgs& a) {
  if (a.seq_q <= 0 || a.seq_kv <= 0 || a.head_dim <= 0) return 0;
  const Plan p = plan(a);
  const int64_t d = a.head_dim;
  const int64_t bytes = d * p.lkp * 2 + p.chunk * p.lkp * 4 + p.chunk * p.lkp * 2 + kMaxSplits * p.chunk * d * 4;
  return static_cast<size_t>((bytes + 255) / 256 * 256 + 4 * 256);  // room to 256-align each part
}

cudaError_t attention_wide(const BiasAttentionArgs& a, void* workspace, size_t workspace_bytes,
                           cudaStream_t stream) {
  if (!two_byte(a.dtype) || a.head_dim <= 0 || a.head_dim % 8 || a.batch < 0 || a.heads < 0 || a.seq_q < 0 ||
      a.seq_kv <= 0 || (a.bias && !float_type(a.bias_dtype)))
    return cudaErrorInvalidValue;
  if (a.batch == 0 || a.heads == 0 || a.seq_q == 0) return cudaSuccess;
  if (!a.q || !a.k || !a.v || !a.o || !workspace || workspace_bytes < attention_wide_workspace_bytes(a))
    return cudaErrorInvalidValue;
  for (int i = 0; i < 3; ++i)
    if (a.q_stride[i] % 8 || a.k_stride[i] % 8) return cudaErrorInvalidValue;
  if (((reinterpret_cast<uintptr_t>(a.q) | reinterpret_cast<uintptr_t>(a.k)) & 15) != 0) return cudaErrorInvalidValue;
  if (!device_has_sm80()) return cudaErrorNotSupported;
  int dev = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;

  const Plan pl = plan(a);
  const int d = a.head_dim;
  auto carve = [&](size_t& off, size_t bytes) {
    void* ptr = static_cast<uint8_t*>(workspace) + off;
    off = (off + bytes + 255) / 256 * 256;
    return ptr;
  };
  size_t off = 0;
  void* vt = carve(off, static_cast<size_t>(d) * pl.lkp * 2);
  float* s = static_cast<float*>(carve(off, static_cast<size_t>(pl.chunk) * pl.lkp * 4));
  void* pm = carve(off, static_cast<size_t>(pl.chunk) * pl.lkp * 2);
  float* part = static_cast<float*>(carve(off, static_cast<size_t>(kMaxSplits) * pl.chunk * d * 4));
  const int kblocks = static_cast<int>((pl.lkp + 63) / 64);
  const size_t es = 2;

  for (int b = 0; b < a.batch; ++b) {
    for (int h = 0; h < a.heads; ++h) {
      const uint8_t* qh = static_cast<const uint8_t*>(a.q) + (b * a.q_stride[0] + h * a.q_stride[1]) * es;
      const uint8_t* kh = static_cast<const uint8_t*>(a.k) + (b * a.k_stride[0] + h * a.k_stride[1]) * es;
      const uint8_t* vh = static_cast<const uint8_t*>(a.v) + (b * a.v_stride[0] + h * a.v_stride[1]) * es;
      uint8_t* oh = static_cast<uint8_t*>(a.o) + (b * a.o_stride[0] + h * a.o_stride[1]) * es;

      TransposeArgs t;
      t.in = vh;
      t.out = vt;
      t.batch = 1;
      t.rows = a.seq_kv;
      t.cols = d;
      t.rows_padded = static_cast<int>(pl.lkp);
      t.in_row_stride = a.v_stride[2];
      t.out_row_stride = pl.lkp;
      if ((e = transpose_2byte(t, stream)) != cudaSuccess) return e;

      for (int q0 = 0; q0 < a.seq_q; q0 += static_cast<int>(pl.chunk)) {
        const int rows = static_cast<int>(a.seq_q - q0 < pl.chunk ? a.seq_q - q0 : pl.chunk);
        Conv2dArgs g;  // S = Q·Kᵀ
        g.x = qh + q0 * a.q_stride[2] * es;
        g.x_pixel_stride = a.q_stride[2];
        g.w = kh;
        g.w_row_stride = a.k_stride[2];
        g.out = s;
        g.out_layout = ConvLayout::kNHWC;
        g.out_row_stride = pl.lkp;
        g.dtype = a.dtype;
        g.out_dtype = ElemType::kF32;
        g.batch = 1;
        g.in_h = g.out_h = 1;
        g.in_w = g.out_w = rows;
        g.cin = d;
        g.cout = a.seq_kv;
        if ((e = conv2d_implicit_gemm(g, stream)) != cudaSuccess) return e;

        ScoresSoftmaxArgs sa;
        sa.s = s;
        sa.lds = pl.lkp;
        sa.p = pm;
        sa.p_dtype = a.dtype;
        sa.ldp = pl.lkp;
        sa.rows = rows;
        sa.cols = a.seq_kv;
        sa.cols_padded = static_cast<int>(pl.lkp);
        sa.scale = a.scale;
        sa.b = b;
        sa.h = h;
        sa.q0 = q0;
        sa.bias = a.bias;
        sa.bias_dtype = a.bias_dtype;
        sa.mask = a.mask;
        sa.mask_dtype = a.mask_dtype;
        for (int i = 0; i < 4; ++i) {
          sa.bias_stride[i] = a.bias_stride[i];
          sa.mask_stride[i] = a.mask_stride[i];
        }
        if ((e = softmax_scores(sa, stream)) != cudaSuccess) return e;

        // O = P·V: enough CTAs for two waves, at least 8 k-blocks per slice.
        const int tiles = ((rows + 127) / 128) * ((d + 127) / 128);
        int splits = (2 * sms + tiles - 1) / tiles;
        if (splits > kMaxSplits) splits = kMaxSplits;
        if (splits > kblocks / 8) splits = kblocks / 8;
        if (splits < 1) splits = 1;
        Conv2dArgs pv;
        pv.x = pm;
        pv.x_pixel_stride = pl.lkp;
        pv.w = vt;
        pv.w_row_stride = pl.lkp;
        pv.dtype = a.dtype;
        pv.batch = 1;
        pv.in_h = pv.out_h = 1;
        pv.in_w = pv.out_w = rows;
        pv.cin = static_cast<int>(pl.lkp);
        pv.cout = d;
        pv.out_layout = ConvLayout::kNHWC;
        uint8_t* orows = oh + q0 * a.o_stride[2] * es;
        if (splits == 1) {
          pv.out = orows;
          pv.out_dtype = a.dtype;
          pv.out_row_stride = a.o_stride[2];
          if ((e = conv2d_implicit_gemm(pv, stream)) != cudaSuccess) return e;
        } else {
          pv.out = part;
          pv.out_dtype = ElemType::kF32;
          pv.out_row_stride = d;
          pv.split_k = splits;
          pv.out_split_stride = static_cast<int64_t>(rows) * d;
          if ((e = conv2d_implicit_gemm(pv, stream)) != cudaSuccess) return e;
          // conv2d_implicit_gemm may use fewer slices than asked (whole k-blocks per slice).
          const int per = (kblocks + splits - 1) / splits;
          const int used = (kblocks + per - 1) / per;
          if ((e = splitk_reduce(part, used, rows, d, orows, a.dtype, a.o_stride[2], stream)) != cudaSuccess)
            return e;
        }
      }
    }
  }
  return cudaSuccess;
}

}  // namespace fluxk
