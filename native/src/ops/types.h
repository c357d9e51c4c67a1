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
};

}  // namespace fl
