#include "common.h"

#include "../cpu/kernels.h"

namespace fl::ops {

std::string describe(std::initializer_list<std::pair<const char*, const Tensor*>> named) {
  std::string s;
  for (const auto& [name, t] : named) {
    if (!t) continue;
    if (!s.empty()) s += ", ";
    s += cat(name, " ", t->desc());
  }
  return s;
}

void check_float(const char* op, const char* name, const Tensor& t) {
  FL_CHECK(is_float(t.dtype), "ops.", op, ": ", name, " ", t.desc(), " must be float32, bfloat16 or float16");
}

void check_same_device(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> named) {
  const Tensor* first = nullptr;
  for (const auto& [name, t] : named) {
    if (!t) continue;
    if (!first) {
      first = t;
      continue;
    }
    FL_CHECK(t->device() == first->device(), "ops.", op, ": inputs on different devices (", describe(named), ")");
  }
}

int64_t norm_dim(const char* op, int64_t dim, int64_t ndim) {
  int64_t d = dim < 0 ? dim + ndim : dim;
  FL_CHECK(d >= 0 && d < ndim, "ops.", op, ": dim ", dim, " out of range for ", ndim, " dims");
  return d;
}

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  size_t nd = std::max(a.size(), b.size());
  Shape out(nd, 1);
  for (size_t i = 0; i < nd; i++) {
    int64_t da = i < nd - a.size() ? 1 : a[i - (nd - a.size())];
    int64_t db = i < nd - b.size() ? 1 : b[i - (nd - b.size())];
    FL_CHECK(da == db || da == 1 || db == 1, "ops.", op, ": shapes ", shape_str(a), " and ", shape_str(b),
             " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

bool broadcasts_to(const Shape& s, const Shape& target) {
  if (s.size() > target.size()) return false;
  size_t off = target.size() - s.size();
  for (size_t d = 0; d < s.size(); d++) {
    if (s[d] != 1 && s[d] != target[d + off]) return false;
  }
  return true;
}

std::vector<int64_t> broadcast_strides(const Shape& t, const Shape& out) {
  std::vector<int64_t> s(out.size(), 0);
  auto cs = contiguous_strides(t);
  size_t off = out.size() - t.size();
  for (size_t d = 0; d < t.size(); d++) s[d + off] = t[d] == 1 ? 0 : cs[d];
  return s;
}

Tensor as_dtype(const Tensor& t, DType d) {
  if (t.dtype == d) return t;
  return to(t, t.device(), d, false, false);
}

NF4View NF4::view() const {
  NF4View v;
  v.packed = packed.ptr<uint8_t>();
  v.quant_map = quant_map.ptr<float>();
  v.absmax = absmax.defined() ? absmax.ptr<float>() : nullptr;
  v.absmax_codes = absmax_codes.defined() ? absmax_codes.ptr<uint8_t>() : nullptr;
  v.nested_absmax = nested_absmax.defined() ? nested_absmax.ptr<float>() : nullptr;
  v.nested_map = nested_map.defined() ? nested_map.ptr<float>() : nullptr;
  v.rows = rows;
  v.cols = cols;
  v.blocksize = blocksize;
  v.nested_blocksize = nested_blocksize;
  v.offset = offset;
  v.standard_codes = standard_codes;
  return v;
}

void NF4::check(const char* op) const {
  const int64_t n = rows * cols;
  FL_CHECK(rows > 0 && cols > 0 && blocksize > 0 && blocksize % 2 == 0, "ops.", op, ": invalid nf4 weight [", rows,
           ",", cols, "] blocksize ", blocksize);
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  auto expect = [&](const Tensor& t, int64_t count, DType dt, const char* name) {
    FL_CHECK(t.defined() && t.numel() == count && t.dtype == dt, "ops.", op, ": nf4 ", name, " must hold ", count, " ",
             dtype_name(dt), " values, got ", t.defined() ? t.desc() : "nothing");
    FL_CHECK(t.device() == packed.device(), "ops.", op, ": nf4 parts on different devices (", name, " on ",
             t.device().str(), ", packed on ", packed.device().str(), ")");
  };
  expect(packed, (n + 1) / 2, DType::U8, "packed");
  expect(quant_map, 16, DType::F32, "quant_map");
  if (double_quant()) {
    FL_CHECK(nested_blocksize > 0, "ops.", op, ": invalid nested blocksize ", nested_blocksize);
    expect(absmax_codes, blocks, DType::U8, "absmax (double-quant codes)");
    expect(nested_absmax, (blocks + nested_blocksize - 1) / nested_blocksize, DType::F32, "nested_absmax");
    expect(nested_map, 256, DType::F32, "nested_quant_map");
  } else {
    expect(absmax, blocks, DType::F32, "absmax");
  }
}

}  // namespace fl::ops
