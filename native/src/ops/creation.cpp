// Tensor construction and copies between devices and dtypes.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "../core/alloc.h"
#include "../cpu/kernels.h"
#include "common.h"

namespace fl::ops {

namespace {

class File {
 public:
  File(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail(cat("Tensor.fromFile: cannot open ", path, ": ", std::strerror(errno)), kErrIo);
  }
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  uint64_t size() const {
    struct stat st;
    if (::fstat(fd_, &st) != 0) fail(cat("Tensor.fromFile: cannot stat ", path_, ": ", std::strerror(errno)), kErrIo);
    return uint64_t(st.st_size);
  }
  void read(void* dst, size_t bytes, uint64_t offset) const {
    char* p = static_cast<char*>(dst);
    while (bytes > 0) {
      ssize_t got = ::pread(fd_, p, bytes, off_t(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        fail(cat("Tensor.fromFile: reading ", path_, " at byte ", offset, ": ",
                 got < 0 ? std::strerror(errno) : "unexpected end of file"),
             kErrIo);
      }
      p += got;
      bytes -= size_t(got);
      offset += uint64_t(got);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
};

#if FLUXLAB_WITH_CUDA
// Two pinned buffers so that reading the next chunk from disk overlaps the copy of the previous one.
struct Staging {
  static constexpr size_t kBytes = size_t(16) << 20;
  std::mutex mutex;
  void* buf[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  int device[2] = {-1, -1};
  bool pinned[2] = {false, false};
  int tag = 0;

  void ensure() {
    if (buf[0]) return;
    std::string prev = mem::set_tag("fluxlab.staging");
    tag = mem::current_tag();
    mem::set_tag(prev);
    for (int i = 0; i < 2; i++) buf[i] = mem::host_alloc(kBytes, true, &pinned[i], tag);
  }
  // Waits until the copy that last read buffer i has finished.
  void wait(int i) {
    if (done[i]) cuda::check(cudaEventSynchronize(done[i]), "Tensor.fromFile staging");
  }
  void record(int i, int dev, cudaStream_t s) {
    if (done[i] && device[i] != dev) {
      cudaEventDestroy(done[i]);
      done[i] = nullptr;
    }
    if (!done[i]) cuda::check(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming), "cudaEventCreate");
    device[i] = dev;
    cuda::check(cudaEventRecord(done[i], s), "Tensor.fromFile staging");
  }
};

Staging& staging() {
  static Staging* s = new Staging;  // process lifetime: the driver may be gone at static destruction
  return *s;
}
#endif

}  // namespace

Tensor full(const Shape& shape, DType dtype, Device device, double value) {
  Tensor out = empty(shape, dtype, device);
  if (device.is_cpu()) {
    cpu::fill(out.data(), dtype, out.numel(), value);
  } else {
    FL_CUDA_LAUNCH(device, cat("Tensor.full ", out.desc()), cuda::fill(out.data(), dtype, out.numel(), value, stream));
  }
  return out;
}

Tensor from_host(const void* data, size_t bytes, DType stored, const Shape& shape, DType dtype, Device device) {
  const int64_t n = numel_of(shape);
  FL_CHECK(bytes == size_t(n) * dtype_size(stored), "Tensor.fromBytes: ", bytes, " bytes given, ", shape_str(shape),
           " ", dtype_name(stored), " needs ", size_t(n) * dtype_size(stored));
  Tensor out = empty(shape, dtype, device);
  if (device.is_cpu()) {
    cpu::convert(data, stored, out.data(), dtype, n);
    return out;
  }
  if (stored == dtype) {
    gpu::copy_bytes(out.data(), device, data, Device::cpu(), bytes, false);
  } else {
    std::vector<char> tmp(out.nbytes());
    cpu::convert(data, stored, tmp.data(), dtype, n);
    gpu::copy_bytes(out.data(), device, tmp.data(), Device::cpu(), tmp.size(), false);
  }
  return out;
}

Tensor from_file(const std::string& path, uint64_t offset, const Shape& shape, DType stored, DType dtype,
                 Device device) {
  File file(path);
  const int64_t n = numel_of(shape);
  const uint64_t bytes = uint64_t(n) * dtype_size(stored);
  const uint64_t size = file.size();
  FL_CHECK(offset <= size && bytes <= size - offset, "Tensor.fromFile: ", path, " has ", size, " bytes, the tensor ",
           shape_str(shape), " ", dtype_name(stored), " needs bytes [", offset, ", ", offset + bytes, ")");
  Tensor out = empty(shape, dtype, device);
  const size_t in_es = dtype_size(stored), out_es = dtype_size(dtype);
  if (device.is_cpu()) {
    if (stored == dtype) {
      file.read(out.data(), size_t(bytes), offset);
      return out;
    }
    const int64_t chunk = int64_t((size_t(16) << 20) / in_es);
    std::vector<char> tmp(size_t(std::min(n, chunk)) * in_es);
    for (int64_t i = 0; i < n; i += chunk) {
      int64_t m = std::min(chunk, n - i);
      file.read(tmp.data(), size_t(m) * in_es, offset + uint64_t(i) * in_es);
      cpu::convert(tmp.data(), stored, static_cast<char*>(out.data()) + size_t(i) * out_es, dtype, m);
    }
    return out;
  }
#if FLUXLAB_WITH_CUDA
  gpu::check_not_capturing(device.index, "Tensor.fromFile");
  Staging& st = staging();
  std::lock_guard<std::mutex> lock(st.mutex);
  st.ensure();
  cuda::DeviceGuard guard(device.index);
  cudaStream_t stream = cuda::stream(device.index);
  const int64_t chunk = int64_t(Staging::kBytes / std::max(in_es, out_es));
  std::vector<char> raw(stored == dtype ? 0 : size_t(std::min(n, chunk)) * in_es);
  int which = 0;
  for (int64_t i = 0; i < n; i += chunk, which ^= 1) {
    int64_t m = std::min(chunk, n - i);
    st.wait(which);
    if (stored == dtype) {
      file.read(st.buf[which], size_t(m) * in_es, offset + uint64_t(i) * in_es);
    } else {
      file.read(raw.data(), size_t(m) * in_es, offset + uint64_t(i) * in_es);
      cpu::convert(raw.data(), stored, st.buf[which], dtype, m);
    }
    cuda::check(cudaMemcpyAsync(static_cast<char*>(out.data()) + size_t(i) * out_es, st.buf[which], size_t(m) * out_es,
                                cudaMemcpyHostToDevice, stream),
                cat("Tensor.fromFile: copying ", path, " to ", device.str()));
    st.record(which, device.index, stream);
  }
  if (!st.pinned[0] || !st.pinned[1]) cuda::check(cudaStreamSynchronize(stream), "Tensor.fromFile");
#endif
  return out;
}

Tensor to(const Tensor& t, Device device, DType dtype, bool non_blocking, bool pinned) {
  const int64_t n = t.numel();
  const std::string what = cat("to(", device.str(), ", ", dtype_name(dtype), ") of ", t.desc());
  Tensor out = empty(t.shape, dtype, device, pinned && device.is_cpu());
  if (t.device().is_cpu() && device.is_cpu()) {
    cpu::convert(t.data(), t.dtype, out.data(), dtype, n);
    return out;
  }
  if (t.device() == device) {
    if (t.dtype == dtype) {
      gpu::copy_bytes(out.data(), device, t.data(), device, out.nbytes(), true);
    } else {
      FL_CUDA_LAUNCH(device, what, cuda::convert(t.data(), t.dtype, out.data(), dtype, n, stream));
    }
    return out;
  }
  if (t.device().is_cpu()) {  // host -> device: convert on the host, copy the target dtype
    if (t.dtype == dtype) {
      gpu::copy_bytes(out.data(), device, t.data(), Device::cpu(), out.nbytes(), non_blocking && t.storage->pinned);
    } else {
      std::vector<char> tmp(out.nbytes());
      cpu::convert(t.data(), t.dtype, tmp.data(), dtype, n);
      gpu::copy_bytes(out.data(), device, tmp.data(), Device::cpu(), tmp.size(), false);
    }
    return out;
  }
  // source on a device: convert there, then move
  Tensor src = t;
  if (t.dtype != dtype) {
    src = empty(t.shape, dtype, t.device());
    FL_CUDA_LAUNCH(t.device(), what, cuda::convert(t.data(), t.dtype, src.data(), dtype, n, stream));
  }
  bool async = non_blocking && (device.is_cuda() || out.storage->pinned);
  gpu::copy_bytes(out.data(), device, src.data(), src.device(), out.nbytes(), async);
  return out;
}

void copy_into(const Tensor& dst, const Tensor& src, bool non_blocking) {
  FL_CHECK(dst.shape == src.shape, "copyFrom: shapes differ (destination ", dst.desc(), ", source ", src.desc(), ")");
  const int64_t n = src.numel();
  if (n == 0) return;
  if (dst.device().is_cpu() && src.device().is_cpu()) {
    cpu::convert(src.data(), src.dtype, dst.data(), dst.dtype, n);
    return;
  }
  if (dst.device() == src.device() && dst.dtype != src.dtype) {
    FL_CUDA_LAUNCH(dst.device(), cat("copyFrom ", src.desc(), " into ", dst.desc()),
                   cuda::convert(src.data(), src.dtype, dst.data(), dst.dtype, n, stream));
    return;
  }
  Tensor s = src;
  if (src.dtype != dst.dtype) s = to(src, src.device(), dst.dtype, false, false);
  bool async = non_blocking && (dst.device().is_cuda() ? (s.device().is_cuda() || s.storage->pinned) : dst.storage->pinned);
  gpu::copy_bytes(dst.data(), dst.device(), s.data(), s.device(), dst.nbytes(), async);
}

void read_bytes(const Tensor& t, void* dst) {
  if (t.device().is_cpu()) {
    std::memcpy(dst, t.data(), t.nbytes());
  } else {
    gpu::copy_bytes(dst, Device::cpu(), t.data(), t.device(), t.nbytes(), false);
  }
}

}  // namespace fl::ops
