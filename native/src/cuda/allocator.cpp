// The per-device caching allocator. cudaMalloc/cudaFree synchronise the device and cost tens of microseconds to
// milliseconds, and a CUDA graph cannot contain them, so device memory is obtained in segments and handed out
// again from free lists: sizes below 1 MiB come from 2 MiB segments (the small pool), larger ones from segments
// of at least 20 MiB (the large pool), split and merged at 512-byte granularity (PyTorch's scheme). A freed block
// is reused only by allocations on the stream it was allocated on (stream order makes that safe without a host
// sync); recordStream() adds streams whose queued work must finish first, tracked with events.
// CUDA graphs (cuda/graph.cpp) get private pools: while a graph is captured, every allocation of its device comes
// from segments owned by that graph's pool, blocks freed during the capture are reused within it (the one capture
// stream orders them), and the whole pool stays reserved until the graph is disposed, so replays find their memory
// intact. A block from outside the pool freed during a capture may be read by every replay: the graph keeps it
// until it is disposed.
#include <cuda_runtime_api.h>

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include "../core/alloc.h"
#include "../core/gpu.h"
#include "allocator.h"
#include "check.h"

namespace fl::cuda {

namespace {

constexpr size_t kMinBlock = 512;
constexpr size_t kSmallSize = size_t(1) << 20;        // largest "small" request
constexpr size_t kSmallSegment = size_t(2) << 20;     // segment size of the small pool
constexpr size_t kLargeSegment = size_t(20) << 20;    // minimum segment of the large pool
constexpr size_t kMinLargeAlloc = size_t(10) << 20;   // requests from here on get their own rounded segment
constexpr size_t kRoundLarge = size_t(2) << 20;

struct Block {
  int device = 0;
  int pool = 0;  // 0: the shared cache; otherwise a graph's private pool
  cudaStream_t stream = nullptr;
  size_t size = 0;
  void* ptr = nullptr;
  bool allocated = false;
  bool small = false;
  int tag = 0;
  int pending_events = 0;
  Block* prev = nullptr;
  Block* next = nullptr;
  std::vector<cudaStream_t> stream_uses;
};

struct BlockOrder {
  bool operator()(const Block* a, const Block* b) const {
    if (a->pool != b->pool) return a->pool < b->pool;
    if (a->stream != b->stream) return reinterpret_cast<uintptr_t>(a->stream) < reinterpret_cast<uintptr_t>(b->stream);
    if (a->size != b->size) return a->size < b->size;
    return reinterpret_cast<uintptr_t>(a->ptr) < reinterpret_cast<uintptr_t>(b->ptr);
  }
};

size_t round_size(size_t n) { return n < kMinBlock ? kMinBlock : (n + kMinBlock - 1) / kMinBlock * kMinBlock; }

size_t segment_size(size_t n) {
  if (n <= kSmallSize) return kSmallSegment;
  if (n < kMinLargeAlloc) return kLargeSegment;
  return (n + kRoundLarge - 1) / kRoundLarge * kRoundLarge;
}

std::string mib(int64_t bytes) { return cat(double(bytes) / double(1 << 20), " MiB"); }

struct PoolInfo {
  int64_t reserved = 0;
  int segments = 0;
  bool closed = false;      // its graph was disposed
  std::vector<Block*> kept;  // blocks of other pools freed during its capture
};

class DeviceCache {
 public:
  explicit DeviceCache(int device) : device_(device) {}

  Block* malloc(size_t requested, cudaStream_t stream, int tag) {
    std::lock_guard<std::mutex> lock(mutex_);
    process_events(stream);
    size_t size = round_size(requested);
    bool small = size <= kSmallSize;
    auto& pool = small ? small_free_ : large_free_;
    Block key;
    key.pool = active_pool_;
    key.stream = stream;
    key.size = size;
    Block* block = nullptr;
    auto it = pool.lower_bound(&key);
    if (it != pool.end() && (*it)->pool == active_pool_ && (*it)->stream == stream) {
      block = *it;
      pool.erase(it);
    } else {
      block = new_segment(size, segment_size(size), stream, small);
    }
    size_t remaining = block->size - size;
    if ((small && remaining >= kMinBlock) || (!small && remaining > kSmallSize)) {
      auto* rest = new Block;
      rest->device = device_;
      rest->pool = block->pool;
      rest->stream = stream;
      rest->small = small;
      rest->ptr = static_cast<char*>(block->ptr) + size;
      rest->size = remaining;
      rest->prev = block;
      rest->next = block->next;
      if (rest->next) rest->next->prev = rest;
      block->next = rest;
      block->size = size;
      pool.insert(rest);
    }
    block->allocated = true;
    block->tag = tag;
    stats_.allocated += int64_t(block->size);
    if (stats_.allocated > stats_.peak_allocated) stats_.peak_allocated = stats_.allocated;
    stats_.num_allocs++;
    by_tag_[tag] += int64_t(block->size);
    return block;
  }

  void free(Block* block) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (active_pool_ != 0 && block->pool != active_pool_) {
      // The graph being captured may have read this block and will read it again on every replay: it stays
      // allocated, owned by the graph, until the graph is disposed.
      pools_[active_pool_].kept.push_back(block);
      return;
    }
    free_locked(block);
  }

  void record_stream(Block* block, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stream == block->stream) return;
    for (cudaStream_t s : block->stream_uses) {
      if (s == stream) return;
    }
    block->stream_uses.push_back(stream);
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceGuard guard(device_);
    // Wait for cross-stream frees so their blocks can go back too.
    while (!pending_.empty()) {
      auto [ev, block] = pending_.front();
      pending_.pop_front();
      cudaEventSynchronize(ev);
      cudaEventDestroy(ev);
      if (--block->pending_events == 0) release_to_pool(block);
    }
    release_cached();
  }

  gpu::DeviceStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    gpu::DeviceStats out = stats_;
    for (const auto& [tag, bytes] : by_tag_) {
      if (bytes != 0) out.by_tag[tag] = bytes;
    }
    for (const auto& [id, p] : pools_) {
      out.graph_reserved += p.reserved;
      if (!p.closed) out.graph_pools++;
    }
    DeviceGuard guard(device_);
    size_t free = 0, total = 0;
    // not stream-ordered, so a capture would refuse it: statistics read during a capture are not part of it
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    if (active_pool_ != 0) cudaThreadExchangeStreamCaptureMode(&mode);
    const cudaError_t err = cudaMemGetInfo(&free, &total);
    if (active_pool_ != 0) cudaThreadExchangeStreamCaptureMode(&mode);
    check(err, "cudaMemGetInfo");
    out.free = int64_t(free);
    out.total = int64_t(total);
    return out;
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_allocated = stats_.allocated;
    stats_.peak_reserved = stats_.reserved;
  }

  // ---- graph pools ----

  int pool_create() {
    std::lock_guard<std::mutex> lock(mutex_);
    int id = next_pool_++;
    pools_[id];
    return id;
  }

  void pool_capture_begin(int pool) {
    std::lock_guard<std::mutex> lock(mutex_);
    FL_CHECK(active_pool_ == 0, "cuda.captureGraph: cuda:", device_, " is already capturing a graph");
    active_pool_ = pool;
  }

  void pool_capture_end() {
    std::lock_guard<std::mutex> lock(mutex_);
    active_pool_ = 0;
    release_closed_segments();
  }

  void pool_release(int id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = pools_.find(id);
    if (it == pools_.end()) return;
    it->second.closed = true;
    std::vector<Block*> kept;
    kept.swap(it->second.kept);
    for (Block* b : kept) free_locked(b);
    release_closed_segments();
  }

  int64_t pool_reserved(int id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = pools_.find(id);
    return it == pools_.end() ? 0 : it->second.reserved;
  }

 private:
  void free_locked(Block* block) {
    block->allocated = false;
    stats_.allocated -= int64_t(block->size);
    stats_.num_frees++;
    by_tag_[block->tag] -= int64_t(block->size);
    if (!block->stream_uses.empty() && active_pool_ == 0) {
      // Other streams may still read this memory: reuse waits for what they have queued so far.
      DeviceGuard guard(device_);
      for (cudaStream_t s : block->stream_uses) {
        cudaEvent_t ev;
        if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess ||
            cudaEventRecord(ev, s) != cudaSuccess) {
          cudaGetLastError();
          cudaStreamSynchronize(s);  // cannot track it: wait instead of risking reuse under a reader
          continue;
        }
        block->pending_events++;
        pending_.emplace_back(ev, block);
      }
      block->stream_uses.clear();
      if (block->pending_events > 0) return;
    }
    // During a capture only the graph's own blocks get here; its single capture stream orders their reuse.
    block->stream_uses.clear();
    release_to_pool(block);
    if (block->pool != 0 && !block->prev && !block->next) release_closed_segments();
  }

  Block* new_segment(size_t size, size_t bytes, cudaStream_t stream, bool small) {
    DeviceGuard guard(device_);
    void* ptr = nullptr;
    cudaError_t err = capture_malloc(&ptr, bytes);
    if (err == cudaErrorMemoryAllocation && active_pool_ == 0) {
      cudaGetLastError();
      release_cached();  // give cached segments back to the driver, then try once more (cudaFree: not while capturing)
      err = cudaMalloc(&ptr, bytes);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free = 0, total = 0;
      cudaMemGetInfo(&free, &total);
      cudaGetLastError();
      throw Error(cat("CUDA out of memory on cuda:", device_, ": tried to allocate ", mib(int64_t(size)),
                      " (segment ", mib(int64_t(bytes)), "); ", mib(stats_.allocated), " allocated by fluxlab, ",
                      mib(stats_.reserved), " reserved, ", mib(int64_t(free)), " free of ", mib(int64_t(total)),
                      active_pool_ ? " (during a graph capture: cached memory cannot be released then)" : "", " (",
                      cudaGetErrorName(err), ")"),
                  err == cudaErrorMemoryAllocation ? kErrOom : kErrCuda);
    }
    stats_.reserved += int64_t(bytes);
    if (stats_.reserved > stats_.peak_reserved) stats_.peak_reserved = stats_.reserved;
    stats_.num_cuda_mallocs++;
    auto* block = new Block;
    block->device = device_;
    block->pool = active_pool_;
    block->stream = stream;
    block->size = bytes;
    block->ptr = ptr;
    block->small = small;
    if (active_pool_ != 0) {
      PoolInfo& p = pools_[active_pool_];
      p.reserved += int64_t(bytes);
      p.segments++;
    }
    return block;
  }

  // cudaMalloc is not stream-ordered, so stream capture forbids it by default; a pool segment is plain memory
  // the graph's nodes point into, so the allocation is made with capture checks relaxed for this thread.
  cudaError_t capture_malloc(void** ptr, size_t bytes) {
    if (active_pool_ == 0) return cudaMalloc(ptr, bytes);
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    cudaError_t err = cudaMalloc(ptr, bytes);
    cudaThreadExchangeStreamCaptureMode(&mode);
    return err;
  }

  void release_to_pool(Block* block) {
    auto& pool = block->small ? small_free_ : large_free_;
    for (Block* neighbour : {block->prev, block->next}) {
      if (!neighbour || neighbour->allocated || neighbour->pending_events > 0) continue;
      pool.erase(neighbour);
      if (neighbour == block->prev) {
        block->ptr = neighbour->ptr;
        block->prev = neighbour->prev;
        if (block->prev) block->prev->next = block;
      } else {
        block->next = neighbour->next;
        if (block->next) block->next->prev = block;
      }
      block->size += neighbour->size;
      delete neighbour;
    }
    pool.insert(block);
  }

  void free_segment(std::set<Block*, BlockOrder>& pool, std::set<Block*, BlockOrder>::iterator& it) {
    Block* b = *it;
    cudaFree(b->ptr);
    cudaGetLastError();
    stats_.reserved -= int64_t(b->size);
    stats_.num_cuda_frees++;
    if (b->pool != 0) {
      auto p = pools_.find(b->pool);
      if (p != pools_.end()) {
        p->second.reserved -= int64_t(b->size);
        if (--p->second.segments == 0 && p->second.closed) pools_.erase(p);
      }
    }
    it = pool.erase(it);
    delete b;
  }

  bool pool_closed(int id) const {
    auto it = pools_.find(id);
    return it == pools_.end() || it->second.closed;
  }

  // Frees whole cached segments of the shared cache and of disposed graphs (a free block with no neighbours is a
  // segment nobody uses); live graphs keep theirs.
  void release_cached() {
    DeviceGuard guard(device_);
    for (auto* pool : {&small_free_, &large_free_}) {
      for (auto it = pool->begin(); it != pool->end();) {
        Block* b = *it;
        if (!b->prev && !b->next && (b->pool == 0 || pool_closed(b->pool))) {
          free_segment(*pool, it);
        } else {
          ++it;
        }
      }
    }
  }

  // Returns the unused segments of disposed graphs to the driver (cudaFree waits for the device, so replays still
  // queued finish first); deferred while a capture is running.
  void release_closed_segments() {
    if (active_pool_ != 0) return;
    bool any = false;
    for (const auto& [id, p] : pools_) any |= p.closed;
    if (!any) return;
    DeviceGuard guard(device_);
    for (auto* pool : {&small_free_, &large_free_}) {
      for (auto it = pool->begin(); it != pool->end();) {
        Block* b = *it;
        if (b->pool != 0 && !b->prev && !b->next && pool_closed(b->pool)) {
          free_segment(*pool, it);
        } else {
          ++it;
        }
      }
    }
  }

  void process_events(cudaStream_t stream) {
    if (pending_.empty() || active_pool_ != 0) return;
    // Querying events is not allowed while the stream is being captured into a graph.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) cudaGetLastError();
    if (capture != cudaStreamCaptureStatusNone) return;
    while (!pending_.empty()) {
      auto [ev, block] = pending_.front();
      cudaError_t err = cudaEventQuery(ev);
      if (err == cudaErrorNotReady) {
        cudaGetLastError();
        break;
      }
      pending_.pop_front();
      cudaEventDestroy(ev);
      if (--block->pending_events == 0) release_to_pool(block);
    }
  }

  int device_;
  std::mutex mutex_;
  std::set<Block*, BlockOrder> small_free_, large_free_;
  std::deque<std::pair<cudaEvent_t, Block*>> pending_;
  gpu::DeviceStats stats_;
  std::unordered_map<int, int64_t> by_tag_;
  std::map<int, PoolInfo> pools_;
  int next_pool_ = 1;
  int active_pool_ = 0;
};

DeviceCache& cache(int device) {
  static std::mutex m;
  static std::vector<std::unique_ptr<DeviceCache>> caches;
  std::lock_guard<std::mutex> lock(m);
  if (caches.size() <= size_t(device)) caches.resize(size_t(device) + 1);
  if (!caches[size_t(device)]) caches[size_t(device)] = std::make_unique<DeviceCache>(device);
  return *caches[size_t(device)];
}

void check_index(int device, const char* what) {
  gpu::require(what);
  FL_CHECK(device >= 0 && device < gpu::device_count(), what, ": device cuda:", device, " does not exist");
}

}  // namespace

}  // namespace fl::cuda

namespace fl::gpu {

void* device_alloc(int device, size_t bytes, int tag, void** handle) {
  if (bytes == 0) {
    *handle = nullptr;
    return nullptr;
  }
  cuda::Block* b = cuda::cache(device).malloc(bytes, cuda::stream(device), tag);
  *handle = b;
  return b->ptr;
}

void device_free(void* handle) noexcept {
  if (!handle) return;
  auto* b = static_cast<cuda::Block*>(handle);
  try {
    cuda::cache(b->device).free(b);
  } catch (...) {
    // Freeing must not throw (it runs in destructors); a failed event record was already handled by a sync.
  }
}

void record_stream(void* handle, void* stream) {
  if (!handle) return;
  auto* b = static_cast<cuda::Block*>(handle);
  cuda::cache(b->device).record_stream(b, static_cast<cudaStream_t>(stream));
}

DeviceStats device_stats(int device) {
  cuda::check_index(device, "memory.stats");
  return cuda::cache(device).stats();
}

void reset_peak(int device) {
  cuda::check_index(device, "memory.resetPeak");
  cuda::cache(device).reset_peak();
}

void empty_cache(int device) {
  cuda::check_index(device, "memory.emptyCache");
  check_not_capturing(device, "memory.emptyCache");
  cuda::cache(device).empty_cache();
}

}  // namespace fl::gpu

namespace fl::cuda {

int pool_create(int device) { return cache(device).pool_create(); }
void pool_capture_begin(int device, int pool) { cache(device).pool_capture_begin(pool); }
void pool_capture_end(int device) { cache(device).pool_capture_end(); }
void pool_release(int device, int pool) noexcept {
  try {
    cache(device).pool_release(pool);
  } catch (...) {
    // runs from graph destructors; the pool's memory then stays cached
  }
}
int64_t pool_reserved(int device, int pool) { return cache(device).pool_reserved(pool); }

}  // namespace fl::cuda
