// bitsandbytes NF4 semantics, reproduced bit for bit (bitsandbytes csrc kernels.cu / functional.py, and the
// torch reductions it calls), because checkpoints quantized here must equal checkpoints quantized there.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/float_types.h"
#include "../core/parallel.h"
#include "kernels.h"

namespace fl::cpu {

// The 16 NF4 values (normal quantiles, QLoRA appendix E), as bitsandbytes' quant_map holds them.
const float kNF4Codes[16] = {-1.0f,
                             -0.6961928009986877f,
                             -0.5250730514526367f,
                             -0.39491748809814453f,
                             -0.28444138169288635f,
                             -0.18477343022823334f,
                             -0.09105003625154495f,
                             0.0f,
                             0.07958029955625534f,
                             0.16093020141124725f,
                             0.24611230194568634f,
                             0.33791524171829224f,
                             0.44070982933044434f,
                             0.5626170039176941f,
                             0.7229568362236023f,
                             1.0f};

namespace {

// Midpoints between consecutive NF4 values: the thresholds of bitsandbytes' dQuantizeNF4 decision tree. The code
// is the number of thresholds x exceeds, which is what the tree computes (NaN exceeds none: code 0, as there).
const float kNF4Thresholds[15] = {-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,
                                  -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
                                  -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
                                  0.2035212516784668f,  0.2920137718319893f,   0.3893125355243683f,
                                  0.5016634166240692f,  0.6427869200706482f,   0.8614784181118011f};

inline uint8_t nf4_code(float x) {
  uint8_t c = 0;
  for (float t : kNF4Thresholds) c += x > t;
  return c;
}

// bitsandbytes' dQuantize<0>: binary search over the sorted 256-entry code, then the nearer neighbour
// (comparisons against midpoints in float, exactly as the kernel does them).
uint8_t quantize_dynamic(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    float midpoint = (upper + val) * 0.5f;
    return uint8_t(x > midpoint ? upper_pivot : pivot);
  }
  float midpoint = (lower + val) * 0.5f;
  return uint8_t(x < midpoint ? lower_pivot : pivot);
}

int64_t last_pow2(int64_t n) {
  int64_t p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

// torch's CUDA `tensor.mean()` of a contiguous float32 vector, in its order of additions (Reduce.cuh in a
// single block: lanes = the largest power of two ≤ n (≤ 512), four accumulators per lane — by stride below 128
// elements, by 4-wide vector from 128 on — then the lanes folded in halves), times float(1/n). bitsandbytes
// takes this mean as the double-quant offset; checked against every tensor of the tiny-flux NF4 fixtures.
// Vectors beyond 512 lanes × 256 values (split across blocks on the GPU, an order that depends on its
// multiprocessor count) are summed as one block here and may differ from a given GPU in the last bit.
float torch_cuda_mean(const float* a, int64_t n) {
  if (n == 0) return NAN;
  std::vector<float> lanes;
  if (n >= 128) {
    int64_t vecs = n / 4;
    int64_t bw = std::min<int64_t>(last_pow2(vecs), 512);
    lanes.resize(size_t(bw));
    int64_t tail = n - n % 4;
    for (int64_t t = 0; t < bw; t++) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      for (int64_t v = t; v * 4 + 3 < n; v += bw) {
        for (int i = 0; i < 4; i++) acc[i] = acc[i] + a[v * 4 + i];
      }
      if (tail + t < n) acc[0] = acc[0] + a[tail + t];
      lanes[size_t(t)] = ((acc[0] + acc[1]) + acc[2]) + acc[3];
    }
  } else {
    int64_t bw = last_pow2(n);
    lanes.resize(size_t(bw));
    for (int64_t t = 0; t < bw; t++) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      for (int64_t idx = t; idx < n; idx += 4 * bw) {
        for (int i = 0; i < 4; i++) {
          int64_t j = idx + i * bw;
          if (j < n) acc[i] = acc[i] + a[j];
        }
      }
      lanes[size_t(t)] = ((acc[0] + acc[1]) + acc[2]) + acc[3];
    }
  }
  for (size_t width = lanes.size(); width > 1; width /= 2) {
    for (size_t i = 0; i < width / 2; i++) lanes[i] = lanes[i] + lanes[i + width / 2];
  }
  float factor = 1.0f / float(n);
  return lanes[0] * factor;
}

}  // namespace

void nf4_quantize(const Tensor& w, int64_t blocksize, uint8_t* packed, float* absmax) {
  const int64_t n = w.numel();
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  FL_FLOAT_SWITCH(w.dtype, "nf4Quantize", T, {
    const T* src = w.ptr<T>();
    parallel_for(0, blocks, 64, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; b++) {
        int64_t s = b * blocksize, e = std::min(n, s + blocksize);
        float m = 0.f;
        for (int64_t i = s; i < e; i++) m = std::fmax(m, std::fabs(to_f(src[i])));
        absmax[b] = m;
        const float scale = 1.0f / m;  // bitsandbytes normalises by multiplying with the reciprocal
        // the block starts at an even index (blocksize is even): pairs never straddle blocks
        for (int64_t i = s; i < e; i += 2) {
          uint8_t hi = nf4_code(to_f(src[i]) * scale);
          uint8_t lo = nf4_code((i + 1 < e ? to_f(src[i + 1]) : 0.f) * scale);
          packed[i / 2] = uint8_t((hi << 4) | lo);
        }
      }
    });
  });
}

void nf4_absmax(const NF4View& v, float* out) {
  const int64_t blocks = (v.rows * v.cols + v.blocksize - 1) / v.blocksize;
  if (!v.absmax_codes) {
    std::copy(v.absmax, v.absmax + blocks, out);
    return;
  }
  for (int64_t b = 0; b < blocks; b++) {
    // two roundings, as bitsandbytes' dequantize_blockwise then `absmax += offset`
    float scaled = v.nested_map[v.absmax_codes[b]] * v.nested_absmax[b / v.nested_blocksize];
    out[b] = scaled + v.offset;
  }
}

void nf4_dequantize(const NF4View& v, Tensor& out) {
  const int64_t n = v.rows * v.cols;
  const int64_t blocks = (n + v.blocksize - 1) / v.blocksize;
  std::vector<float> absmax(static_cast<size_t>(blocks));
  nf4_absmax(v, absmax.data());
  FL_FLOAT_SWITCH(out.dtype, "nf4Dequantize", T, {
    T* dst = out.ptr<T>();
    parallel_for(0, n, 1 << 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++) {
        uint8_t byte = v.packed[i >> 1];
        uint8_t code = (i & 1) ? (byte & 0x0f) : (byte >> 4);
        dst[i] = from_f<T>(v.quant_map[code] * absmax[size_t(i / v.blocksize)]);
      }
    });
  });
}

void double_quant(const float* absmax, int64_t blocks, int64_t nested_blocksize, const float* dyn_map,
                  uint8_t* codes, float* nested_absmax, float* offset) {
  const float off = torch_cuda_mean(absmax, blocks);
  *offset = off;
  const int64_t nested = (blocks + nested_blocksize - 1) / nested_blocksize;
  std::vector<float> centered(static_cast<size_t>(blocks));
  for (int64_t i = 0; i < blocks; i++) centered[size_t(i)] = absmax[i] - off;
  for (int64_t b = 0; b < nested; b++) {
    int64_t s = b * nested_blocksize, e = std::min(blocks, s + nested_blocksize);
    float m = 0.f;
    for (int64_t i = s; i < e; i++) m = std::fmax(m, std::fabs(centered[size_t(i)]));
    nested_absmax[b] = m;
    const float scale = 1.0f / m;
    for (int64_t i = s; i < e; i++) codes[i] = quantize_dynamic(dyn_map, centered[size_t(i)] * scale);
  }
}

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) as torch computes it on the CPU:
// linspace(0.1, 1, n) in float32 (start + step·i with one rounding, from the end for the upper half), the
// midpoints of neighbours, times float(10^(i-6)), sorted.
void dynamic_map(float* out256) {
  std::vector<float> data;
  const int max_exp = 7, non_sign_bits = 7;
  auto linspace = [](int64_t steps) {
    std::vector<float> b(static_cast<size_t>(steps));
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / float(steps - 1);
    const int64_t half = steps / 2;
    for (int64_t i = 0; i < steps; i++) {
      b[size_t(i)] = i < half ? std::fmaf(step, float(i), start) : std::fmaf(-step, float(steps - i - 1), end);
    }
    return b;
  };
  auto add_means = [&](const std::vector<float>& b, int i) {
    const float s = float(std::pow(10.0, double(-(max_exp - 1) + i)));
    for (size_t j = 0; j + 1 < b.size(); j++) {
      float mean = (b[j] + b[j + 1]) / 2.0f;
      data.push_back(s * mean);
      data.push_back(-s * mean);
    }
  };
  // 7 exponents x (2^i fractions) x 2 signs = 254 values, plus 0 and 1
  for (int i = 0; i < max_exp; i++) add_means(linspace((int64_t(1) << (i + non_sign_bits - max_exp)) + 1), i);
  data.push_back(0.f);
  data.push_back(1.0f);
  std::sort(data.begin(), data.end());
  std::copy(data.begin(), data.end(), out256);
}

}  // namespace fl::cpu
