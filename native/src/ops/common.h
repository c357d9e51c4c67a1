// Shared by the op implementations: boundary checks with clear messages, and the CUDA dispatch that runs a
// launch on the tensor's device and current stream, reporting failures with the op's inputs.
#pragma once
#include <initializer_list>
#include <string>
#include <vector>

#include "../core/gpu.h"
#include "../core/tensor.h"
#include "ops.h"

#if FLUXLAB_WITH_CUDA
#include "../cuda/check.h"
#include "../cuda/launch.h"
#include "../cuda/profiler.h"
#endif

namespace fl::ops {

// "x [2,3] float32 cpu, w [4,3] bfloat16 cpu"
std::string describe(std::initializer_list<std::pair<const char*, const Tensor*>> named);

void check_float(const char* op, const char* name, const Tensor& t);
void check_same_device(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> named);
int64_t norm_dim(const char* op, int64_t dim, int64_t ndim);
// Numpy broadcast of two shapes; throws naming the op when incompatible.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
// True when `s` broadcasts (numpy rules) to exactly `target`.
bool broadcasts_to(const Shape& s, const Shape& target);
// Returns t itself when it already has dtype `d`, else a converted copy on the same device.
Tensor as_dtype(const Tensor& t, DType d);
// Norm parameters are [C] vectors of one float dtype on x's device; returns that dtype (x's when absent).
DType param_dtype(const char* op, const Tensor& x, const Tensor* w, const Tensor* b, int64_t C);
// Right-aligned broadcast strides (elements; 0 where broadcast) of `t` against `out`.
std::vector<int64_t> broadcast_strides(const Shape& t, const Shape& out);

// linear's epilogue tensors in x's dtype and its description for the kernels (linalg.cpp).
struct Epilogue {
  Tensor gate, residual;
  LinearEpilogue e;
};
Epilogue prepare_epilogue(const Tensor& x, const Shape& out_shape, int64_t M, int64_t N, const LinearOptions& o);

// An NF4 linear's checked inputs as linear_nf4 checks them: bias and epilogue tensors in x's dtype, the output
// allocated (for ops that run it inside a shared launch).
struct Nf4Linear {
  int64_t M = 0, N = 0, K = 0;
  Tensor b;
  Epilogue ep;
  Tensor out;
};
Nf4Linear prepare_nf4(const Tensor& x, const NF4& w, const Tensor* bias, const LinearOptions& opts);

}  // namespace fl::ops

#if FLUXLAB_WITH_CUDA
// Runs `body` with `stream` bound to the current stream of `device` (made current), then checks the launch.
#define FL_CUDA_LAUNCH(device, context, ...)                          \
  do {                                                                \
    ::fl::cuda::DeviceGuard fl_guard_((device).index);                \
    cudaStream_t stream = ::fl::cuda::stream((device).index);         \
    ::fl::cuda::OpTimer fl_timer_((device).index, stream,             \
                                  [&] { return std::string(context); }); \
    __VA_ARGS__;                                                      \
    ::fl::cuda::check_launch_ctx([&] { return std::string(context); }); \
  } while (0)
#else
#define FL_CUDA_LAUNCH(device, context, ...) ::fl::gpu::require(std::string(context).c_str())
#endif
