#include "../cpu/kernels.h"
#include "common.h"

namespace fl::ops {

namespace {

// dst (strides ds) <- src (strides ss) over `shape`, on the tensors' device.
void copy_strided(const Device& dev, void* dst, const std::vector<int64_t>& ds, const void* src,
                  const std::vector<int64_t>& ss, const Shape& shape, DType dt, const std::string& what) {
  if (numel_of(shape) == 0) return;
  if (dev.is_cpu()) {
    cpu::strided_copy(dst, ds, src, ss, shape, dt);
    return;
  }
#if FLUXLAB_WITH_CUDA
  FL_CHECK(shape.size() <= size_t(cuda::kMaxDims), what, ": more than ", cuda::kMaxDims, " dims");
  cuda::Strided it;
  it.nd = int(shape.size());
  for (size_t d = 0; d < shape.size(); d++) {
    it.shape[d] = shape[d];
    it.stride[0][d] = ds[d];
    it.stride[1][d] = ss[d];
  }
#endif
  FL_CUDA_LAUNCH(dev, what, cuda::strided_copy(dst, src, dt, it, stream));
}

}  // namespace

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
  dim = norm_dim("slice", dim, x.ndim());
  const int64_t n = x.shape[size_t(dim)];
  FL_CHECK(0 <= start && start <= end && end <= n, "ops.slice: range [", start, ", ", end, ") out of bounds for dim ",
           dim, " of ", x.desc());
  Shape shape = x.shape;
  shape[size_t(dim)] = end - start;
  auto strides = contiguous_strides(x.shape);
  // A view when every dim before `dim` has size 1: the elements then form one contiguous run.
  bool contiguous = true;
  for (int64_t d = 0; d < dim; d++) contiguous &= x.shape[size_t(d)] == 1;
  if (contiguous || numel_of(shape) == 0) {
    Tensor v = x;
    v.shape = shape;
    v.offset += size_t(start * strides[size_t(dim)]) * dtype_size(x.dtype);
    if (numel_of(shape) == 0) v.offset = x.offset;
    return v;
  }
  Tensor out = empty(shape, x.dtype, x.device());
  const char* src = static_cast<const char*>(x.data()) + size_t(start * strides[size_t(dim)]) * dtype_size(x.dtype);
  copy_strided(x.device(), out.data(), contiguous_strides(shape), src, strides, shape, x.dtype,
               cat("ops.slice: ", x.desc()));
  return out;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  FL_CHECK(int64_t(dims.size()) == x.ndim(), "ops.permute: ", dims.size(), " dims given for ", x.desc());
  std::vector<bool> seen(dims.size(), false);
  Shape shape(dims.size());
  auto xs = contiguous_strides(x.shape);
  std::vector<int64_t> ss(dims.size());
  for (size_t i = 0; i < dims.size(); i++) {
    int64_t d = norm_dim("permute", dims[i], x.ndim());
    FL_CHECK(!seen[size_t(d)], "ops.permute: dims are not a permutation");
    seen[size_t(d)] = true;
    shape[i] = x.shape[size_t(d)];
    ss[i] = xs[size_t(d)];
  }
  Tensor out = empty(shape, x.dtype, x.device());
  copy_strided(x.device(), out.data(), contiguous_strides(shape), x.data(), ss, shape, x.dtype,
               cat("ops.permute: ", x.desc()));
  return out;
}

Tensor concat(const std::vector<Tensor>& ts, int64_t dim) {
  FL_CHECK(!ts.empty(), "ops.concat: needs at least one tensor");
  const Tensor& first = ts[0];
  dim = norm_dim("concat", dim, first.ndim());
  Shape shape = first.shape;
  int64_t total = 0;
  for (size_t i = 0; i < ts.size(); i++) {
    const Tensor& t = ts[i];
    FL_CHECK(t.ndim() == first.ndim() && t.dtype == first.dtype && t.device() == first.device(), "ops.concat: ts[", i,
             "] ", t.desc(), " does not match ts[0] ", first.desc());
    for (int64_t d = 0; d < first.ndim(); d++) {
      FL_CHECK(d == dim || t.shape[size_t(d)] == first.shape[size_t(d)], "ops.concat: ts[", i, "] ", t.desc(),
               " and ts[0] ", first.desc(), " differ outside dim ", dim);
    }
    total += t.shape[size_t(dim)];
  }
  shape[size_t(dim)] = total;
  Tensor out = empty(shape, first.dtype, first.device());
  auto os = contiguous_strides(shape);
  int64_t at = 0;
#if FLUXLAB_WITH_CUDA
  // Each input fills `outer` rows of its own width in the output: one device-to-device copy per input (plain when
  // outer is 1, pitched otherwise) runs at copy bandwidth, where the generic strided-index kernel below took
  // ~190 µs for [1,4096,24,128] (25 MB) on an H200 (fluxlab bench --profile, bench/results/profiles). Pitches
  // beyond cudaMemcpy2D's limit (2^31 bytes) take the kernel.
  int64_t outer = 1;
  for (int64_t d = 0; d < dim; d++) outer *= shape[size_t(d)];
  const size_t esize = dtype_size(first.dtype);
  const size_t out_row = size_t(os[size_t(dim)] * total) * esize;
  if (!first.device().is_cpu() && (outer == 1 || out_row < (size_t(1) << 31))) {
    FL_CUDA_LAUNCH(first.device(), cat("ops.concat: ", ts.size(), " tensors into ", out.desc()), {
      for (const Tensor& t : ts) {
        const size_t row = size_t(t.shape[size_t(dim)] * os[size_t(dim)]) * esize;
        char* dst = static_cast<char*>(out.data()) + size_t(at * os[size_t(dim)]) * esize;
        at += t.shape[size_t(dim)];
        if (row == 0 || outer == 0) continue;
        cuda::check(outer == 1 ? cudaMemcpyAsync(dst, t.data(), row, cudaMemcpyDeviceToDevice, stream)
                               : cudaMemcpy2DAsync(dst, out_row, t.data(), row, row, size_t(outer),
                                                   cudaMemcpyDeviceToDevice, stream),
                    cat("ops.concat: copying ", t.desc(), " into ", out.desc()));
      }
    });
    return out;
  }
#endif
  for (const Tensor& t : ts) {
    char* dst = static_cast<char*>(out.data()) + size_t(at * os[size_t(dim)]) * dtype_size(first.dtype);
    copy_strided(first.device(), dst, os, t.data(), contiguous_strides(t.shape), t.shape, t.dtype,
                 cat("ops.concat: ", t.desc(), " into ", out.desc()));
    at += t.shape[size_t(dim)];
  }
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  FL_CHECK(weight.ndim() == 2, "ops.embedding: weight must be [V,D], got ", weight.desc());
  FL_CHECK(ids.dtype == DType::I32 || ids.dtype == DType::I64, "ops.embedding: ids must be int32 or int64, got ",
           ids.desc());
  check_same_device("embedding", {{"weight", &weight}, {"ids", &ids}});
  Shape shape = ids.shape;
  shape.push_back(weight.shape[1]);
  Tensor out = empty(shape, weight.dtype, weight.device());
  if (out.numel() == 0) return out;
  if (weight.device().is_cpu()) {
    cpu::embedding(weight, ids, out);
  } else {
    FL_CUDA_LAUNCH(weight.device(), cat("ops.embedding: ", describe({{"weight", &weight}, {"ids", &ids}})),
                   cuda::embedding(weight.data(), weight.dtype, weight.shape[0], weight.shape[1], ids.data(), ids.dtype,
                                   ids.numel(), out.data(), stream));
  }
  return out;
}

Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  check_float("rope", "x", x);
  check_float("rope", "cos", cos);
  check_float("rope", "sin", sin);
  check_same_device("rope", {{"x", &x}, {"cos", &cos}, {"sin", &sin}});
  FL_CHECK(x.ndim() >= 2 && x.shape.back() % 2 == 0, "ops.rope: x must be [...,L,D] with even D, got ", x.desc());
  const int64_t L = x.shape[x.shape.size() - 2], D = x.shape.back();
  for (const Tensor* t : {&cos, &sin}) {
    FL_CHECK(t->numel() == L * D && t->shape.back() == D && t->dtype == cos.dtype, "ops.rope: cos/sin must be [L,D] = [",
             L, ",", D, "] of one dtype for x ", x.desc(), ", got ", describe({{"cos", &cos}, {"sin", &sin}}));
  }
  Tensor out = empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::rope(x, cos, sin, out);
  } else {
    FL_CUDA_LAUNCH(x.device(), cat("ops.rope: ", describe({{"x", &x}, {"cos", &cos}})),
                   cuda::rope(x.data(), out.data(), x.dtype, x.numel() / D, L, D, cos.data(), sin.data(), cos.dtype,
                              stream));
  }
  return out;
}

Tensor upsample_nearest2x(const Tensor& x) {
  FL_CHECK(x.ndim() == 4, "ops.upsampleNearest2x: x must be [B,C,H,W], got ", x.desc());
  Tensor out = empty({x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3]}, x.dtype, x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) {
    cpu::upsample_nearest2x(x, out);
  } else {
    FL_CUDA_LAUNCH(x.device(), cat("ops.upsampleNearest2x: ", x.desc()),
                   cuda::upsample_nearest2x(x.data(), out.data(), x.dtype, x.shape[0] * x.shape[1], x.shape[2],
                                            x.shape[3], stream));
  }
  return out;
}

}  // namespace fl::ops
