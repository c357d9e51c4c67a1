// torch's CPU generator: mt19937 seeded by manual_seed, and torch.randn's float32 path (normal_fill: uniforms
// from 24 random bits, Box-Muller on pairs (i, i+8) of each 16-value chunk, the last chunk redrawn when the
// size is not a multiple of 16). Used so `--seed` reproduces diffusers' latents.
#include <cmath>

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

void normal_fill_16(float* d) {
  for (int j = 0; j < 8; j++) {
    const float u1 = 1.0f - d[j];
    const float u2 = d[j + 8];
    const float radius = std::sqrt(-2.0f * std::log(u1));
    const float theta = float(2.0 * M_PI * double(u2));
    d[j] = radius * std::cos(theta);
    d[j + 8] = radius * std::sin(theta);
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
