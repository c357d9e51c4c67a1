// Blocked float32 GEMM (packing + 6x16 register micro-kernel, the BLIS/GotoBLAS structure): operands of any
// float dtype, layout (row or column access) or NF4 are converted to float while packed, so the inner kernel
// only ever sees contiguous float panels. Work is split over output tiles across the thread pool.
#include <algorithm>
#include <vector>

#include "../core/float_types.h"
#include "../core/parallel.h"
#include "kernels.h"

namespace fl::cpu {

void gemm_micro_avx2(int64_t kc, const float* A, const float* B, float* C);
void gemm_micro_generic(int64_t kc, const float* A, const float* B, float* C);

namespace {

constexpr int64_t MR = 6, NR = 16;
constexpr int64_t MC = 72, NC = 256, KC = 256;

using Micro = void (*)(int64_t, const float*, const float*, float*);

Micro pick_micro() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return gemm_micro_avx2;
#endif
  return gemm_micro_generic;
}

Micro micro() {
  static Micro m = pick_micro();
  return m;
}

// NF4 weight W[n][k] decoded; absmax per block precomputed into `absmax`.
inline float nf4_elem(const NF4View& v, const float* absmax, int64_t n, int64_t k) {
  int64_t e = n * v.cols + k;
  uint8_t byte = v.packed[e >> 1];
  uint8_t code = (e & 1) ? (byte & 0x0f) : (byte >> 4);
  return v.quant_map[code] * absmax[e / v.blocksize];
}

// Packs A rows [i0, i0+mc) x cols [k0, k0+kc) into panels of MR rows: dst[(p*kc + k)*MR + r].
template <class T>
void pack_a_typed(const Operand& A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* dst) {
  for (int64_t p = 0; p < mc; p += MR) {
    float* panel = dst + p * kc;
    const int64_t rows = std::min(MR, mc - p);
    for (int64_t r = 0; r < rows; r++) {
      const int64_t base = (i0 + p + r) * A.rs + k0 * A.cs;
      for (int64_t k = 0; k < kc; k++) panel[k * MR + r] = to_f(static_cast<const T*>(A.ptr)[base + k * A.cs]);
    }
    for (int64_t r = rows; r < MR; r++) {
      for (int64_t k = 0; k < kc; k++) panel[k * MR + r] = 0.f;
    }
  }
}

void pack_a(const Operand& A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* dst) {
  FL_FLOAT_SWITCH(A.dtype, "gemm", T, pack_a_typed<T>(A, i0, mc, k0, kc, dst));
}

template <class T>
inline float elem(const void* p, int64_t i) {
  return to_f(static_cast<const T*>(p)[i]);
}

// Packs B rows [k0, k0+kc) x cols [j0, j0+nc) into panels of NR columns: dst[(q*kc + k)*NR + c]. The dtype is
// resolved once per call so the copy loops stay tight.
template <class T>
void pack_b_typed(const Operand& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  for (int64_t q = 0; q < nc; q += NR) {
    float* panel = dst + q * kc;
    const int64_t cols = std::min(NR, nc - q);
    if (B.cs == 1) {  // rows of B contiguous (matmul's [K,N], im2col columns)
      for (int64_t k = 0; k < kc; k++) {
        const int64_t base = (k0 + k) * B.rs + j0 + q;
        for (int64_t c = 0; c < cols; c++) panel[k * NR + c] = elem<T>(B.ptr, base + c);
        for (int64_t c = cols; c < NR; c++) panel[k * NR + c] = 0.f;
      }
    } else {  // columns contiguous (linear's weight [N,K] read transposed)
      for (int64_t c = 0; c < cols; c++) {
        const int64_t base = k0 * B.rs + (j0 + q + c) * B.cs;
        for (int64_t k = 0; k < kc; k++) panel[k * NR + c] = elem<T>(B.ptr, base + k * B.rs);
      }
      for (int64_t k = 0; k < kc && cols < NR; k++) {
        for (int64_t c = cols; c < NR; c++) panel[k * NR + c] = 0.f;
      }
    }
  }
}

void pack_b(const Operand& B, const float* nf4_absmax, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  if (B.nf4) {
    for (int64_t q = 0; q < nc; q += NR) {
      float* panel = dst + q * kc;
      const int64_t cols = std::min(NR, nc - q);
      for (int64_t c = 0; c < cols; c++) {
        for (int64_t k = 0; k < kc; k++) panel[k * NR + c] = nf4_elem(*B.nf4, nf4_absmax, j0 + q + c, k0 + k);
      }
      for (int64_t k = 0; k < kc && cols < NR; k++) {
        for (int64_t c = cols; c < NR; c++) panel[k * NR + c] = 0.f;
      }
    }
    return;
  }
  FL_FLOAT_SWITCH(B.dtype, "gemm", T, pack_b_typed<T>(B, k0, kc, j0, nc, dst));
}

void gemm_tile(int64_t i0, int64_t mc, int64_t j0, int64_t nc, int64_t K, const Operand& A, const Operand& B,
               const float* nf4_absmax, float* C, int64_t ldc, bool accumulate) {
  thread_local std::vector<float> abuf, bbuf;
  abuf.resize(size_t((MC + MR) * KC));
  bbuf.resize(size_t((NC + NR) * KC));
  Micro kernel = micro();
  alignas(64) float tile[MR * NR];
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    int64_t kc = std::min(KC, K - k0);
    pack_a(A, i0, mc, k0, kc, abuf.data());
    pack_b(B, nf4_absmax, k0, kc, j0, nc, bbuf.data());
    bool add = accumulate || k0 > 0;
    for (int64_t q = 0; q < nc; q += NR) {
      int64_t cols = std::min(NR, nc - q);
      for (int64_t p = 0; p < mc; p += MR) {
        int64_t rows = std::min(MR, mc - p);
        kernel(kc, abuf.data() + p * kc, bbuf.data() + q * kc, tile);
        for (int64_t r = 0; r < rows; r++) {
          float* crow = C + (i0 + p + r) * ldc + j0 + q;
          const float* trow = tile + r * NR;
          if (add) {
            for (int64_t c = 0; c < cols; c++) crow[c] += trow[c];
          } else {
            for (int64_t c = 0; c < cols; c++) crow[c] = trow[c];
          }
        }
      }
    }
  }
  if (K == 0 && !accumulate) {
    for (int64_t r = 0; r < mc; r++) {
      for (int64_t c = 0; c < nc; c++) C[(i0 + r) * ldc + j0 + c] = 0.f;
    }
  }
}

}  // namespace

const char* gemm_kernel_name() { return micro() == gemm_micro_avx2 ? "avx2" : "generic"; }

void gemm(int64_t M, int64_t N, int64_t K, const Operand& A, const Operand& B, float* C, int64_t ldc, bool accumulate,
          bool parallel) {
  if (M == 0 || N == 0) return;
  std::vector<float> absmax;
  if (B.nf4) {
    absmax.resize(size_t((B.nf4->rows * B.nf4->cols + B.nf4->blocksize - 1) / B.nf4->blocksize));
    nf4_absmax(*B.nf4, absmax.data());
  }
  const float* am = absmax.empty() ? nullptr : absmax.data();
  int64_t mt = (M + MC - 1) / MC, nt = (N + NC - 1) / NC;
  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      int64_t i0 = (t / nt) * MC, j0 = (t % nt) * NC;
      gemm_tile(i0, std::min(MC, M - i0), j0, std::min(NC, N - j0), K, A, B, am, C, ldc, accumulate);
    }
  };
  if (parallel) {
    parallel_for(0, mt * nt, 1, run);
  } else {
    run(0, mt * nt);
  }
}

}  // namespace fl::cpu
