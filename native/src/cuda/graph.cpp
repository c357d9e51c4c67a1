// CUDA graph capture and replay. A capture runs the ops of one device on a fresh non-blocking stream (made the
// current stream, so every op launches there) in thread-local capture mode, with allocations from a private pool
// of the caching allocator (allocator.cpp); ending it instantiates the graph. Replays launch the whole sequence
// with one call on the current stream and reuse the pool's memory, so tensors created inside the capture hold
// each replay's results. Host synchronisation and host<->device copies cannot be captured: they throw
// ERR_FLUXLAB_CAPTURE naming the call (check_not_capturing), which aborts the capture.
#include <cuda_runtime_api.h>

#include <mutex>
#include <vector>

#include "../core/gpu.h"
#include "../sm90/tensor_map.h"
#include "allocator.h"
#include "check.h"
#include "profiler.h"

namespace fl::cuda {

namespace {

struct Graph {
  int device = 0;
  cudaStream_t stream = nullptr;
  void* previous_stream = nullptr;
  int pool = 0;
  bool capturing = false;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
};

std::mutex g_mutex;
std::vector<Graph*> g_capturing;  // per device: the graph being captured, or null

Graph* capturing_on(int device) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return device >= 0 && size_t(device) < g_capturing.size() ? g_capturing[size_t(device)] : nullptr;
}

void set_capturing(int device, Graph* g) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_capturing.size() <= size_t(device)) g_capturing.resize(size_t(device) + 1, nullptr);
  g_capturing[size_t(device)] = g;
}

// Leaves capture mode: the previous current stream and the shared allocator come back.
void stop_capturing(Graph* g) {
  if (!g->capturing) return;
  g->capturing = false;
  set_capturing(g->device, nullptr);
  gpu::set_current_stream(g->device, g->previous_stream);
  pool_capture_end(g->device);
}

void release(Graph* g) noexcept {
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(g->device);
  if (g->exec || g->graph) {
    // A disposed graph's pool may go back to the driver and its kept blocks to the shared cache: replays still
    // queued on any stream must finish first.
    if (!gpu::capturing(g->device)) cudaDeviceSynchronize();
  }
  if (g->exec) cudaGraphExecDestroy(g->exec);
  if (g->graph) cudaGraphDestroy(g->graph);
  pool_release(g->device, g->pool);
  if (g->stream) cudaStreamDestroy(g->stream);
  cudaSetDevice(previous);
  cudaGetLastError();
  delete g;
}

}  // namespace

}  // namespace fl::cuda

namespace fl::gpu {

using cuda::Graph;

bool capturing(int device) { return cuda::capturing_on(device) != nullptr; }

void check_not_capturing(int device, const char* what) {
  int found = -1;
  if (device >= 0) {
    if (capturing(device)) found = device;
  } else {
    std::lock_guard<std::mutex> lock(cuda::g_mutex);
    for (size_t d = 0; d < cuda::g_capturing.size(); d++) {
      if (cuda::g_capturing[d]) found = int(d);
    }
  }
  if (found < 0) return;
  fail(cat(what, ": not allowed while cuda.captureGraph is capturing cuda:", found,
           " (host synchronisation and copies between host and device cannot be recorded in a CUDA graph; create "
           "inputs before the capture and copy new data into them before each replay)"),
       kErrCapture);
}

void* graph_capture_begin(int device) {
  require("cuda.captureGraph");
  FL_CHECK(device >= 0 && device < device_count(), "cuda.captureGraph: device cuda:", device, " does not exist");
  FL_CHECK(!capturing(device), "cuda.captureGraph: cuda:", device,
           " is already capturing a graph (captures do not nest)");
  cuda::DeviceGuard guard(device);
  // The TMA kernels look the driver's tensor-map encoder up on first use: do it now, not inside the capture.
  fluxk::sm90::encode_tiled_fn();
  auto* g = new Graph;
  g->device = device;
  try {
    cuda::check(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking), "cuda.captureGraph: creating a stream");
    g->pool = cuda::pool_create(device);
    g->previous_stream = current_stream(device);
    cuda::check(cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal), "cuda.captureGraph");
  } catch (...) {
    cuda::release(g);
    throw;
  }
  cuda::pool_capture_begin(device, g->pool);
  set_current_stream(device, g->stream);
  cuda::set_capturing(device, g);
  g->capturing = true;
  return g;
}

void graph_capture_end(void* handle) {
  auto* g = static_cast<Graph*>(handle);
  FL_CHECK(g->capturing, "cuda.captureGraph: the capture already ended");
  cuda::DeviceGuard guard(g->device);
  cudaError_t err = cudaStreamEndCapture(g->stream, &g->graph);
  cuda::stop_capturing(g);
  if (err != cudaSuccess || g->graph == nullptr) {
    cudaGetLastError();
    fail(cat("cuda.captureGraph: the capture failed (", cudaGetErrorName(err), ": ", cudaGetErrorString(err),
             "); a call that cannot be captured (a synchronisation, a host copy, work on another stream) "
             "invalidated it"),
         kErrCuda);
  }
  cuda::check(cudaGraphInstantiate(&g->exec, g->graph, 0), "cuda.captureGraph: instantiating the graph");
  // Uploading now moves the one-time setup cost out of the first replay (which may run on another stream).
  cuda::check(cudaGraphUpload(g->exec, g->stream), "cuda.captureGraph: uploading the graph");
  cuda::check(cudaStreamSynchronize(g->stream), "cuda.captureGraph: uploading the graph");
}

void graph_capture_abort(void* handle) noexcept {
  auto* g = static_cast<Graph*>(handle);
  if (!g->capturing) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(g->device);
  cudaGraph_t partial = nullptr;
  cudaStreamEndCapture(g->stream, &partial);
  if (partial) cudaGraphDestroy(partial);
  cudaGetLastError();
  try {
    cuda::stop_capturing(g);
  } catch (...) {
    // the stream bookkeeping cannot fail for a device that was valid at begin
  }
  cudaSetDevice(previous);
}

void graph_replay(void* handle) {
  auto* g = static_cast<Graph*>(handle);
  FL_CHECK(g->exec, "CudaGraph.replay: the graph was not captured successfully");
  cuda::DeviceGuard guard(g->device);
  cudaStream_t stream = cuda::stream(g->device);
  cuda::OpTimer timer(g->device, stream, [] { return std::string("CudaGraph.replay"); });
  cuda::check(cudaGraphLaunch(g->exec, stream), "CudaGraph.replay");
}

int64_t graph_pool_bytes(void* handle) {
  auto* g = static_cast<Graph*>(handle);
  return cuda::pool_reserved(g->device, g->pool);
}

int graph_device(void* handle) { return static_cast<Graph*>(handle)->device; }

void graph_destroy(void* handle) noexcept {
  auto* g = static_cast<Graph*>(handle);
  graph_capture_abort(g);
  cuda::release(g);
}

}  // namespace fl::gpu
