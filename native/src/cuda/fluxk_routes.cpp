// Routes linear (bf16 and NF4 weights) and attention to the fluxk tensor-core kernels (src/sm90: wgmma/TMA for
// sm_90; src/sm80: mma.sync for every sm_80+ GPU; docs/kernels.md). fluxk computes in bf16 with float32
// accumulation, so only bf16 activations are routed, plus float32 activations with a bf16 weight, which run
// exactly as three bf16 parts (gemm_f32_bf16w); other float32 and float16 products keep the portable float32-math
// kernels. A route answers false whenever fluxk declines (shape, alignment, device, or an argument fluxk has no
// slot for), and the op layer then runs the portable kernel, so every shape stays correct.
#include <algorithm>
#include <atomic>
#include <climits>
#include <mutex>
#include <optional>
#include <vector>

#include "../core/gpu.h"
#include "../sm90/kernels.h"
#include "check.h"
#include "fluxk_bridge.h"
#include "launch.h"

#ifndef FLUXLAB_HAVE_SM90
#define FLUXLAB_HAVE_SM90 0
#endif

namespace fl::cuda {

namespace {

std::atomic<int64_t> g_routes[int(Route::kCount)];

const char* route_name(Route r) {
  switch (r) {
    case Route::LinearFluxkSm90: return "linear bf16: fluxk sm90 (wgmma)";
    case Route::LinearFluxkSm80: return "linear bf16: fluxk sm80 (mma.sync)";
    case Route::LinearFluxkGemv: return "linear bf16: fluxk gemv (M<=16)";
    case Route::LinearPortable: return "linear: portable";
    case Route::LinearF32SplitSm90: return "linear f32 (bf16 weight): fluxk 3xbf16 split sm90 (wgmma)";
    case Route::LinearF32SplitSm80: return "linear f32 (bf16 weight): fluxk 3xbf16 split sm80 (mma.sync)";
    case Route::LinearNf4FluxkSm90: return "linear nf4: fluxk sm90 (wgmma)";
    case Route::LinearNf4FluxkSm80: return "linear nf4: fluxk sm80 (mma.sync)";
    case Route::LinearNf4FluxkGemv: return "linear nf4: fluxk gemv (M<=16)";
    case Route::LinearNf4ConcatFluxkGemv: return "linear nf4 side by side: fluxk gemv (M<=16)";
    case Route::LinearNf4DequantizedSm90: return "linear nf4: dequantized + fluxk sm90 (wgmma)";
    case Route::LinearNf4DequantizedSm80: return "linear nf4: dequantized + fluxk sm80 (mma.sync)";
    case Route::LinearNf4Portable: return "linear nf4: portable";
    case Route::LinearTwoPartFluxkSm90: return "linear bf16, x in two parts: fluxk sm90 (wgmma)";
    case Route::LinearNf4TwoPartDequantizedSm90: return "linear nf4, x in two parts: dequantized + fluxk sm90 (wgmma)";
    case Route::LinearNf4TwoPartFluxkSm90: return "linear nf4, x in two parts: fluxk sm90 (wgmma)";
    case Route::LinearJointQkvFluxkSm90: return "linear bf16 + jointQkv: fluxk sm90 (wgmma, fused epilogue)";
    case Route::LinearNf4JointQkvFluxkSm90: return "linear nf4 + jointQkv: fluxk sm90 (wgmma, fused epilogue)";
    case Route::LinearNf4PairFluxkSm90: return "linear nf4, two products in one launch: fluxk sm90 (wgmma)";
    case Route::LinearNf4JointQkvPairFluxkSm90: return "linear nf4 + jointQkv, two streams in one launch: fluxk sm90 (wgmma, fused epilogue)";
    case Route::LinearNf4JointQkvWithLinearFluxkSm90:
      return "linear nf4 + jointQkv and a linear of the same x in one launch: fluxk sm90 (wgmma, fused epilogues)";
    case Route::SdpaFluxkSm90: return "sdpa: fluxk sm90 (wgmma)";
    case Route::SdpaFluxkSm80: return "sdpa: fluxk sm80 (mma.sync)";
    case Route::SdpaPortable: return "sdpa: portable";
    case Route::SdpaFluxkBias64: return "sdpa: fluxk head_dim 64 + bias/mask (mma.sync)";
    case Route::SdpaFluxkWide: return "sdpa: fluxk wide head (GEMM + softmax)";
    case Route::Conv2dFluxkSm80: return "conv2d: fluxk implicit GEMM (mma.sync)";
    case Route::Conv2dPortable: return "conv2d: portable";
    case Route::kCount: break;
  }
  return "?";
}

// sm_90 devices run the wgmma kernels when they were compiled in (FLUXLAB_CUDA_ARCHS containing 90a).
bool use_sm90() {
  if (!FLUXLAB_HAVE_SM90) return false;
  static std::mutex m;
  static std::vector<int> known;  // per device: -1 unknown, 0 no, 1 yes
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(m);
  if (known.size() <= size_t(dev)) known.resize(size_t(dev) + 1, -1);
  if (known[size_t(dev)] < 0) {
    int major = 0, minor = 0;
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
    check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute");
    known[size_t(dev)] = major == 9 && minor == 0;
  }
  return known[size_t(dev)] == 1;
}

// fluxk's answer: enqueued (true), declined (false: cudaErrorInvalidValue / cudaErrorNotSupported, which the
// launchers return before enqueuing anything), or a real failure (thrown).
bool accepted(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  if (e == cudaErrorInvalidValue || e == cudaErrorNotSupported) {
    cudaGetLastError();
    return false;
  }
  throw_cuda(e, what);
}

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

// fluxk checks its matrices' alignment itself but reads bias, gate and residual as aligned bf16 pairs (16-byte
// rows for the NF4 kernels): a view at an odd offset takes the portable path.
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

bool epilogue_args(const LinearEpilogue& e, const void* bias, int64_t M, fluxk::EpilogueArgs* out) {
  using fluxk::Epilogue;
  if ((bias && !aligned16(bias)) || (e.gate && !aligned16(e.gate)) || (e.residual && !aligned16(e.residual))) {
    return false;
  }
  const bool gated = e.gate || e.residual;
  // fluxk's gate/residual epilogue takes both terms; the op layer supplies a broadcast 1 or 0 for a missing one
  if (gated && !(e.gate && e.residual)) return false;
  if (gated && e.gelu_tanh) return false;  // no fluxk epilogue applies both
  if (gated && (!fits_int(e.gate_rows_per_batch) || e.gate_rows_per_batch < 1 || e.gate_rows_per_batch > M)) {
    return false;
  }
  out->kind = gated ? Epilogue::kGateResidual : e.gelu_tanh ? Epilogue::kGeluTanh : Epilogue::kNone;
  out->residual = static_cast<const __nv_bfloat16*>(e.residual);
  out->ldr = e.residual_ld;
  out->gate = static_cast<const __nv_bfloat16*>(e.gate);
  out->ldg = e.gate_ld;
  out->gate_rows_per_batch = gated ? int(e.gate_rows_per_batch) : 1;
  out->bias = static_cast<const __nv_bfloat16*>(bias);
  return true;
}

}  // namespace

void count_route(Route r) { g_routes[int(r)].fetch_add(1, std::memory_order_relaxed); }

namespace {

#if FLUXLAB_HAVE_SM90
// The workspace of the sm90 GEMMs' and attention's split last round (fluxk split_k.cuh, attention.cu), `bytes` as the
// launcher sized it, attached to `a`: a caching-allocator block held by the returned tensor until the caller has
// enqueued the launch (stream-ordered reuse, capturable).
template <class Args>
Tensor attach_split_workspace(Args& a, size_t bytes) {
  a.workspace_bytes = bytes;
  if (!bytes) return Tensor();
  Tensor block = scratch(int64_t(bytes));
  a.workspace = block.data();
  return block;
}
#endif

// The fluxk bf16 GEMM's arguments for out[M,N] = epi(x[M,K]·w[N,K]ᵀ), or nullopt when fluxk declines them.
std::optional<fluxk::GemmArgs> gemm_bf16_args(const void* x, const void* w, const void* bias, void* out, int64_t M,
                                              int64_t N, int64_t K, const LinearEpilogue& epi) {
  if (!fits_int(M) || !fits_int(N) || !fits_int(K)) return std::nullopt;
  fluxk::GemmArgs a;
  a.a = static_cast<const __nv_bfloat16*>(x);
  a.lda = K;
  a.w = static_cast<const __nv_bfloat16*>(w);
  a.ldw = K;
  a.c = static_cast<__nv_bfloat16*>(out);
  a.ldc = N;
  a.m = int(M);
  a.n = int(N);
  a.k = int(K);
  if (!epilogue_args(epi, bias, M, &a.epi)) return std::nullopt;
  if (M > 0 && N > 0 && fluxk::gemm_bf16_check(a) != cudaSuccess) return std::nullopt;
  return a;
}

// The fluxk bf16 GEMM for the device; the route that served it, or nullopt when no kernel took the shape.
std::optional<Route> gemm_bf16(const void* x, const void* w, const void* bias, void* out, int64_t M, int64_t N,
                               int64_t K, const LinearEpilogue& epi, cudaStream_t s) {
  std::optional<fluxk::GemmArgs> args = gemm_bf16_args(x, w, bias, out, M, N, K, epi);
  if (!args) return std::nullopt;
  fluxk::GemmArgs& a = *args;
  if (use_sm90()) {
#if FLUXLAB_HAVE_SM90
    const Tensor workspace = attach_split_workspace(a, fluxk::gemm_bf16_sm90_workspace_bytes(a));
    if (!accepted(fluxk::gemm_bf16_sm90(a, s), "ops.linear (fluxk gemm_bf16_sm90)")) return std::nullopt;
    return Route::LinearFluxkSm90;
#endif
  }
  if (!accepted(fluxk::gemm_bf16_sm80(a, s), "ops.linear (fluxk gemm_bf16_sm80)")) return std::nullopt;
  return Route::LinearFluxkSm80;
}

}  // namespace

bool fluxk_linear(const void* x, DType xdt, const void* w, DType wdt, const void* bias, void* out, int64_t M,
                  int64_t N, int64_t K, const LinearEpilogue& epi, cudaStream_t s) {
  if (xdt != DType::BF16 || wdt != DType::BF16) return false;
  // M <= 16 (the modulation linears, M = 1 per image): the skinny kernel streams the weight once from every SM,
  // where the GEMMs' 128-row tiles would leave most SMs idle and most of each tile unused.
  if (M <= 16) {
    const std::optional<fluxk::GemmArgs> args = gemm_bf16_args(x, w, bias, out, M, N, K, epi);
    if (args && accepted(fluxk::gemv_bf16(*args, s), "ops.linear (fluxk gemv_bf16)")) {
      count_route(Route::LinearFluxkGemv);
      return true;
    }
  }
  const std::optional<Route> served = gemm_bf16(x, w, bias, out, M, N, K, epi, s);
  if (!served) return false;
  count_route(*served);
  return true;
}

namespace {

// The two-part GEMM's arguments (gemm_bf16_args for x1 with the second part added), or nullopt.
std::optional<fluxk::GemmArgs> two_part_args(const void* x1, int64_t k1, const void* x2, const void* w, const void* bias,
                                             void* out, int64_t M, int64_t N, int64_t K, const LinearEpilogue& epi) {
  if (!use_sm90() || k1 <= 0 || k1 >= K) return std::nullopt;
  std::optional<fluxk::GemmArgs> a = gemm_bf16_args(x1, w, bias, out, M, N, K, epi);
  if (!a) return std::nullopt;
  a->lda = k1;
  a->a2 = static_cast<const __nv_bfloat16*>(x2);
  a->lda2 = K - k1;
  a->k_split = int(k1);
  if (fluxk::gemm_bf16_check(*a) != cudaSuccess || M < 512) return std::nullopt;  // ping-pong from 512 rows
  return a;
}

}  // namespace

bool fluxk_linear_two_part_applies(const void* x1, int64_t k1, const void* x2, DType xdt, const void* bias, void* out,
                                   int64_t M, int64_t N, int64_t K, const LinearEpilogue& epi) {
  // the weight (or the NF4 weight's workspace, a 256-byte aligned caching-allocator block) stands in as x1
  return xdt == DType::BF16 && two_part_args(x1, k1, x2, x1, bias, out, M, N, K, epi).has_value();
}

bool fluxk_linear_two_part(const void* x1, int64_t k1, const void* x2, DType xdt, const void* w, const void* bias,
                           void* out, int64_t M, int64_t N, int64_t K, const LinearEpilogue& epi, Route served_as,
                           cudaStream_t s) {
  if (xdt != DType::BF16) return false;
  const std::optional<fluxk::GemmArgs> a = two_part_args(x1, k1, x2, w, bias, out, M, N, K, epi);
  if (!a) return false;
#if FLUXLAB_HAVE_SM90
  fluxk::GemmArgs args = *a;
  const Tensor workspace = attach_split_workspace(args, fluxk::gemm_bf16_sm90_workspace_bytes(args));
  if (!accepted(fluxk::gemm_bf16_sm90(args, s), "ops.linear (fluxk gemm_bf16_sm90, two-part x)")) return false;
  count_route(served_as);
  return true;
#else
  (void)s, (void)served_as;
  return false;
#endif
}

bool fluxk_linear_nf4_dequantized_applies(const void* x, DType xdt, const NF4View& w, const void* bias, void* out,
                                          int64_t M, const LinearEpilogue& epi) {
  if (xdt != DType::BF16 || !(epi.gelu_tanh || epi.gate || epi.residual) || M < kNf4DequantizeMinRows) return false;
  if ((w.rows * w.cols) % 32 != 0 || w.blocksize % 32 != 0) return false;
  // The bf16 GEMM must take it, or the workspace and the dequantization would be spent for nothing; the workspace
  // (a caching-allocator block) is 256-byte aligned, x stands in for it here.
  return gemm_bf16_args(x, x, bias, out, M, w.rows, w.cols, epi).has_value();
}

bool fluxk_linear_nf4_dequantized(const void* x, const NF4View& w, const float* absmax, void* weight_bf16,
                                  const void* bias, void* out, int64_t M, const LinearEpilogue& epi, cudaStream_t s) {
  nf4_dequantize(w, absmax, weight_bf16, DType::BF16, s);
  const std::optional<Route> served = gemm_bf16(x, weight_bf16, bias, out, M, w.rows, w.cols, epi, s);
  if (!served) return false;
  count_route(*served == Route::LinearFluxkSm90 ? Route::LinearNf4DequantizedSm90 : Route::LinearNf4DequantizedSm80);
  return true;
}

int64_t fluxk_linear_f32_workspace_elems(int64_t M, int64_t N, int64_t K, const LinearEpilogue& epi) {
  if (epi.gelu_tanh || epi.gate || epi.residual) return 0;
  if (!fits_int(M) || !fits_int(N) || !fits_int(K) || M == 0 || K == 0 || K % 8 || N % 8) return 0;
  if (!fits_int(fluxk::split_f32_ld(K))) return 0;  // the kernels index a split row with int
  const int64_t elems = fluxk::split_f32_workspace_elems(M, K);
  return fits_int(elems / 8) ? elems : 0;
}

bool fluxk_linear_f32(const float* x, const void* w, const float* bias, float* out, int64_t M, int64_t N, int64_t K,
                      const LinearEpilogue& epi, void* workspace, cudaStream_t s) {
  if (!workspace || fluxk_linear_f32_workspace_elems(M, N, K, epi) == 0) return false;
  fluxk::GemmF32Args a;
  a.x = x;
  a.ldx = K;
  a.w = static_cast<const __nv_bfloat16*>(w);
  a.ldw = K;
  a.bias = bias;
  a.c = out;
  a.ldc = N;
  a.m = int(M);
  a.n = int(N);
  a.k = int(K);
  a.workspace = static_cast<__nv_bfloat16*>(workspace);
  if (use_sm90()) {
#if FLUXLAB_HAVE_SM90
    if (!accepted(fluxk::gemm_f32_bf16w_sm90(a, s), "ops.linear (fluxk gemm_f32_bf16w_sm90)")) return false;
    count_route(Route::LinearF32SplitSm90);
    return true;
#endif
  }
  if (!accepted(fluxk::gemm_f32_bf16w_sm80(a, s), "ops.linear (fluxk gemm_f32_bf16w_sm80)")) return false;
  count_route(Route::LinearF32SplitSm80);
  return true;
}

namespace {

// The fluxk NF4 GEMM's arguments for out[M,N] = epi(x[M,K]·dequant(w)ᵀ), or nullopt when its code book or block
// sizes are not bitsandbytes' NF4 ones.
std::optional<fluxk::Nf4GemmArgs> nf4_gemm_args(const void* x, DType xdt, const NF4View& w, const void* bias, void* out,
                                                int64_t M, int64_t N, int64_t K, const LinearEpilogue& epi) {
  if (xdt != DType::BF16 || !w.standard_codes || w.blocksize != 64) return std::nullopt;
  if (w.absmax_codes && w.nested_blocksize != 256) return std::nullopt;
  if (!fits_int(M) || !fits_int(N) || !fits_int(K)) return std::nullopt;
  fluxk::Nf4GemmArgs a;
  a.a = static_cast<const __nv_bfloat16*>(x);
  a.lda = K;
  a.w.packed = w.packed;
  a.w.n = int(N);
  a.w.k = int(K);
  if (w.absmax_codes) {
    a.w.absmax_q = w.absmax_codes;
    a.w.absmax_code = w.nested_map;
    a.w.nested_absmax = w.nested_absmax;
    a.w.nested_offset = w.offset;
  } else {
    a.w.absmax = w.absmax;
  }
  a.c = static_cast<__nv_bfloat16*>(out);
  a.ldc = N;
  a.m = int(M);
  if (!epilogue_args(epi, bias, M, &a.epi)) return std::nullopt;
  return a;
}

#if FLUXLAB_HAVE_SM90
// The two-part NF4 GEMM's arguments (x1 [M, k1], x2 [M, K - k1]), or nullopt where gemm_nf4_sm90 would refuse them.
std::optional<fluxk::Nf4GemmArgs> nf4_two_part_args(const void* x1, int64_t k1, const void* x2, DType xdt,
                                                    const NF4View& w, const void* bias, void* out, int64_t M,
                                                    const LinearEpilogue& epi) {
  if (!use_sm90() || M <= 16 || k1 <= 0 || k1 >= w.cols) return std::nullopt;
  std::optional<fluxk::Nf4GemmArgs> a = nf4_gemm_args(x1, xdt, w, bias, out, M, w.rows, w.cols, epi);
  if (!a) return std::nullopt;
  a->lda = k1;
  a->a2 = static_cast<const __nv_bfloat16*>(x2);
  a->lda2 = w.cols - k1;
  a->k_split = int(k1);
  if (!fluxk::nf4_args_valid(*a)) return std::nullopt;
  return a;
}
#endif

}  // namespace

bool fluxk_linear_nf4_two_part_applies(const void* x1, int64_t k1, const void* x2, DType xdt, const NF4View& w,
                                       const void* bias, void* out, int64_t M, const LinearEpilogue& epi) {
#if FLUXLAB_HAVE_SM90
  return nf4_two_part_args(x1, k1, x2, xdt, w, bias, out, M, epi).has_value();
#else
  (void)x1, (void)k1, (void)x2, (void)xdt, (void)w, (void)bias, (void)out, (void)M, (void)epi;
  return false;
#endif
}

bool fluxk_linear_nf4_two_part(const void* x1, int64_t k1, const void* x2, DType xdt, const NF4View& w,
                               const void* bias, void* out, int64_t M, const LinearEpilogue& epi, cudaStream_t s) {
#if FLUXLAB_HAVE_SM90
  std::optional<fluxk::Nf4GemmArgs> a = nf4_two_part_args(x1, k1, x2, xdt, w, bias, out, M, epi);
  if (!a) return false;
  const Tensor workspace = attach_split_workspace(*a, fluxk::gemm_nf4_sm90_workspace_bytes(*a));
  if (!accepted(fluxk::gemm_nf4_sm90(*a, s), "ops.linear (fluxk gemm_nf4_sm90, two-part x)")) return false;
  count_route(Route::LinearNf4TwoPartFluxkSm90);
  return true;
#else
  (void)x1, (void)k1, (void)x2, (void)xdt, (void)w, (void)bias, (void)out, (void)M, (void)epi, (void)s;
  return false;
#endif
}

bool fluxk_linear_nf4(const void* x, DType xdt, const NF4View& w, const void* bias, void* out, int64_t M, int64_t N,
                      int64_t K, const LinearEpilogue& epi, cudaStream_t s) {
  std::optional<fluxk::Nf4GemmArgs> args = nf4_gemm_args(x, xdt, w, bias, out, M, N, K, epi);
  if (!args) return false;
  fluxk::Nf4GemmArgs& a = *args;
  if (M <= 16) {
    if (!accepted(fluxk::gemv_nf4(a, s), "ops.linear (fluxk gemv_nf4)")) return false;
    count_route(Route::LinearNf4FluxkGemv);
    return true;
  }
  if (use_sm90()) {
#if FLUXLAB_HAVE_SM90
    const Tensor workspace = attach_split_workspace(a, fluxk::gemm_nf4_sm90_workspace_bytes(a));
    if (!accepted(fluxk::gemm_nf4_sm90(a, s), "ops.linear (fluxk gemm_nf4_sm90)")) return false;
    count_route(Route::LinearNf4FluxkSm90);
    return true;
#endif
  }
  if (!accepted(fluxk::gemm_nf4_sm80(a, s), "ops.linear (fluxk gemm_nf4_sm80)")) return false;
  count_route(Route::LinearNf4FluxkSm80);
  return true;
}

bool fluxk_linear_nf4_concat(const void* x, DType xdt, const std::vector<Nf4ConcatPart>& parts, void* out, int64_t M,
                             int64_t ldc, cudaStream_t s) {
  if (M < 1 || M > 16 || parts.empty() || !fits_int(ldc)) return false;
  std::vector<fluxk::Nf4GemvPart> kernel_parts;
  for (const Nf4ConcatPart& part : parts) {
    std::optional<fluxk::Nf4GemmArgs> a =
        nf4_gemm_args(x, xdt, part.w, part.bias, static_cast<__nv_bfloat16*>(out) + part.col, M, part.w.rows,
                      part.w.cols, LinearEpilogue{});
    if (!a || part.w.cols != parts[0].w.cols || part.col < 0 || part.col + part.w.rows > ldc) return false;
    a->ldc = ldc;
    if (!fluxk::nf4_args_valid(*a)) return false;
    fluxk::Nf4GemvPart k;
    k.w = a->w;
    k.bias = a->epi.bias;
    k.col = part.col;
    kernel_parts.push_back(k);
  }
  fluxk::Nf4GemvConcatArgs a;
  a.a = static_cast<const __nv_bfloat16*>(x);
  a.lda = parts[0].w.cols;
  a.m = int(M);
  a.c = static_cast<__nv_bfloat16*>(out);
  a.ldc = ldc;
  for (size_t first = 0; first < kernel_parts.size(); first += fluxk::kNf4GemvConcatMaxParts) {
    a.parts = int(std::min<size_t>(fluxk::kNf4GemvConcatMaxParts, kernel_parts.size() - first));
    for (int p = 0; p < a.parts; ++p) a.part[p] = kernel_parts[first + p];
    const cudaError_t e = fluxk::gemv_nf4_concat(a, s);
    const char* what = "ops.linearConcat (fluxk gemv_nf4_concat)";
    // The parts passed the kernel's own checks above; past the first launch a refusal would leave a half-written
    // output, so it throws instead of declining.
    if (first == 0) {
      if (!accepted(e, what)) return false;
    } else if (e != cudaSuccess) {
      throw_cuda(e, what);
    }
  }
  count_route(Route::LinearNf4ConcatFluxkGemv);
  return true;
}

#if FLUXLAB_HAVE_SM90
namespace {

// The kQkNormRope epilogue of one stream (x [M, K] projected by [3·H·D, K] into q, k, v), or nullopt where fluxk
// declines it (dtypes, D != 128, alignment, sizes).
std::optional<fluxk::EpilogueArgs> qk_epilogue(DType xdt, const void* bias, int64_t M, int64_t K,
                                               const JointQkvStream& st, const JointQkvOutputs& out) {
  if (!use_sm90() || xdt != DType::BF16 || out.dtype != DType::BF16 || out.D != 128) return std::nullopt;
  if (st.norm_q_dtype != DType::BF16 || st.norm_k_dtype != DType::BF16 || st.table_dtype != DType::F32) return std::nullopt;
  const int64_t N = 3 * out.H * out.D;
  if (!fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(st.L) || !fits_int(out.Ltot) || !fits_int(out.H)) {
    return std::nullopt;
  }
  fluxk::EpilogueArgs e;
  e.kind = fluxk::Epilogue::kQkNormRope;
  e.bias = static_cast<const __nv_bfloat16*>(bias);
  e.q = static_cast<__nv_bfloat16*>(out.q);
  e.k = static_cast<__nv_bfloat16*>(out.k);
  e.v = static_cast<__nv_bfloat16*>(out.v);
  e.norm_q = static_cast<const __nv_bfloat16*>(st.norm_q);
  e.norm_k = static_cast<const __nv_bfloat16*>(st.norm_k);
  e.rope_cos = static_cast<const float*>(st.cos);
  e.rope_sin = static_cast<const float*>(st.sin);
  e.heads = int(out.H);
  e.tokens = int(st.L);
  e.joint_tokens = int(out.Ltot);
  e.joint_offset = int(st.offset);
  e.eps = out.eps;
  if (!fluxk::qk_norm_rope_args_valid(e, int(M), int(N))) return std::nullopt;
  return e;
}

// The fused NF4 GEMM's arguments for one stream of joint_qkv (more than 16 rows: the skinny kernel has no such
// epilogue), or nullopt.
std::optional<fluxk::Nf4GemmArgs> nf4_qkv_args(const void* x, DType xdt, const NF4View& nf4, const void* bias,
                                               int64_t M, int64_t K, const JointQkvStream& st,
                                               const JointQkvOutputs& out) {
  const std::optional<fluxk::EpilogueArgs> e = qk_epilogue(xdt, bias, M, K, st, out);
  if (!e || M <= 16) return std::nullopt;
  // The epilogue writes q, k and v itself: no C.
  std::optional<fluxk::Nf4GemmArgs> a = nf4_gemm_args(x, xdt, nf4, bias, nullptr, M, 3 * out.H * out.D, K, {});
  if (a) a->epi = *e;
  return a;
}

}  // namespace
#endif

bool fluxk_linear_joint_qkv(const void* x, DType xdt, const void* w, DType wdt, const NF4View* nf4, const void* bias,
                            int64_t M, int64_t K, const JointQkvStream& st, const JointQkvOutputs& out,
                            cudaStream_t s) {
#if FLUXLAB_HAVE_SM90
  if (nf4) {
    std::optional<fluxk::Nf4GemmArgs> a = nf4_qkv_args(x, xdt, *nf4, bias, M, K, st, out);
    if (!a) return false;
    const Tensor workspace = attach_split_workspace(*a, fluxk::gemm_nf4_sm90_workspace_bytes(*a));
    if (!accepted(fluxk::gemm_nf4_sm90(*a, s), "ops.jointQkv (fluxk gemm_nf4_sm90)")) return false;
    count_route(Route::LinearNf4JointQkvFluxkSm90);
    return true;
  }
  const std::optional<fluxk::EpilogueArgs> e = qk_epilogue(xdt, bias, M, K, st, out);
  if (!e || wdt != DType::BF16) return false;
  fluxk::GemmArgs a;
  a.a = static_cast<const __nv_bfloat16*>(x);
  a.lda = K;
  a.w = static_cast<const __nv_bfloat16*>(w);
  a.ldw = K;
  a.m = int(M);
  a.n = int(3 * out.H * out.D);
  a.k = int(K);
  a.epi = *e;
  if (fluxk::gemm_bf16_check(a) != cudaSuccess) return false;
  const Tensor workspace = attach_split_workspace(a, fluxk::gemm_bf16_sm90_workspace_bytes(a));
  if (!accepted(fluxk::gemm_bf16_sm90(a, s), "ops.jointQkv (fluxk gemm_bf16_sm90)")) return false;
  count_route(Route::LinearJointQkvFluxkSm90);
  return true;
#else
  (void)x, (void)xdt, (void)w, (void)wdt, (void)nf4, (void)bias, (void)M, (void)K, (void)st, (void)out, (void)s;
  return false;
#endif
}

#if FLUXLAB_HAVE_SM90
namespace {

// An NF4 linear's arguments where it would run the fused sm90 NF4 GEMM alone (more than 16 rows, not dequantized
// first), else nullopt.
std::optional<fluxk::Nf4GemmArgs> fused_linear_args(const Nf4LinearItem& l) {
  if (l.M <= 16 || fluxk_linear_nf4_dequantized_applies(l.x, l.xdt, l.w, l.bias, l.out, l.M, l.epi)) return std::nullopt;
  return nf4_gemm_args(l.x, l.xdt, l.w, l.bias, l.out, l.M, l.w.rows, l.w.cols, l.epi);
}

// gemm_nf4_sm90_pair of a and b (both given) with the split workspace, counted as `route`.
bool launch_pair(std::optional<fluxk::Nf4GemmArgs> a, const std::optional<fluxk::Nf4GemmArgs>& b, Route route,
                 const char* what, cudaStream_t s) {
  if (!use_sm90() || !a || !b) return false;
  const Tensor workspace = attach_split_workspace(*a, fluxk::gemm_nf4_sm90_pair_workspace_bytes(*a, *b));
  if (!accepted(fluxk::gemm_nf4_sm90_pair(*a, *b, s), what)) return false;
  count_route(route);
  return true;
}

}  // namespace
#endif

bool fluxk_linear_joint_qkv_nf4_pair(const JointQkvProjection& first, const JointQkvProjection& second,
                                     const JointQkvOutputs& out, cudaStream_t s) {
#if FLUXLAB_HAVE_SM90
  return launch_pair(nf4_qkv_args(first.x, first.xdt, first.w, first.bias, first.M, first.K, first.stream, out),
                     nf4_qkv_args(second.x, second.xdt, second.w, second.bias, second.M, second.K, second.stream, out),
                     Route::LinearNf4JointQkvPairFluxkSm90, "ops.jointQkv (fluxk gemm_nf4_sm90_pair)", s);
#else
  (void)first, (void)second, (void)out, (void)s;
  return false;
#endif
}

bool fluxk_joint_qkv_nf4_with_linear(const JointQkvProjection& qkv, const Nf4LinearItem& linear,
                                     const JointQkvOutputs& out, cudaStream_t s) {
#if FLUXLAB_HAVE_SM90
  if (linear.x != qkv.x || linear.M != qkv.M || !linear.epi.gelu_tanh || linear.epi.gate || linear.epi.residual) {
    return false;
  }
  return launch_pair(nf4_qkv_args(qkv.x, qkv.xdt, qkv.w, qkv.bias, qkv.M, qkv.K, qkv.stream, out),
                     fused_linear_args(linear), Route::LinearNf4JointQkvWithLinearFluxkSm90,
                     "ops.jointQkv (fluxk gemm_nf4_sm90_pair with a linear)", s);
#else
  (void)qkv, (void)linear, (void)out, (void)s;
  return false;
#endif
}

bool fluxk_linear_nf4_pair(const Nf4LinearItem& first, const Nf4LinearItem& second, cudaStream_t s) {
#if FLUXLAB_HAVE_SM90
  return launch_pair(fused_linear_args(first), fused_linear_args(second), Route::LinearNf4PairFluxkSm90,
                     "ops.linearGroup (fluxk gemm_nf4_sm90_pair)", s);
#else
  (void)first, (void)second, (void)s;
  return false;
#endif
}

bool fluxk_sdpa(const void* q, const void* k, const void* v, void* out, DType dt, const AttnShape& sh, bool has_bias,
                bool has_mask, float scale, cudaStream_t s) {
  if (dt != DType::BF16 || sh.D != 128 || has_bias || has_mask || scale == 0.f) return false;
  if (!fits_int(sh.B) || !fits_int(sh.H) || !fits_int(sh.Lq) || !fits_int(sh.Lk) || sh.Lk == 0) return false;
  fluxk::AttentionArgs a;
  a.q = static_cast<const __nv_bfloat16*>(q);
  a.k = static_cast<const __nv_bfloat16*>(k);
  a.v = static_cast<const __nv_bfloat16*>(v);
  a.o = static_cast<__nv_bfloat16*>(out);
  a.batch = int(sh.B);
  a.heads = int(sh.H);
  a.seq_q = int(sh.Lq);
  a.seq_kv = int(sh.Lk);
  a.head_dim = 128;
  for (int i = 0; i < 3; i++) {
    a.q_stride[i] = sh.layout.q[i];
    a.k_stride[i] = sh.layout.k[i];
    a.v_stride[i] = sh.layout.v[i];
    a.o_stride[i] = sh.layout.o[i];
  }
  a.scale = scale;
  if (use_sm90()) {
#if FLUXLAB_HAVE_SM90
    const Tensor workspace = attach_split_workspace(a, fluxk::attention_fwd_sm90_workspace_bytes(a));
    if (!accepted(fluxk::attention_fwd_sm90(a, s), "ops.sdpa (fluxk attention_fwd_sm90)")) return false;
    count_route(Route::SdpaFluxkSm90);
    return true;
#endif
  }
  if (!accepted(fluxk::attention_fwd_sm80(a, s), "ops.sdpa (fluxk attention_fwd_sm80)")) return false;
  count_route(Route::SdpaFluxkSm80);
  return true;
}

}  // namespace fl::cuda

namespace fl::gpu {

std::map<std::string, int64_t> route_counts() {
  std::map<std::string, int64_t> out;
  for (int i = 0; i < int(cuda::Route::kCount); i++) {
    out[cuda::route_name(cuda::Route(i))] = cuda::g_routes[i].load(std::memory_order_relaxed);
  }
  return out;
}

void reset_route_counts() {
  for (auto& r : cuda::g_routes) r.store(0, std::memory_order_relaxed);
}

}  // namespace fl::gpu
