// The CPU-only build's answer to every CUDA question: unavailable, with the reason. Device tensors cannot be
// created, so the functions that need a device are never reached; they throw to be safe.
#include "gpu.h"

namespace fl::gpu {

bool compiled() { return false; }
bool available() { return false; }
std::string unavailable_reason() { return "fluxlab was built without CUDA (no nvcc >= 12.4 found, or FLUXLAB_CPU_ONLY=1)"; }
void require(const char* what) { fail(cat(what, ": CUDA is unavailable: ", unavailable_reason()), kErrNoCuda); }
int device_count() { return 0; }
int current_device() { return 0; }
void set_device(int) { require("cuda.setDevice"); }
void synchronize(int) { require("cuda.synchronize"); }
int runtime_version() { return 0; }
std::string archs() { return ""; }
DeviceProps device_props(int) {
  require("cuda.deviceProperties");
  return {};
}
void* current_stream(int) {
  require("cuda.currentStream");
  return nullptr;
}
void set_current_stream(int, void*) { require("cuda.setCurrentStream"); }
void* stream_create(int, int) {
  require("new Stream");
  return nullptr;
}
void stream_destroy(int, void*) noexcept {}
void stream_synchronize(int, void*) { require("Stream.synchronize"); }
bool stream_query(int, void*) {
  require("Stream.query");
  return true;
}
void stream_wait_event(int, void*, void*) { require("Stream.waitEvent"); }
void* event_create(int, bool) {
  require("new Event");
  return nullptr;
}
void event_destroy(int, void*) noexcept {}
void event_record(int, void*, void*) { require("Event.record"); }
void event_synchronize(void*) { require("Event.synchronize"); }
bool event_query(void*) {
  require("Event.query");
  return true;
}
float event_elapsed_ms(void*, void*) {
  require("Event.elapsedMs");
  return 0;
}
void* host_alloc_pinned(size_t) { return nullptr; }
void host_free_pinned(void*) noexcept {}
void* device_alloc(int, size_t, int, void**) {
  require("allocating CUDA memory");
  return nullptr;
}
void device_free(void*) noexcept {}
void record_stream(void*, void*) { require("recordStream"); }
DeviceStats device_stats(int) {
  require("memory.stats");
  return {};
}
void reset_peak(int) { require("memory.resetPeak"); }
void empty_cache(int) { require("memory.emptyCache"); }
void copy_bytes(void*, Device, const void*, Device, size_t, bool) { require("copying to or from a CUDA device"); }
void* graph_capture_begin(int) {
  require("cuda.captureGraph");
  return nullptr;
}
void graph_capture_end(void*) { require("cuda.captureGraph"); }
void graph_capture_abort(void*) noexcept {}
void graph_replay(void*) { require("CudaGraph.replay"); }
int64_t graph_pool_bytes(void*) { return 0; }
int graph_device(void*) { return 0; }
void graph_destroy(void*) noexcept {}
bool capturing(int) { return false; }
void check_not_capturing(int, const char*) {}
std::map<std::string, int64_t> route_counts() { return {}; }
void reset_route_counts() {}
void profile_begin() { require("cuda.profile"); }
std::vector<OpTime> profile_end() { return {}; }

}  // namespace fl::gpu
