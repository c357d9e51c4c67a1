// Plain descriptions shared by the op layer and both backends.
#pragma once
#include <cstdint>

#include "../core/dtype.h"

namespace fl {

enum class UnaryOp : uint8_t { Gelu, GeluTanh, QuickGelu, Silu, Tanh, Sigmoid, Exp, Affine, Clamp };
enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };

// An NF4 weight W[rows, cols] as raw pointers on one device. Without double quant `absmax` holds one float per
// block; with it, `absmax_codes` (uint8 per block), `nested_absmax` (float per nested block), `nested_map`
// (256 floats) and `offset` describe it.
struct NF4View {
  const uint8_t* packed = nullptr;
  const float* quant_map = nullptr;
  const float* absmax = nullptr;
  const uint8_t* absmax_codes = nullptr;
  const float* nested_absmax = nullptr;
  const float* nested_map = nullptr;
  int64_t rows = 0, cols = 0, blocksize = 64, nested_blocksize = 256;
  float offset = 0.f;
  // quant_map is bitsandbytes' NF4 code book (known when the weight was made; the fluxk kernels have it built in)
  bool standard_codes = false;
};

// The fused epilogue of linear, per output element (m, n), in float32 with one rounding at the end:
//   out = residual[m, n] + gate[m / gate_rows_per_batch, n] * act(x·Wᵀ + bias)[m, n]
// gate and residual are in x's dtype; a null pointer leaves that term out (gate 1, residual 0); a leading dimension
// (elements between rows) of 0 repeats one row for every m.
struct LinearEpilogue {
  bool gelu_tanh = false;
  const void* gate = nullptr;
  int64_t gate_ld = 0;
  int64_t gate_rows_per_batch = 1;
  const void* residual = nullptr;
  int64_t residual_ld = 0;
  bool any() const { return gelu_tanh || gate || residual; }
};

// Element strides {batch, head, token} of the attention operands; the head dim is contiguous. [B,H,L,D] (torch's
// layout) and [B,L,H,D] (the projections' own layout, no transposes) are both such strided views.
struct AttnLayout {
  int64_t q[3] = {0, 0, 0}, k[3] = {0, 0, 0}, v[3] = {0, 0, 0}, o[3] = {0, 0, 0};
  static void bhld(int64_t* s, int64_t H, int64_t L, int64_t D) {
    s[0] = H * L * D;
    s[1] = L * D;
    s[2] = D;
  }
  static void blhd(int64_t* s, int64_t H, int64_t L, int64_t D) {
    s[0] = L * H * D;
    s[1] = D;
    s[2] = H * D;
  }
};

}  // namespace fl
