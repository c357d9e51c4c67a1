// torch's CPU generator: mt19937 seeded by manual_seed, and torch.randn's float32 path on x86 (normal_fill_AVX2:
// uniforms from 24 random bits, Box-Muller on pairs (i, i+8) of each 16-value chunk, the last chunk redrawn when
// the size is not a multiple of 16), so that `--seed` reproduces diffusers' latents bit for bit.
#include <cmath>
#include <cstring>

#include "kernels.h"

namespace fl::cpu {

void Mt19937::seed_with(uint64_t s) {
  seed = s;
  state[0] = uint32_t(s & 0xffffffffu);  // torch's mt19937 keeps the low 32 bits of the seed
  for (int j = 1; j < 624; j++) state[j] = 1812433253u * (state[j - 1] ^ (state[j - 1] >> 30)) + uint32_t(j);
  index = 624;
  has_cached_normal = false;
}

uint32_t Mt19937::next() {
  if (index >= 624) {
    for (int i = 0; i < 624; i++) {
      uint32_t y = (state[i] & 0x80000000u) | (state[(i + 1) % 624] & 0x7fffffffu);
      uint32_t v = state[(i + 397) % 624] ^ (y >> 1);
      if (y & 1u) v ^= 0x9908b0dfu;
      state[i] = v;
    }
    index = 0;
  }
  uint32_t y = state[index++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

namespace {

inline float uniform24(Mt19937& g) { return float(double(g.next() & 0xffffffu) * (1.0 / 16777216.0)); }

inline double uniform53(Mt19937& g) {
  uint64_t hi = g.next(), lo = g.next();
  uint64_t v = (hi << 32) | lo;
  return double(v & ((uint64_t(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

inline float as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t as_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// torch's AVX2 normal_fill takes log and sin/cos from avx_mathfun (Cephes single-precision polynomials), not
// from libm, and its compiler fuses multiply-adds inside them. These are those functions, one lane at a time,
// with the same fused operations (std::fmaf) and the same plain ones: checked bit for bit against the
// latents_init of every golden case (5120 values).
float cephes_logf(float x) {
  int32_t e_bits = int32_t(as_bits(x) >> 23) - 0x7f;
  x = as_float((as_bits(x) & ~0x7f800000u) | as_bits(0.5f));  // mantissa in [0.5, 1)
  float e = float(e_bits) + 1.0f;
  const bool below = x < 0.707106781186547524f;  // sqrt(1/2)
  const float tmp = below ? x : 0.f;
  x = x - 1.0f;
  e = e - (below ? 1.0f : 0.f);
  x = x + tmp;
  const float z = x * x;
  static const float p[9] = {7.0376836292E-2f, -1.1514610310E-1f, 1.1676998740E-1f,  -1.2420140846E-1f, 1.4249322787E-1f,
                             -1.6668057665E-1f, 2.0000714765E-1f,  -2.4999993993E-1f, 3.3333331174E-1f};
  float y = p[0];
  for (int k = 1; k < 9; k++) y = std::fmaf(y, x, p[k]);
  y = y * x;
  y = std::fmaf(y, z, e * -2.12194440e-4f);
  y = std::fmaf(-z, 0.5f, y);
  return std::fmaf(e, 0.693359375f, x + y);
}

void cephes_sincosf(float x, float* sin_out, float* cos_out) {
  uint32_t sign_sin = as_bits(x) & 0x80000000u;
  x = std::fabs(x);
  float y = x * 1.27323954473516f;  // 4/pi
  int32_t j = int32_t(y);
  j = (j + 1) & ~1;
  y = float(j);
  const uint32_t swap_sin = uint32_t(j & 4) << 29;
  const bool sin_poly_for_sin = (j & 2) == 0;
  // extended-precision reduction x - y*pi/4 in three parts
  x = std::fmaf(y, -0.78515625f, x);
  x = std::fmaf(y, -2.4187564849853515625e-4f, x);
  x = std::fmaf(y, -3.77489497744594108e-8f, x);
  const uint32_t sign_cos = uint32_t((~(j - 2)) & 4) << 29;
  sign_sin ^= swap_sin;
  const float z = x * x;
  float yc = 2.443315711809948E-005f;
  yc = std::fmaf(yc, z, -1.388731625493765E-003f);
  yc = std::fmaf(yc, z, 4.166664568298827E-002f);
  yc = yc * z;
  yc = std::fmaf(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;
  float ys = -1.9515295891E-4f;
  ys = std::fmaf(ys, z, 8.3321608736E-3f);
  ys = std::fmaf(ys, z, -1.6666654611E-1f);
  ys = ys * z;
  ys = std::fmaf(ys, x, x);
  const float s = sin_poly_for_sin ? ys : yc, c = sin_poly_for_sin ? yc : ys;
  *sin_out = as_float(as_bits(s) ^ sign_sin);
  *cos_out = as_float(as_bits(c) ^ sign_cos);
}

void normal_fill_16(float* d) {
  const float two_pi = float(2.0 * M_PI);
  for (int j = 0; j < 8; j++) {
    const float u1 = 1.0f - d[j];
    const float u2 = d[j + 8];
    const float radius = std::sqrt(-2.0f * cephes_logf(u1));
    float s, c;
    cephes_sincosf(two_pi * u2, &s, &c);
    d[j] = radius * c;
    d[j + 8] = radius * s;
  }
}

}  // namespace

void randn_float(Mt19937& g, float* out, int64_t n) {
  if (n >= 16) {
    for (int64_t i = 0; i < n; i++) out[i] = uniform24(g);
    for (int64_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i);
    if (n % 16 != 0) {
      float* tail = out + n - 16;
      for (int i = 0; i < 16; i++) tail[i] = uniform24(g);
      normal_fill_16(tail);
    }
    return;
  }
  // below 16 values torch draws double normals one at a time: Box-Muller in double, returning the cosine and
  // keeping the sine in the generator for the next draw
  for (int64_t i = 0; i < n; i++) {
    if (g.has_cached_normal) {
      g.has_cached_normal = false;
      out[i] = float(g.cached_normal);
      continue;
    }
    const double u1 = uniform53(g), u2 = uniform53(g);
    const double r = std::sqrt(-2.0 * std::log1p(-u2));
    const double theta = 2.0 * M_PI * u1;
    g.cached_normal = r * std::sin(theta);
    g.has_cached_normal = true;
    out[i] = float(r * std::cos(theta));
  }
}

}  // namespace fl::cpu
