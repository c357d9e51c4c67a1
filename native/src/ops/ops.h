// The op layer: argument checks at the boundary, output allocation, dispatch to cpu:: or cuda:: kernels.
#pragma once
#include <string>
#include <vector>

#include "../core/tensor.h"
#include "types.h"

namespace fl::ops {

// NF4 weight as tensors on one device (see NF4View for the meaning of the parts).
struct NF4 {
  Tensor packed, quant_map, absmax, absmax_codes, nested_absmax, nested_map;
  int64_t rows = 0, cols = 0, blocksize = 64, nested_blocksize = 256;
  float offset = 0.f;
  bool standard_codes = false;  // quant_map is bitsandbytes' NF4 code book (see NF4View)
  bool double_quant() const { return absmax_codes.defined(); }
  Device device() const { return packed.device(); }
  NF4View view() const;
  void check(const char* op) const;
};

Tensor full(const Shape& shape, DType dtype, Device device, double value);
Tensor from_host(const void* data, size_t bytes, DType stored, const Shape& shape, DType dtype, Device device);
Tensor from_file(const std::string& path, uint64_t offset, const Shape& shape, DType stored, DType dtype, Device device);
Tensor to(const Tensor& t, Device device, DType dtype, bool non_blocking, bool pinned);
void copy_into(const Tensor& dst, const Tensor& src, bool non_blocking);
// Host copy of the raw storage (waits for the device).
void read_bytes(const Tensor& t, void* dst);

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor concat(const std::vector<Tensor>& ts, int64_t dim);

// linear's fused epilogue: out = residual + gate ⊙ act(x·Wᵀ + bias) (see LinearEpilogue). gate is [G,1,N] or [G,N]
// with G = 1 or G = x.shape[0] (one row per batch); residual has the output's shape.
struct LinearOptions {
  bool gelu_tanh = false;
  const Tensor* gate = nullptr;
  const Tensor* residual = nullptr;
};

Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias, const LinearOptions& opts = {});
Tensor linear_nf4(const Tensor& x, const NF4& w, const Tensor* bias, const LinearOptions& opts = {});
// linear of x given in parts along its last dim (w dense, or w_nf4): the product with their concatenation; on CUDA
// two bf16 parts are read in place by the GEMM (no concatenation), bitwise what linear of the concatenation gives.
Tensor linear_parts(const std::vector<Tensor>& xs, const Tensor* w, const NF4* w_nf4, const Tensor* bias,
                    const LinearOptions& opts = {});
// Linears of one x side by side: [..., ΣNᵢ] = concat(linear(x, Wᵢ, bᵢ)...) along the last dim, each layer dense (w)
// or NF4 (w_nf4), bitwise what the separate linears give. On CUDA, bf16 x with at most 16 rows and NF4 weights of
// the same K run as one skinny launch (Flux's adaptive-norm projections of silu(temb)); otherwise layer by layer.
struct ConcatLayer {
  const Tensor* w = nullptr;
  const NF4* w_nf4 = nullptr;
  const Tensor* bias = nullptr;
};
Tensor linear_concat(const Tensor& x, const std::vector<ConcatLayer>& layers);
// Independent linears (each ops.linear of its x, weight, bias and epilogue) in as few launches as the GPU kernels
// allow: two NF4 products of the same N, K and epilogue kind on sm90 share one (Flux's double blocks: the image and
// text streams), the same values as apart up to the float32 order of the split last round; otherwise one by one.
struct GroupLinear {
  const Tensor* x = nullptr;
  const Tensor* w = nullptr;
  const NF4* w_nf4 = nullptr;
  const Tensor* bias = nullptr;
  LinearOptions opts;
};
std::vector<Tensor> linear_group(const std::vector<GroupLinear>& items);
Tensor matmul(const Tensor& a, const Tensor& b);
// q, k, v [B,H,L,D], or [B,L,H,D] when blhd (the output follows).
Tensor sdpa(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* bias, const Tensor* mask, float scale,
            bool blhd = false);
Tensor layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps);
Tensor rms_norm(const Tensor& x, const Tensor* w, float eps);
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor* w, const Tensor* b, float eps, bool silu = false);
Tensor softmax(const Tensor& x, int64_t dim);
Tensor unary(const Tensor& x, UnaryOp op, float a, float b);
Tensor binary(const Tensor& a, const Tensor& b, BinaryOp op);
Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale);
Tensor embedding(const Tensor& weight, const Tensor& ids);
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin);
// Group norm (+SiLU) of conv2d's input, as group_norm's arguments.
struct ConvNorm {
  int64_t groups;
  const Tensor* weight;
  const Tensor* bias;
  float eps;
  bool silu;
};
// upsample: convolve the nearest-2x upsampled x (diffusers' Upsample2D) without materialising it on CUDA.
// norm: convolve group_norm(x, ...) (before the upsample), bit for bit the two ops, without storing the
// normalised x on CUDA for bf16/f16.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int64_t stride, int64_t padding,
              bool upsample = false, const ConvNorm* norm = nullptr);
Tensor upsample_nearest2x(const Tensor& x);

NF4 nf4_quantize(const Tensor& w, int64_t blocksize, bool double_quant, int64_t nested_blocksize);
Tensor nf4_dequantize(const NF4& w, DType dtype);
// The float32 absmax of every block (double quant decoded exactly as the dequantization does).
Tensor nf4_absmax(const NF4& w);

// fused.cpp
Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps);
Tensor qk_norm_rope(const Tensor& x, const Tensor& w, const Tensor& cos, const Tensor& sin, float eps);
// One token stream of joint_qkv: its fused projection qkv [B,L,3·H·D] (q, k, v side by side), the QK-norm weights
// [D] and its rows of the rotary table cos/sin [L,D].
struct QkvStream {
  const Tensor* qkv;
  const Tensor* norm_q;
  const Tensor* norm_k;
  const Tensor* cos;
  const Tensor* sin;
};
// The joint attention inputs {q, k, v}, each [B,ΣL,H,D], streams in order along L: q and k as qk_norm_rope, v copied.
std::vector<Tensor> joint_qkv(const std::vector<QkvStream>& streams, int64_t heads, float eps);
// A stream given by its projection inputs: qkv = linear(x [B,L,K], weight [3·H·D, K] (dense, or nf4), bias).
struct QkvProjectionStream {
  const Tensor* x;
  const Tensor* weight;    // null when weight_nf4 is set
  const NF4* weight_nf4;
  const Tensor* bias;      // may be null
  const Tensor* norm_q;
  const Tensor* norm_k;
  const Tensor* cos;
  const Tensor* sin;
};
// joint_qkv of the streams' projections, bitwise as linear then joint_qkv; on sm90 with bf16 activations and
// head dim 128 the projection GEMM writes q, k, v itself (no [B,L,3·H·D] intermediate), two NF4 streams in one
// launch. `alongside` (one stream, its x): also that linear of the stream's x, appended to [q, k, v]; with both
// weights NF4 on sm90 one launch computes both (Flux's single blocks: QKV and MLP up). Launches shared with another
// product sum a split last round's pieces in their own float32 order.
std::vector<Tensor> joint_qkv_projection(const std::vector<QkvProjectionStream>& streams, int64_t heads, float eps,
                                         const GroupLinear* alongside = nullptr);
Tensor timestep_embedding(const Tensor& t, int64_t dim, bool flip_sin_to_cos, float downscale_freq_shift, float scale,
                          float max_period);
Tensor randn_philox(const Shape& shape, DType dtype, Device device, uint64_t seed, float mean, float std);

}  // namespace fl::ops
