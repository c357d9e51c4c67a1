// Fused ops of the Flux transformer (the CPU references of cuda/fused.cu): adaptive layer norm with modulation,
// RMS QK-norm with rotary embedding (alone, or on fused QKV projections into the joint attention inputs), the
// sinusoidal timestep embedding; and Philox normal samples.
// Statistics accumulate in double like the plain norms (norm.cpp); everything else is float32 with one rounding to
// the output dtype.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/float_types.h"
#include "../core/parallel.h"
#include "../core/philox.h"
#include "kernels.h"

namespace fl::cpu {

void layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, int64_t rows_per_group, float eps,
                         Tensor& out) {
  const int64_t C = x.shape.back();
  const int64_t rows = C ? x.numel() / C : 0;
  FL_FLOAT_SWITCH(x.dtype, "layerNormModulate", T, {
    const T* px = x.ptr<T>();
    const T* psh = shift.ptr<T>();
    const T* psc = scale.ptr<T>();
    T* po = out.ptr<T>();
    parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const T* xr = px + r * C;
        const T* sh = psh + (r / rows_per_group) * C;
        const T* sc = psc + (r / rows_per_group) * C;
        double sum = 0;
        for (int64_t i = 0; i < C; i++) sum += to_f(xr[i]);
        const double mean = sum / double(C);
        double sq = 0;
        for (int64_t i = 0; i < C; i++) {
          const double d = to_f(xr[i]) - mean;
          sq += d * d;
        }
        const float rstd = float(1.0 / std::sqrt(sq / double(C) + double(eps)));
        const float m = float(mean);
        for (int64_t i = 0; i < C; i++) {
          const float v = (to_f(xr[i]) - m) * rstd;
          po[r * C + i] = from_f<T>(v * (1.f + to_f(sc[i])) + to_f(sh[i]));
        }
      }
    });
  });
}

namespace {

// One row of D values: rmsNorm over D (statistics in double), × w, then Flux's interleaved rotation with the cos/sin
// row `l`, float32 with one rounding to T. qkNormRope and jointQkv both compute through this, so they agree bitwise.
template <class T>
void norm_rope_row(const T* xr, T* o, int64_t D, const Tensor& w, const Tensor& cos, const Tensor& sin, int64_t l,
                   float eps, float* y) {
  double sq = 0;
  for (int64_t i = 0; i < D; i++) {
    const double v = to_f(xr[i]);
    sq += v * v;
  }
  const float rstd = float(1.0 / std::sqrt(sq / double(D) + double(eps)));
  for (int64_t i = 0; i < D; i++) y[i] = to_f(xr[i]) * rstd * load_float(w.data(), w.dtype, i);
  for (int64_t i = 0; i < D; i += 2) {
    const float re = y[i], im = y[i + 1];
    const float c0 = load_float(cos.data(), cos.dtype, l * D + i), c1 = load_float(cos.data(), cos.dtype, l * D + i + 1);
    const float s0 = load_float(sin.data(), sin.dtype, l * D + i), s1 = load_float(sin.data(), sin.dtype, l * D + i + 1);
    o[i] = from_f<T>(re * c0 - im * s0);
    o[i + 1] = from_f<T>(im * c1 + re * s1);
  }
}

}  // namespace

void qk_norm_rope(const Tensor& x, const Tensor& w, const Tensor& cos, const Tensor& sin, int64_t L, int64_t H,
                  float eps, Tensor& out) {
  const int64_t D = x.shape.back();
  const int64_t rows = x.numel() / D;
  FL_FLOAT_SWITCH(x.dtype, "qkNormRope", T, {
    const T* px = x.ptr<T>();
    T* po = out.ptr<T>();
    parallel_for(0, rows, std::max<int64_t>(1, 16384 / D), [&](int64_t r0, int64_t r1) {
      std::vector<float> y(static_cast<size_t>(D));
      for (int64_t r = r0; r < r1; r++) norm_rope_row(px + r * D, po + r * D, D, w, cos, sin, (r / H) % L, eps, y.data());
    });
  });
}

void joint_qkv_stream(const Tensor& qkv, const Tensor& wq, const Tensor& wk, const Tensor& cos, const Tensor& sin,
                      int64_t offset, int64_t H, float eps, Tensor& q, Tensor& k, Tensor& v) {
  const int64_t B = qkv.shape[0], L = qkv.shape[1], D = q.shape[3], Ltot = q.shape[1];
  const int64_t HD = H * D;
  FL_FLOAT_SWITCH(qkv.dtype, "jointQkv", T, {
    const T* px = qkv.ptr<T>();
    T* pq = q.ptr<T>();
    T* pk = k.ptr<T>();
    T* pv = v.ptr<T>();
    // One task per token: its q, k and v rows of every head.
    parallel_for(0, B * L, std::max<int64_t>(1, 16384 / (3 * HD)), [&](int64_t t0, int64_t t1) {
      std::vector<float> y(static_cast<size_t>(D));
      for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / L, l = t % L;
        const T* in = px + t * 3 * HD;
        const int64_t o = ((b * Ltot) + offset + l) * HD;
        for (int64_t h = 0; h < H; h++) {
          norm_rope_row(in + h * D, pq + o + h * D, D, wq, cos, sin, l, eps, y.data());
          norm_rope_row(in + HD + h * D, pk + o + h * D, D, wk, cos, sin, l, eps, y.data());
        }
        std::copy(in + 2 * HD, in + 3 * HD, pv + o);
      }
    });
  });
}

void timestep_embedding(const Tensor& t, int64_t dim, bool flip_sin_to_cos, float downscale_freq_shift, float scale,
                        float max_period, Tensor& out) {
  const int64_t B = t.numel(), half = dim / 2;
  float* po = out.ptr<float>();
  // torch's float32 steps: exponent = float(-ln(max_period)) * i / float(half - shift); freq = exp(exponent)
  const float neg_log = float(-std::log(double(max_period)));
  const float denom = float(double(half) - double(downscale_freq_shift));
  for (int64_t b = 0; b < B; b++) {
    const float tb = load_float(t.data(), t.dtype, b);
    float* row = po + b * dim;
    for (int64_t i = 0; i < half; i++) {
      const float exponent = neg_log * float(i) / denom;
      const float freq = float(std::exp(double(exponent)));  // see cuda/fused.cu
      const float arg = scale * (tb * freq);
      const float s = std::sin(arg), c = std::cos(arg);
      row[flip_sin_to_cos ? half + i : i] = s;
      row[flip_sin_to_cos ? i : half + i] = c;
    }
    if (dim % 2) row[dim - 1] = 0.f;
  }
}

void randn_philox(void* out, DType dt, int64_t n, uint64_t seed, float mean, float std) {
  parallel_for(0, (n + 3) / 4, 4096, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
      const philox::Words w = philox::block(seed, uint64_t(c));
      for (int pair = 0; pair < 2; pair++) {
        const float r = std::sqrt(-2.f * std::log(philox::uniform(w.x[2 * pair])));
        const float theta = 6.2831853071795865f * philox::uniform(w.x[2 * pair + 1]);
        const float z[2] = {r * std::cos(theta), r * std::sin(theta)};
        for (int j = 0; j < 2; j++) {
          const int64_t i = 4 * c + 2 * pair + j;
          if (i < n) store_float(out, dt, i, mean + std * z[j]);
        }
      }
    }
  });
}

}  // namespace fl::cpu
