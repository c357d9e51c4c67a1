// Dense tensors: a shared, contiguous storage block plus shape, dtype and a byte offset (views).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtype.h"
#include "error.h"

namespace fl {

using Shape = std::vector<int64_t>;

struct Device {
  enum Kind : uint8_t { CPU, CUDA } kind = CPU;
  int index = 0;
  bool is_cuda() const { return kind == CUDA; }
  bool is_cpu() const { return kind == CPU; }
  bool operator==(const Device& o) const { return kind == o.kind && (kind == CPU || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return kind == CPU ? "cpu" : "cuda:" + std::to_string(index); }
  static Device cpu() { return Device{}; }
  static Device cuda(int i) { return Device{CUDA, i}; }
};

// Parses 'cpu', 'cuda' (current device) or 'cuda:N'.
Device parse_device(const std::string& s);

struct Storage {
  void* ptr = nullptr;
  size_t bytes = 0;
  Device device;
  bool pinned = false;
  int tag = 0;
  uint64_t id = 0;
  void* block = nullptr;  // the device allocator's handle
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

using StoragePtr = std::shared_ptr<Storage>;

// Allocates storage through the host allocator or the device's caching allocator (current stream).
StoragePtr allocate_storage(Device device, size_t bytes, bool pinned = false);

int64_t numel_of(const Shape& shape);

struct Tensor {
  StoragePtr storage;
  size_t offset = 0;  // bytes
  Shape shape;
  DType dtype = DType::F32;

  bool defined() const { return storage != nullptr; }
  Device device() const { return storage->device; }
  bool is_cuda() const { return storage->device.is_cuda(); }
  int64_t numel() const { return numel_of(shape); }
  int64_t ndim() const { return int64_t(shape.size()); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t size(int64_t d) const { return shape[size_t(d < 0 ? d + ndim() : d)]; }
  void* data() const { return static_cast<char*>(storage->ptr) + offset; }
  template <class T>
  T* ptr() const {
    return reinterpret_cast<T*>(data());
  }
  std::string desc() const;  // e.g. "[2,3] float32 cuda:0"
};

Tensor empty(const Shape& shape, DType dtype, Device device, bool pinned = false);
// A view with a new shape (same numel) sharing storage.
Tensor view(const Tensor& t, const Shape& shape);

// Contiguous row-major strides in elements.
std::vector<int64_t> contiguous_strides(const Shape& shape);

}  // namespace fl
