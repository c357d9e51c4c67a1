// Normalisations and softmax. Statistics accumulate in double: these are references, and double sums keep the
// CPU result independent of the thread split.
#include <cmath>
#include <vector>

#include "../core/float_types.h"
#include "../core/parallel.h"
#include "kernels.h"

namespace fl::cpu {

namespace {

float param(const Tensor* t, int64_t i, float fallback) { return t ? load_float(t->data(), t->dtype, i) : fallback; }

}  // namespace

void layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& out) {
  int64_t C = x.shape.back();
  int64_t rows = C ? x.numel() / C : 0;
  FL_FLOAT_SWITCH(x.dtype, "layerNorm", T, {
    const T* px = x.ptr<T>();
    T* po = out.ptr<T>();
    parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const T* xr = px + r * C;
        double sum = 0;
        for (int64_t i = 0; i < C; i++) sum += to_f(xr[i]);
        double mean = sum / double(C);
        double sq = 0;
        for (int64_t i = 0; i < C; i++) {
          double d = to_f(xr[i]) - mean;
          sq += d * d;
        }
        float rstd = float(1.0 / std::sqrt(sq / double(C) + double(eps)));
        float m = float(mean);
        for (int64_t i = 0; i < C; i++) {
          po[r * C + i] = from_f<T>((to_f(xr[i]) - m) * rstd * param(w, i, 1.f) + param(b, i, 0.f));
        }
      }
    });
  });
}

void rms_norm(const Tensor& x, const Tensor* w, float eps, Tensor& out) {
  int64_t C = x.shape.back();
  int64_t rows = C ? x.numel() / C : 0;
  FL_FLOAT_SWITCH(x.dtype, "rmsNorm", T, {
    const T* px = x.ptr<T>();
    T* po = out.ptr<T>();
    parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const T* xr = px + r * C;
        double sq = 0;
        for (int64_t i = 0; i < C; i++) {
          double v = to_f(xr[i]);
          sq += v * v;
        }
        float rstd = float(1.0 / std::sqrt(sq / double(C) + double(eps)));
        for (int64_t i = 0; i < C; i++) po[r * C + i] = from_f<T>(to_f(xr[i]) * rstd * param(w, i, 1.f));
      }
    });
  });
}

void group_norm(const Tensor& x, int64_t groups, const Tensor* w, const Tensor* b, float eps, bool silu, Tensor& out) {
  int64_t B = x.shape[0], C = x.shape[1];
  int64_t spatial = B * C != 0 ? x.numel() / (B * C) : 0;
  int64_t cpg = C / groups;
  int64_t n = cpg * spatial;
  FL_FLOAT_SWITCH(x.dtype, "groupNorm", T, {
    const T* px = x.ptr<T>();
    T* po = out.ptr<T>();
    parallel_for(0, B * groups, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t bg = g0; bg < g1; bg++) {
        const T* xs = px + bg * n;
        double sum = 0;
        for (int64_t i = 0; i < n; i++) sum += to_f(xs[i]);
        double mean = n ? sum / double(n) : 0;
        double sq = 0;
        for (int64_t i = 0; i < n; i++) {
          double d = to_f(xs[i]) - mean;
          sq += d * d;
        }
        float rstd = float(1.0 / std::sqrt((n ? sq / double(n) : 0) + double(eps)));
        float m = float(mean);
        int64_t g = bg % groups;
        for (int64_t c = 0; c < cpg; c++) {
          int64_t ch = g * cpg + c;
          float scale = rstd * param(w, ch, 1.f), shift = param(b, ch, 0.f);
          const T* xc = xs + c * spatial;
          T* oc = po + bg * n + c * spatial;
          for (int64_t i = 0; i < spatial; i++) {
            const float v = (to_f(xc[i]) - m) * scale + shift;
            if (!silu) {
              oc[i] = from_f<T>(v);
              continue;
            }
            // torch's group_norm then silu: the norm's output in T, then silu in float32 (cpu ops.silu's formula)
            const float r = to_f(from_f<T>(v));
            oc[i] = from_f<T>(r / (1.f + std::exp(-r)));
          }
        }
      }
    });
  });
}

void softmax(const Tensor& x, int64_t dim, Tensor& out) {
  int64_t L = x.shape[size_t(dim)];
  int64_t inner = 1;
  for (size_t d = size_t(dim) + 1; d < x.shape.size(); d++) inner *= x.shape[d];
  int64_t outer = L * inner != 0 ? x.numel() / (L * inner) : 0;
  FL_FLOAT_SWITCH(x.dtype, "softmax", T, {
    const T* px = x.ptr<T>();
    T* po = out.ptr<T>();
    parallel_for(0, outer * inner, std::max<int64_t>(1, 16384 / std::max<int64_t>(L, 1)), [&](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(L));
      for (int64_t r = r0; r < r1; r++) {
        int64_t base = (r / inner) * L * inner + r % inner;
        float mx = -INFINITY;
        for (int64_t i = 0; i < L; i++) {
          row[size_t(i)] = to_f(px[base + i * inner]);
          mx = std::fmax(mx, row[size_t(i)]);
        }
        double sum = 0;
        for (int64_t i = 0; i < L; i++) {
          row[size_t(i)] = std::exp(row[size_t(i)] - mx);
          sum += row[size_t(i)];
        }
        float inv = float(1.0 / sum);
        for (int64_t i = 0; i < L; i++) po[base + i * inner] = from_f<T>(row[size_t(i)] * inv);
      }
    });
  });
}

}  // namespace fl::cpu
