#include "tensor.h"

#include "alloc.h"

namespace fl {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

bool dtype_from_name(const std::string& name, DType* out) {
  static const std::pair<const char*, DType> names[] = {
      {"float32", DType::F32}, {"bfloat16", DType::BF16}, {"float16", DType::F16},
      {"uint8", DType::U8},    {"int32", DType::I32},     {"int64", DType::I64},
  };
  for (const auto& [n, d] : names) {
    if (name == n) {
      *out = d;
      return true;
    }
  }
  return false;
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(mem::current_cuda_device());
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    int index = 0;
    for (size_t i = 5; i < s.size(); i++) {
      FL_CHECK(s[i] >= '0' && s[i] <= '9', "unknown device '", s, "'");
      index = index * 10 + (s[i] - '0');
    }
    return Device::cuda(index);
  }
  fail(cat("unknown device '", s, "': use 'cpu', 'cuda' or 'cuda:N'"));
}

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

std::string Tensor::desc() const {
  return cat(shape_str(shape), " ", dtype_name(dtype), " ", storage ? storage->device.str() : "?");
}

Storage::~Storage() { mem::release(*this); }

StoragePtr allocate_storage(Device device, size_t bytes, bool pinned) {
  auto s = std::make_shared<Storage>();
  s->device = device;
  s->bytes = bytes;
  mem::acquire(*s, pinned);
  return s;
}

Tensor empty(const Shape& shape, DType dtype, Device device, bool pinned) {
  for (int64_t d : shape) FL_CHECK(d >= 0, "invalid shape ", shape_str(shape));
  Tensor t;
  t.shape = shape;
  t.dtype = dtype;
  t.storage = allocate_storage(device, size_t(numel_of(shape)) * dtype_size(dtype), pinned);
  return t;
}

Tensor view(const Tensor& t, const Shape& shape) {
  FL_CHECK(numel_of(shape) == t.numel(), "view: cannot view ", t.desc(), " as ", shape_str(shape));
  Tensor v = t;
  v.shape = shape;
  return v;
}

}  // namespace fl
