// Typed access to float storage for templated CPU kernels: float, and bf16/f16 as tagged 16-bit words.
#pragma once
#include "dtype.h"
#include "error.h"

namespace fl {

struct bf16_t {
  uint16_t x;
};
struct f16_t {
  uint16_t x;
};

inline float to_f(float v) { return v; }
inline float to_f(bf16_t v) { return bf16_to_float(v.x); }
inline float to_f(f16_t v) { return f16_to_float(v.x); }

template <class T>
inline T from_f(float v);
template <>
inline float from_f<float>(float v) {
  return v;
}
template <>
inline bf16_t from_f<bf16_t>(float v) {
  return bf16_t{float_to_bf16(v)};
}
template <>
inline f16_t from_f<f16_t>(float v) {
  return f16_t{float_to_f16(v)};
}

}  // namespace fl

// Runs the statements with T bound to the storage type of a float dtype; other dtypes throw naming `what`.
#define FL_FLOAT_SWITCH(dtype, what, T, ...)                                                    \
  switch (dtype) {                                                                              \
    case ::fl::DType::F32: {                                                                    \
      using T = float;                                                                          \
      __VA_ARGS__;                                                                              \
      break;                                                                                    \
    }                                                                                           \
    case ::fl::DType::BF16: {                                                                   \
      using T = ::fl::bf16_t;                                                                   \
      __VA_ARGS__;                                                                              \
      break;                                                                                    \
    }                                                                                           \
    case ::fl::DType::F16: {                                                                    \
      using T = ::fl::f16_t;                                                                    \
      __VA_ARGS__;                                                                              \
      break;                                                                                    \
    }                                                                                           \
    default:                                                                                    \
      ::fl::fail(::fl::cat(what, ": expects a float tensor, got ", ::fl::dtype_name(dtype))); \
  }
