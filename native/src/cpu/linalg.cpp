// linear, matmul, attention and convolution on top of the blocked GEMM.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/float_types.h"
#include "../core/parallel.h"
#include "kernels.h"

namespace fl::cpu {

namespace {

// A float32 staging area for a result of another dtype (or the output itself when it is float32).
struct FloatOut {
  Tensor& out;
  std::vector<float> tmp;
  float* ptr;
  explicit FloatOut(Tensor& o) : out(o) {
    if (o.dtype == DType::F32) {
      ptr = o.ptr<float>();
    } else {
      tmp.resize(size_t(o.numel()));
      ptr = tmp.data();
    }
  }
  void finish() {
    if (out.dtype != DType::F32) convert(tmp.data(), DType::F32, out.data(), out.dtype, out.numel());
  }
};

float gelu_tanh(float x) {
  const float k = 0.79788456080286536f;  // sqrt(2/pi)
  return 0.5f * x * (1.f + std::tanh(k * (x + 0.044715f * x * x * x)));
}

void add_bias_rows(float* C, int64_t rows, int64_t cols, const Tensor& bias) {
  std::vector<float> b(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; j++) b[size_t(j)] = load_float(bias.data(), bias.dtype, j);
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      for (int64_t j = 0; j < cols; j++) C[r * cols + j] += b[size_t(j)];
    }
  });
}

// Right-aligned broadcast strides of `t` against a 4-d [B,H,Lq,Lk] frame; 2-d masks are [B,Lk] key padding.
std::vector<int64_t> attn_strides(const Tensor& t, bool key_padding) {
  std::vector<int64_t> s(4, 0);
  if (key_padding && t.shape.size() == 2) {
    s[0] = t.shape[0] == 1 ? 0 : t.shape[1];
    s[3] = t.shape[1] == 1 ? 0 : 1;
    return s;
  }
  auto cs = contiguous_strides(t.shape);
  size_t off = 4 - t.shape.size();
  for (size_t d = 0; d < t.shape.size(); d++) s[d + off] = t.shape[d] == 1 ? 0 : cs[d];
  return s;
}

bool mask_keeps(const Tensor& m, int64_t i) {
  switch (m.dtype) {
    case DType::U8: return m.ptr<uint8_t>()[i] != 0;
    case DType::I32: return m.ptr<int32_t>()[i] != 0;
    case DType::I64: return m.ptr<int64_t>()[i] != 0;
    default: return load_float(m.data(), m.dtype, i) != 0.f;
  }
}

// Columns [p0, p0+pc) of the im2col matrix of one image: row k = (ci, ky, kx), column p = output pixel.
template <class T>
void im2col(const T* x, int64_t Cin, int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t OW, int64_t stride,
            int64_t padding, int64_t p0, int64_t pc, float* col) {
  const int64_t K = Cin * KH * KW;
  parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t kk = k0; kk < k1; kk++) {
      const int64_t ci = kk / (KH * KW), ky = (kk / KW) % KH, kx = kk % KW;
      const T* plane = x + ci * H * W;
      float* dst = col + kk * pc;
      int64_t p = 0;
      while (p < pc) {
        const int64_t oy = (p0 + p) / OW, ox0 = (p0 + p) % OW;
        const int64_t run = std::min(pc - p, OW - ox0);  // the rest of this output row
        const int64_t iy = oy * stride - padding + ky;
        if (iy < 0 || iy >= H) {
          for (int64_t i = 0; i < run; i++) dst[p + i] = 0.f;
        } else {
          const T* row = plane + iy * W;
          for (int64_t i = 0; i < run; i++) {
            const int64_t ix = (ox0 + i) * stride - padding + kx;
            dst[p + i] = (ix >= 0 && ix < W) ? to_f(row[ix]) : 0.f;
          }
        }
        p += run;
      }
    }
  });
}

}  // namespace

void linear(const Tensor& x, const Operand& w, int64_t N, int64_t K, const Tensor* bias, Tensor& out,
            const LinearEpilogue& epi) {
  int64_t M = K ? x.numel() / K : out.numel() / std::max<int64_t>(N, 1);
  Operand A{x.data(), x.dtype, K, 1, nullptr};
  FloatOut C(out);
  gemm(M, N, K, A, w, C.ptr, N, false, true);
  if (bias) add_bias_rows(C.ptr, M, N, *bias);
  if (epi.any()) {
    // gate and residual are in x's dtype; everything stays float32 until the one rounding in finish()
    const DType dt = x.dtype;
    parallel_for(0, M, std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t m = r0; m < r1; m++) {
        float* row = C.ptr + m * N;
        const int64_t g = (m / epi.gate_rows_per_batch) * epi.gate_ld, r = m * epi.residual_ld;
        for (int64_t n = 0; n < N; n++) {
          float v = row[n];
          if (epi.gelu_tanh) v = gelu_tanh(v);
          if (epi.gate) v *= load_float(epi.gate, dt, g + n);
          if (epi.residual) v += load_float(epi.residual, dt, r + n);
          row[n] = v;
        }
      }
    });
  }
  C.finish();
}

void matmul(const Tensor& a, const Tensor& b, Tensor& out) {
  size_t nd = out.shape.size();
  int64_t M = a.shape[a.shape.size() - 2], K = a.shape.back(), N = b.shape.back();
  int64_t batches = out.numel() / std::max<int64_t>(M * N, 1);
  if (M * N == 0) return;
  // batch strides (in matrices) of a and b against the output's batch dims
  Shape bshape(out.shape.begin(), out.shape.end() - 2);
  auto bstr = [&](const Tensor& t) {
    std::vector<int64_t> s(bshape.size(), 0);
    Shape tb(t.shape.begin(), t.shape.end() - 2);
    auto cs = contiguous_strides(tb);
    size_t off = bshape.size() - tb.size();
    for (size_t d = 0; d < tb.size(); d++) s[d + off] = tb[d] == 1 ? 0 : cs[d];
    return s;
  };
  auto sa = bstr(a), sb = bstr(b);
  FloatOut C(out);
  size_t es_a = dtype_size(a.dtype), es_b = dtype_size(b.dtype);
  auto one = [&](int64_t bi, bool parallel) {
    int64_t rem = bi, oa = 0, ob = 0;
    for (size_t d = bshape.size(); d-- > 0;) {
      int64_t idx = rem % bshape[d];
      rem /= bshape[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    Operand A{static_cast<const char*>(a.data()) + size_t(oa * M * K) * es_a, a.dtype, K, 1, nullptr};
    Operand B{static_cast<const char*>(b.data()) + size_t(ob * K * N) * es_b, b.dtype, N, 1, nullptr};
    gemm(M, N, K, A, B, C.ptr + bi * M * N, N, false, parallel);
  };
  (void)nd;
  if (batches >= num_threads() * 2 || batches * M * N * K < (int64_t(1) << 22)) {
    parallel_for(0, batches, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t bi = b0; bi < b1; bi++) one(bi, false);
    });
  } else {
    for (int64_t bi = 0; bi < batches; bi++) one(bi, true);
  }
  C.finish();
}

void sdpa(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* bias, const Tensor* mask, float scale,
          Tensor& out, int64_t B, int64_t H, int64_t Lq, int64_t Lk, const AttnLayout& lay) {
  const int64_t D = q.shape[3], Dv = v.shape[3];
  constexpr int64_t QB = 32;
  const int64_t qblocks = (Lq + QB - 1) / QB;
  std::vector<int64_t> bs = bias ? attn_strides(*bias, false) : std::vector<int64_t>(4, 0);
  std::vector<int64_t> ms = mask ? attn_strides(*mask, true) : std::vector<int64_t>(4, 0);
  const size_t eq = dtype_size(q.dtype), ek = dtype_size(k.dtype), ev = dtype_size(v.dtype);
  parallel_for(0, B * H * qblocks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> S(size_t(QB * Lk)), O(size_t(QB * Dv));
    for (int64_t t = t0; t < t1; t++) {
      int64_t bh = t / qblocks, q0 = (t % qblocks) * QB;
      int64_t b = bh / H, h = bh % H;
      int64_t rows = std::min(QB, Lq - q0);
      const char* qp = static_cast<const char*>(q.data()) + size_t(b * lay.q[0] + h * lay.q[1] + q0 * lay.q[2]) * eq;
      const char* kp = static_cast<const char*>(k.data()) + size_t(b * lay.k[0] + h * lay.k[1]) * ek;
      const char* vp = static_cast<const char*>(v.data()) + size_t(b * lay.v[0] + h * lay.v[1]) * ev;
      gemm(rows, Lk, D, Operand{qp, q.dtype, lay.q[2], 1, nullptr}, Operand{kp, k.dtype, 1, lay.k[2], nullptr},
           S.data(), Lk, false, false);
      for (int64_t r = 0; r < rows; r++) {
        float* srow = S.data() + r * Lk;
        int64_t qi = q0 + r;
        float mx = -INFINITY;
        for (int64_t j = 0; j < Lk; j++) {
          float s = srow[j] * scale;
          if (bias) s += load_float(bias->data(), bias->dtype, b * bs[0] + h * bs[1] + qi * bs[2] + j * bs[3]);
          if (mask && !mask_keeps(*mask, b * ms[0] + h * ms[1] + qi * ms[2] + j * ms[3])) s = -INFINITY;
          srow[j] = s;
          mx = std::fmax(mx, s);
        }
        if (mx == -INFINITY) {
          // every key dropped: the row attends to nothing and yields zeros
          for (int64_t j = 0; j < Lk; j++) srow[j] = 0.f;
          continue;
        }
        double sum = 0;
        for (int64_t j = 0; j < Lk; j++) {
          srow[j] = std::exp(srow[j] - mx);
          sum += srow[j];
        }
        float inv = float(1.0 / sum);
        for (int64_t j = 0; j < Lk; j++) srow[j] *= inv;
      }
      gemm(rows, Dv, Lk, Operand{S.data(), DType::F32, Lk, 1, nullptr}, Operand{vp, v.dtype, lay.v[2], 1, nullptr},
           O.data(), Dv, false, false);
      char* op = static_cast<char*>(out.data()) + size_t(b * lay.o[0] + h * lay.o[1] + q0 * lay.o[2]) * dtype_size(out.dtype);
      for (int64_t r = 0; r < rows; r++) {
        convert(O.data() + r * Dv, DType::F32, op + size_t(r * lay.o[2]) * dtype_size(out.dtype), out.dtype, Dv);
      }
    }
  });
}

void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int64_t stride, int64_t padding, Tensor& out) {
  const int64_t B = x.shape[0], Cin = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t Cout = w.shape[0], KH = w.shape[2], KW = w.shape[3];
  const int64_t OH = out.shape[2], OW = out.shape[3];
  const int64_t P = OH * OW, K = Cin * KH * KW;
  FloatOut C(out);
  Operand A{w.data(), w.dtype, K, 1, nullptr};
  const size_t ex = dtype_size(x.dtype);
  const bool pointwise = KH == 1 && KW == 1 && stride == 1 && padding == 0;
  // im2col in chunks of output pixels so the column buffer (≤ 8 MiB) stays in cache for the GEMM that reads it
  const int64_t chunk = std::max<int64_t>(16, std::min<int64_t>(P, (int64_t(2) << 20) / std::max<int64_t>(K, 1)));
  std::vector<float> col;
  for (int64_t bi = 0; bi < B; bi++) {
    const char* xb = static_cast<const char*>(x.data()) + size_t(bi * Cin * H * W) * ex;
    float* ob = C.ptr + bi * Cout * P;
    if (pointwise) {
      gemm(Cout, P, K, A, Operand{xb, x.dtype, P, 1, nullptr}, ob, P, false, true);
      continue;
    }
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
      int64_t pc = std::min(chunk, P - p0);
      col.resize(size_t(K * pc));
      FL_FLOAT_SWITCH(x.dtype, "conv2d", T, im2col<T>(static_cast<const T*>(static_cast<const void*>(xb)), Cin, H, W,
                                                        KH, KW, OW, stride, padding, p0, pc, col.data()));
      // out[co, p0 + p] with row stride P
      gemm(Cout, pc, K, A, Operand{col.data(), DType::F32, pc, 1, nullptr}, ob + p0, P, false, true);
    }
  }
  if (b) {
    std::vector<float> bias(static_cast<size_t>(Cout));
    for (int64_t c = 0; c < Cout; c++) bias[size_t(c)] = load_float(b->data(), b->dtype, c);
    parallel_for(0, B * Cout, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        float* row = C.ptr + r * P;
        float bv = bias[size_t(r % Cout)];
        for (int64_t p = 0; p < P; p++) row[p] += bv;
      }
    });
  }
  C.finish();
}

}  // namespace fl::cpu
