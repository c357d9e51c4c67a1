// CPU reference kernels: float32 math whatever the storage type, multi-threaded where the work is large.
// The op layer (ops/*.cpp) has checked shapes and dtypes and allocated outputs; these only compute.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/tensor.h"
#include "../ops/types.h"

namespace fl::cpu {

// ---- GEMM ----------------------------------------------------------------------------------------------
// An operand read as a matrix: element (i, j) at ptr + (i*rs + j*cs) elements of dtype; or an NF4 weight W[N,K]
// read transposed (element (k, n) = W[n, k]).
struct Operand {
  const void* ptr = nullptr;
  DType dtype = DType::F32;
  int64_t rs = 0, cs = 0;
  const NF4View* nf4 = nullptr;
};

// C[i*ldc + j] (+)= sum_k A(i,k) B(k,j) for i < M, j < N (float32 accumulation).
void gemm(int64_t M, int64_t N, int64_t K, const Operand& A, const Operand& B, float* C, int64_t ldc, bool accumulate,
          bool parallel);
const char* gemm_kernel_name();

// ---- elementwise and layout -----------------------------------------------------------------------------
void convert(const void* src, DType sd, void* dst, DType dd, int64_t n);
void fill(void* dst, DType dt, int64_t n, double value);
void unary(const Tensor& x, Tensor& y, UnaryOp op, float a, float b);
void binary(const Tensor& a, const Tensor& b, Tensor& out, BinaryOp op);
void modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, Tensor& out);
// dst(i...) = src(i...) over `shape`, both with arbitrary element strides; same dtype.
void strided_copy(void* dst, const std::vector<int64_t>& dst_strides, const void* src,
                  const std::vector<int64_t>& src_strides, const Shape& shape, DType dtype);
void embedding(const Tensor& weight, const Tensor& ids, Tensor& out);
void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out);
void upsample_nearest2x(const Tensor& x, Tensor& out);

// ---- reductions -----------------------------------------------------------------------------------------
void layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& out);
void rms_norm(const Tensor& x, const Tensor* w, float eps, Tensor& out);
// silu: x·sigmoid(x) of the normalised value, before the one rounding to the output dtype.
void group_norm(const Tensor& x, int64_t groups, const Tensor* w, const Tensor* b, float eps, bool silu, Tensor& out);
void softmax(const Tensor& x, int64_t dim, Tensor& out);

// ---- composite ------------------------------------------------------------------------------------------
void linear(const Tensor& x, const Operand& w, int64_t N, int64_t K, const Tensor* bias, Tensor& out,
            const LinearEpilogue& epi);
void matmul(const Tensor& a, const Tensor& b, Tensor& out);
// q, k, v, out as [B,H,L,D] logical order with the element strides of `layout` (head dim contiguous).
void sdpa(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* bias, const Tensor* mask, float scale,
          Tensor& out, int64_t B, int64_t H, int64_t Lq, int64_t Lk, const AttnLayout& layout);
void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int64_t stride, int64_t padding, Tensor& out);

// ---- fused (fused.cpp) ----------------------------------------------------------------------------------
// out = layerNorm(x) * (1 + scale[g]) + shift[g], g = row / rows_per_group; shift/scale [groups, C] in x's dtype.
void layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, int64_t rows_per_group, float eps,
                         Tensor& out);
// x [B,L,H,D]: rmsNorm over D (weight w) then Flux's interleaved rope with cos/sin [L,D].
void qk_norm_rope(const Tensor& x, const Tensor& w, const Tensor& cos, const Tensor& sin, int64_t L, int64_t H,
                  float eps, Tensor& out);
// One stream of jointQkv: qkv [B,L,3·H·D] (q, k, v projections side by side) → rows offset.. offset+L of q, k, v
// [B,Ltot,H,D]: q and k as qk_norm_rope (weights wq, wk; cos/sin [L,D]), v copied.
void joint_qkv_stream(const Tensor& qkv, const Tensor& wq, const Tensor& wk, const Tensor& cos, const Tensor& sin,
                      int64_t offset, int64_t H, float eps, Tensor& q, Tensor& k, Tensor& v);
// out [B, dim] float32: diffusers' get_timestep_embedding of t [B].
void timestep_embedding(const Tensor& t, int64_t dim, bool flip_sin_to_cos, float downscale_freq_shift, float scale,
                        float max_period, Tensor& out);
// n samples mean + std * N(0,1) from Philox4x32-10 (core/philox.h), stored as dt.
void randn_philox(void* out, DType dt, int64_t n, uint64_t seed, float mean, float std);

// ---- NF4 and random -------------------------------------------------------------------------------------
void nf4_quantize(const Tensor& w, int64_t blocksize, uint8_t* packed, float* absmax);
void nf4_dequantize(const NF4View& v, Tensor& out);
// absmax of each block as float (double quant decoded: code * nested absmax + offset).
void nf4_absmax(const NF4View& v, float* out);
void double_quant(const float* absmax, int64_t blocks, int64_t nested_blocksize, const float* dyn_map,
                  uint8_t* codes, float* nested_absmax, float* offset);
void dynamic_map(float* out256);  // the signed map double quantization uses
extern const float kNF4Codes[16];

struct Mt19937 {
  uint32_t state[624];
  int index = 624;
  uint64_t seed = 0;
  bool has_cached_normal = false;
  double cached_normal = 0;
  void seed_with(uint64_t s);
  uint32_t next();
};
void randn_float(Mt19937& gen, float* out, int64_t n);

}  // namespace fl::cpu
