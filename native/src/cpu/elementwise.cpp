#include <cmath>
#include <cstring>

#include "../core/float_types.h"
#include "../core/parallel.h"
#include "kernels.h"

namespace fl::cpu {

namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per task for memory-bound loops

// Iterates the outer index space of `shape` (all dims but the last) calling fn(outer_linear, offsets...) where
// offsets are element offsets for each strided operand.
template <size_t N, class F>
void for_each_row(const Shape& shape, const std::vector<int64_t> (&strides)[N], F&& fn) {
  int64_t nd = int64_t(shape.size());
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < nd; d++) rows *= shape[size_t(d)];
  int64_t inner = nd ? shape[size_t(nd - 1)] : 1;
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t r0, int64_t r1) {
    int64_t off[N];
    for (int64_t r = r0; r < r1; r++) {
      int64_t rem = r;
      for (size_t i = 0; i < N; i++) off[i] = 0;
      for (int64_t d = nd - 2; d >= 0; d--) {
        int64_t idx = rem % shape[size_t(d)];
        rem /= shape[size_t(d)];
        for (size_t i = 0; i < N; i++) off[i] += idx * strides[i][size_t(d)];
      }
      fn(off, inner);
    }
  });
}

inline float gelu_erf(float x) { return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f)); }
inline float gelu_tanh(float x) {
  const float k = 0.79788456080286536f;  // sqrt(2/pi)
  return 0.5f * x * (1.f + std::tanh(k * (x + 0.044715f * x * x * x)));
}
inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

template <class T>
void unary_typed(const T* x, T* y, int64_t n, UnaryOp op, float a, float b) {
  parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      float v = to_f(x[i]);
      float r = 0.f;
      switch (op) {
        case UnaryOp::Gelu: r = gelu_erf(v); break;
        case UnaryOp::GeluTanh: r = gelu_tanh(v); break;
        case UnaryOp::QuickGelu: r = v * sigmoid(1.702f * v); break;
        case UnaryOp::Silu: r = v / (1.f + std::exp(-v)); break;
        case UnaryOp::Tanh: r = std::tanh(v); break;
        case UnaryOp::Sigmoid: r = sigmoid(v); break;
        case UnaryOp::Exp: r = std::exp(v); break;
        case UnaryOp::Affine: r = v * a + b; break;
        case UnaryOp::Clamp: r = std::fmin(std::fmax(v, a), b); break;
      }
      y[i] = from_f<T>(r);
    }
  });
}

template <class T>
void binary_typed(const Tensor& a, const Tensor& b, Tensor& out, BinaryOp op) {
  const auto& shape = out.shape;
  size_t nd = shape.size();
  // broadcast strides, right-aligned
  auto bstrides = [&](const Tensor& t) {
    std::vector<int64_t> s(nd, 0);
    auto cs = contiguous_strides(t.shape);
    size_t off = nd - t.shape.size();
    for (size_t d = 0; d < t.shape.size(); d++) s[d + off] = t.shape[d] == 1 ? 0 : cs[d];
    return s;
  };
  const std::vector<int64_t> strides[3] = {bstrides(a), bstrides(b), contiguous_strides(shape)};
  const T* pa = a.ptr<T>();
  const T* pb = b.ptr<T>();
  T* po = out.ptr<T>();
  int64_t sa = nd ? strides[0][nd - 1] : 0, sb = nd ? strides[1][nd - 1] : 0;
  for_each_row(shape, strides, [&](const int64_t* off, int64_t inner) {
    const T* ra = pa + off[0];
    const T* rb = pb + off[1];
    T* ro = po + off[2];
    for (int64_t i = 0; i < inner; i++) {
      float x = to_f(ra[i * sa]), y = to_f(rb[i * sb]);
      float r;
      switch (op) {
        case BinaryOp::Add: r = x + y; break;
        case BinaryOp::Sub: r = x - y; break;
        case BinaryOp::Mul: r = x * y; break;
        default: r = x / y; break;
      }
      ro[i] = from_f<T>(r);
    }
  });
}

std::vector<int64_t> broadcast_strides(const Tensor& t, size_t nd) {
  std::vector<int64_t> s(nd, 0);
  auto cs = contiguous_strides(t.shape);
  size_t off = nd - t.shape.size();
  for (size_t d = 0; d < t.shape.size(); d++) s[d + off] = t.shape[d] == 1 ? 0 : cs[d];
  return s;
}

}  // namespace

void convert(const void* src, DType sd, void* dst, DType dd, int64_t n) {
  if (sd == dd) {
    std::memcpy(dst, src, size_t(n) * dtype_size(sd));
    return;
  }
  parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    if (is_int(sd) && is_int(dd)) {
      for (int64_t i = i0; i < i1; i++) {
        int64_t v = sd == DType::U8    ? static_cast<const uint8_t*>(src)[i]
                    : sd == DType::I32 ? static_cast<const int32_t*>(src)[i]
                                       : static_cast<const int64_t*>(src)[i];
        if (dd == DType::U8) static_cast<uint8_t*>(dst)[i] = uint8_t(v);
        else if (dd == DType::I32) static_cast<int32_t*>(dst)[i] = int32_t(v);
        else static_cast<int64_t*>(dst)[i] = v;
      }
      return;
    }
    for (int64_t i = i0; i < i1; i++) store_float(dst, dd, i, load_float(src, sd, i));
  });
}

void fill(void* dst, DType dt, int64_t n, double value) {
  uint8_t pattern[8];
  switch (dt) {
    case DType::I64: {
      int64_t v = int64_t(value);
      std::memcpy(pattern, &v, 8);
      break;
    }
    case DType::I32: {
      int32_t v = int32_t(value);
      std::memcpy(pattern, &v, 4);
      break;
    }
    default:
      store_float(pattern, dt, 0, float(value));
  }
  size_t es = dtype_size(dt);
  parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    char* p = static_cast<char*>(dst);
    for (int64_t i = i0; i < i1; i++) std::memcpy(p + size_t(i) * es, pattern, es);
  });
}

void unary(const Tensor& x, Tensor& y, UnaryOp op, float a, float b) {
  FL_FLOAT_SWITCH(x.dtype, "unary", T, unary_typed<T>(x.ptr<T>(), y.ptr<T>(), x.numel(), op, a, b));
}

void binary(const Tensor& a, const Tensor& b, Tensor& out, BinaryOp op) {
  FL_FLOAT_SWITCH(out.dtype, "binary", T, binary_typed<T>(a, b, out, op));
}

void modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, Tensor& out) {
  size_t nd = out.shape.size();
  const std::vector<int64_t> strides[4] = {broadcast_strides(x, nd), broadcast_strides(shift, nd),
                                           broadcast_strides(scale, nd), contiguous_strides(out.shape)};
  FL_FLOAT_SWITCH(out.dtype, "modulate", T, {
    const T* px = x.ptr<T>();
    const T* ps = shift.ptr<T>();
    const T* pc = scale.ptr<T>();
    T* po = out.ptr<T>();
    int64_t sx = nd ? strides[0][nd - 1] : 0, ss = nd ? strides[1][nd - 1] : 0, sc = nd ? strides[2][nd - 1] : 0;
    for_each_row(out.shape, strides, [&](const int64_t* off, int64_t inner) {
      for (int64_t i = 0; i < inner; i++) {
        float v = to_f(px[off[0] + i * sx]);
        po[off[3] + i] = from_f<T>(v * (1.f + to_f(pc[off[2] + i * sc])) + to_f(ps[off[1] + i * ss]));
      }
    });
  });
}

void strided_copy(void* dst, const std::vector<int64_t>& dst_strides, const void* src,
                  const std::vector<int64_t>& src_strides, const Shape& shape, DType dtype) {
  size_t es = dtype_size(dtype);
  size_t nd = shape.size();
  if (nd == 0) {
    std::memcpy(dst, src, es);
    return;
  }
  const std::vector<int64_t> strides[2] = {dst_strides, src_strides};
  int64_t sd = dst_strides[nd - 1], ss = src_strides[nd - 1];
  for_each_row(shape, strides, [&](const int64_t* off, int64_t inner) {
    char* d = static_cast<char*>(dst) + size_t(off[0]) * es;
    const char* s = static_cast<const char*>(src) + size_t(off[1]) * es;
    if (sd == 1 && ss == 1) {
      std::memcpy(d, s, size_t(inner) * es);
    } else {
      for (int64_t i = 0; i < inner; i++) std::memcpy(d + size_t(i * sd) * es, s + size_t(i * ss) * es, es);
    }
  });
}

void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  int64_t V = weight.shape[0], D = weight.shape[1];
  int64_t n = ids.numel();
  size_t row = size_t(D) * dtype_size(weight.dtype);
  const char* w = static_cast<const char*>(weight.data());
  char* o = static_cast<char*>(out.data());
  for (int64_t i = 0; i < n; i++) {
    int64_t id = ids.dtype == DType::I64 ? ids.ptr<int64_t>()[i] : ids.ptr<int32_t>()[i];
    FL_CHECK(id >= 0 && id < V, "ops.embedding: id ", id, " at position ", i, " is out of range for ", V, " rows");
    std::memcpy(o + size_t(i) * row, w + size_t(id) * row, row);
  }
}

void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out) {
  int64_t D = x.shape.back(), L = x.shape[x.shape.size() - 2];
  int64_t rows = x.numel() / D;
  FL_FLOAT_SWITCH(x.dtype, "rope", T, {
    const T* px = x.ptr<T>();
    T* po = out.ptr<T>();
    parallel_for(0, rows, std::max<int64_t>(1, kGrain / D), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        int64_t l = r % L;
        const T* xr = px + r * D;
        T* orow = po + r * D;
        for (int64_t i = 0; i + 1 < D; i += 2) {
          float re = to_f(xr[i]), im = to_f(xr[i + 1]);
          float c0 = load_float(cos.data(), cos.dtype, l * D + i), c1 = load_float(cos.data(), cos.dtype, l * D + i + 1);
          float s0 = load_float(sin.data(), sin.dtype, l * D + i), s1 = load_float(sin.data(), sin.dtype, l * D + i + 1);
          orow[i] = from_f<T>(re * c0 - im * s0);
          orow[i + 1] = from_f<T>(im * c1 + re * s1);
        }
      }
    });
  });
}

void upsample_nearest2x(const Tensor& x, Tensor& out) {
  int64_t H = x.shape[2], W = x.shape[3];
  int64_t planes = x.shape[0] * x.shape[1];
  size_t es = dtype_size(x.dtype);
  const char* px = static_cast<const char*>(x.data());
  char* po = static_cast<char*>(out.data());
  parallel_for(0, planes * H, std::max<int64_t>(1, kGrain / (4 * W)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      int64_t p = r / H, y = r % H;
      const char* src = px + size_t((p * H + y) * W) * es;
      char* d0 = po + size_t((p * 2 * H + 2 * y) * 2 * W) * es;
      for (int64_t xx = 0; xx < W; xx++) {
        std::memcpy(d0 + size_t(2 * xx) * es, src + size_t(xx) * es, es);
        std::memcpy(d0 + size_t(2 * xx + 1) * es, src + size_t(xx) * es, es);
      }
      std::memcpy(d0 + size_t(2 * W) * es, d0, size_t(2 * W) * es);
    }
  });
}

}  // namespace fl::cpu
