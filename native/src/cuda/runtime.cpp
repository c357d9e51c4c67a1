#include <cuda_runtime_api.h>

#include <mutex>
#include <vector>

#include "../core/gpu.h"
#include "check.h"

#ifndef FLUXLAB_CUDA_ARCHS
#define FLUXLAB_CUDA_ARCHS ""
#endif

namespace fl::cuda {

void throw_cuda(cudaError_t err, const std::string& what) {
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed
  const char* code = err == cudaErrorMemoryAllocation ? kErrOom : kErrCuda;
  throw Error(cat(what, ": CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"), code);
}

DeviceGuard::DeviceGuard(int device) {
  int current = 0;
  check(cudaGetDevice(&current), "cudaGetDevice");
  if (current != device) {
    check(cudaSetDevice(device), "cudaSetDevice");
    previous_ = current;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

namespace {

struct State {
  bool probed = false;
  bool available = false;
  std::string reason;
  int count = 0;
  std::vector<cudaStream_t> current;
};

State& state() {
  static State s;
  if (!s.probed) {
    s.probed = true;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      s.reason = cat("no usable CUDA driver or device (", cudaGetErrorName(err), ": ", cudaGetErrorString(err), ")");
      cudaGetLastError();
    } else if (count == 0) {
      s.reason = "no CUDA device found";
    } else {
      s.available = true;
      s.count = count;
      s.current.assign(size_t(count), nullptr);
    }
  }
  return s;
}

void check_device(int device, const char* what) {
  gpu::require(what);
  FL_CHECK(device >= 0 && device < state().count, what, ": device cuda:", device, " does not exist (",
           state().count, " CUDA devices)");
}

}  // namespace

cudaStream_t stream(int device) { return state().current.at(size_t(device)); }

}  // namespace fl::cuda

namespace fl::gpu {

using cuda::check;
using cuda::state;

bool compiled() { return true; }
bool available() { return state().available; }
std::string unavailable_reason() { return state().available ? "" : state().reason; }

void require(const char* what) {
  if (!available()) fail(cat(what, ": CUDA is unavailable: ", unavailable_reason()), kErrNoCuda);
}

int device_count() { return available() ? state().count : 0; }

int current_device() {
  require("cuda.currentDevice");
  int d = 0;
  check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

void set_device(int device) {
  cuda::check_device(device, "cuda.setDevice");
  check(cudaSetDevice(device), "cudaSetDevice");
}

void synchronize(int device) {
  cuda::check_device(device, "cuda.synchronize");
  check_not_capturing(device, "cuda.synchronize");
  cuda::DeviceGuard guard(device);
  check(cudaDeviceSynchronize(), cat("cuda.synchronize(cuda:", device, ")"));
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

std::string archs() { return FLUXLAB_CUDA_ARCHS; }

DeviceProps device_props(int device) {
  cuda::check_device(device, "cuda.deviceProperties");
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  DeviceProps out;
  out.name = p.name;
  out.major = p.major;
  out.minor = p.minor;
  out.total_memory = int64_t(p.totalGlobalMem);
  out.multi_processor_count = p.multiProcessorCount;
  out.l2_cache_size = p.l2CacheSize;
  out.shared_mem_per_block_optin = int(p.sharedMemPerBlockOptin);
  return out;
}

void* current_stream(int device) {
  cuda::check_device(device, "cuda.currentStream");
  return state().current[size_t(device)];
}

void set_current_stream(int device, void* stream) {
  cuda::check_device(device, "cuda.setCurrentStream");
  state().current[size_t(device)] = static_cast<cudaStream_t>(stream);
}

void* stream_create(int device, int priority) {
  cuda::check_device(device, "new Stream");
  cuda::DeviceGuard guard(device);
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, priority), "cudaStreamCreateWithPriority");
  return s;
}

void stream_destroy(int device, void* stream) noexcept {
  if (!stream || !available()) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device);
  cudaStreamDestroy(static_cast<cudaStream_t>(stream));  // returns at once; resources go when queued work is done
  cudaSetDevice(previous);
  cudaGetLastError();
}

void stream_synchronize(int device, void* stream) {
  check_not_capturing(device, "Stream.synchronize");
  cuda::DeviceGuard guard(device);
  check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "Stream.synchronize");
}

bool stream_query(int device, void* stream) {
  check_not_capturing(device, "Stream.query");
  cuda::DeviceGuard guard(device);
  cudaError_t err = cudaStreamQuery(static_cast<cudaStream_t>(stream));
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  check(err, "Stream.query");
  return true;
}

void stream_wait_event(int device, void* stream, void* event) {
  cuda::DeviceGuard guard(device);
  check(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0), "Stream.waitEvent");
}

void* event_create(int device, bool timing) {
  cuda::check_device(device, "new Event");
  cuda::DeviceGuard guard(device);
  cudaEvent_t e = nullptr;
  check(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming), "cudaEventCreate");
  return e;
}

void event_destroy(int, void* event) noexcept {
  if (event && available()) cudaEventDestroy(static_cast<cudaEvent_t>(event));
  cudaGetLastError();
}

void event_record(int device, void* event, void* stream) {
  cuda::DeviceGuard guard(device);
  check(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)), "Event.record");
}

void event_synchronize(void* event) {
  check_not_capturing(-1, "Event.synchronize");
  check(cudaEventSynchronize(static_cast<cudaEvent_t>(event)), "Event.synchronize");
}

bool event_query(void* event) {
  check_not_capturing(-1, "Event.query");
  cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  check(err, "Event.query");
  return true;
}

float event_elapsed_ms(void* start, void* end) {
  float ms = 0;
  check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)), "Event.elapsedMs");
  return ms;
}

void* host_alloc_pinned(size_t bytes) {
  void* p = nullptr;
  if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return p;
}

void host_free_pinned(void* p) noexcept { cudaFreeHost(p); }

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes, bool non_blocking) {
  if (bytes == 0) return;
  const Device& dev = dst_dev.is_cuda() ? dst_dev : src_dev;
  cuda::check_device(dev.index, "copy");
  const bool one_device = dst_dev == src_dev;
  std::string what = cat("copy of ", bytes, " bytes ", src_dev.str(), " -> ", dst_dev.str());
  if (!one_device) check_not_capturing(dev.index, what.c_str());
  cuda::DeviceGuard guard(dev.index);
  cudaStream_t s = cuda::stream(dev.index);
  if (dst_dev.is_cuda() && src_dev.is_cuda() && !one_device) {
    check(cudaMemcpyPeerAsync(dst, dst_dev.index, src, src_dev.index, bytes, s), what);
  } else {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s), what);
  }
  // within one device the copy is ordered on the stream like any op; host memory and other devices need the wait
  if (!non_blocking && !one_device) check(cudaStreamSynchronize(s), what);
}

}  // namespace fl::gpu
