// The CUDA runtime as the rest of the addon sees it, free of CUDA headers so that the core and the CPU-only
// build compile without a toolkit. Implemented by cuda/runtime.cpp, or by core/gpu_absent.cpp in CPU-only builds.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tensor.h"

namespace fl::gpu {

bool compiled();              // built with the CUDA backend
bool available();             // compiled, driver present, at least one device
std::string unavailable_reason();
void require(const char* what);  // throws ERR_FLUXLAB_NO_CUDA naming `what` when unavailable
int device_count();
int current_device();
void set_device(int device);
void synchronize(int device);
int runtime_version();
std::string archs();

struct DeviceProps {
  std::string name;
  int major = 0, minor = 0, multi_processor_count = 0, l2_cache_size = 0, shared_mem_per_block_optin = 0;
  int64_t total_memory = 0;
};
DeviceProps device_props(int device);

// Streams are cudaStream_t passed as void*; nullptr is the device's legacy default stream.
void* current_stream(int device);
void set_current_stream(int device, void* stream);

void* stream_create(int device, int priority);
void stream_destroy(int device, void* stream) noexcept;
void stream_synchronize(int device, void* stream);
bool stream_query(int device, void* stream);
void stream_wait_event(int device, void* stream, void* event);
void* event_create(int device, bool timing);
void event_destroy(int device, void* event) noexcept;
void event_record(int device, void* event, void* stream);
void event_synchronize(void* event);
bool event_query(void* event);
float event_elapsed_ms(void* start, void* end);

void* host_alloc_pinned(size_t bytes);  // nullptr when unavailable or out of pinned memory
void host_free_pinned(void* p) noexcept;

// Caching allocator (stream-ordered on the device's current stream).
void* device_alloc(int device, size_t bytes, int tag, void** block);
void device_free(void* block) noexcept;
void record_stream(void* block, void* stream);

struct DeviceStats {
  int64_t allocated = 0, reserved = 0, peak_allocated = 0, peak_reserved = 0;
  int64_t num_allocs = 0, num_frees = 0, num_cuda_mallocs = 0, num_cuda_frees = 0;
  int64_t free = 0, total = 0;
  int64_t graph_reserved = 0;  // part of `reserved` held by CUDA graphs' private pools
  int64_t graph_pools = 0;     // live graphs holding a pool
  std::map<int, int64_t> by_tag;
};
DeviceStats device_stats(int device);
void reset_peak(int device);
void empty_cache(int device);

// CUDA graphs (cuda/graph.cpp). Capture runs the ops of `device` on a new capture stream (made current) with
// allocations from a private pool; the handle then owns the instantiated graph, the stream and the pool.
void* graph_capture_begin(int device);
void graph_capture_end(void* graph);             // instantiates; throws (and discards the capture) on failure
void graph_capture_abort(void* graph) noexcept;  // after an error inside the captured function
void graph_replay(void* graph);                  // on the device's current stream
int64_t graph_pool_bytes(void* graph);
int graph_device(void* graph);
void graph_destroy(void* graph) noexcept;
bool capturing(int device);
// Throws ERR_FLUXLAB_CAPTURE naming `what` while `device` (any device, for -1) is being captured: host
// synchronisation and host<->device copies cannot be part of a graph.
void check_not_capturing(int device, const char* what);

// Op timing (cuda/profiler.cpp): between begin and end, each op launched on a CUDA device (and each graph replay)
// is timed on the GPU by events; end waits for them and returns one entry per op, in launch order.
struct OpTime {
  std::string op;  // the op's context: name, inputs' shapes and dtypes
  double ms = 0;
};
void profile_begin();
std::vector<OpTime> profile_end();

// Which kernel served each routed op (linear, NF4 linear, sdpa) since the last reset, by route name.
std::map<std::string, int64_t> route_counts();
void reset_route_counts();

// Byte copies on the current stream of the CUDA side. Host memory is pageable unless stated; a copy to
// pageable host memory, or a copy involving the host or two devices with non_blocking false, waits for completion.
// Copies within one device are stream-ordered like any op and never wait.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes, bool non_blocking);

}  // namespace fl::gpu
