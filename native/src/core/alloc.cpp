#include "alloc.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "gpu.h"

namespace fl::mem {

namespace {

std::mutex g_mutex;  // CPU worker threads never allocate, but cheap insurance
std::vector<std::string> g_tags{""};
std::unordered_map<std::string, int> g_tag_ids{{"", 0}};
int g_current_tag = 0;
HostStats g_host;
std::unordered_map<int, int64_t> g_host_by_tag;
std::atomic<uint64_t> g_next_id{1};

int intern(const std::string& tag) {
  auto it = g_tag_ids.find(tag);
  if (it != g_tag_ids.end()) return it->second;
  int id = int(g_tags.size());
  g_tags.push_back(tag);
  g_tag_ids.emplace(tag, id);
  return id;
}

void note_host_alloc(size_t bytes, bool pinned, int tag) {
  g_host.allocated += int64_t(bytes);
  if (g_host.allocated > g_host.peak_allocated) g_host.peak_allocated = g_host.allocated;
  if (pinned) {
    g_host.pinned += int64_t(bytes);
    if (g_host.pinned > g_host.peak_pinned) g_host.peak_pinned = g_host.pinned;
  }
  g_host.num_allocs++;
  g_host_by_tag[tag] += int64_t(bytes);
}

}  // namespace

std::string set_tag(const std::string& tag) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::string previous = g_tags[size_t(g_current_tag)];
  g_current_tag = intern(tag);
  return previous;
}

int current_tag() { return g_current_tag; }

const std::string& tag_name(int id) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_tags.at(size_t(id));
}

int current_cuda_device() { return gpu::available() ? gpu::current_device() : 0; }

void* host_alloc(size_t bytes, bool want_pinned, bool* got_pinned, int tag) {
  void* p = nullptr;
  bool pinned = false;
  if (want_pinned && bytes > 0 && gpu::available()) {
    p = gpu::host_alloc_pinned(bytes);
    pinned = p != nullptr;
    if (!pinned) fail(cat("out of pinned host memory allocating ", bytes, " bytes"), kErrOom);
  }
  if (!p && bytes > 0) {
    // 64-byte alignment: whole cache lines and AVX-512 loads; rounded so aligned_alloc accepts the size
    size_t rounded = (bytes + 63) & ~size_t(63);
    p = std::aligned_alloc(64, rounded);
    if (!p) fail(cat("out of host memory allocating ", bytes, " bytes"), kErrOom);
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  note_host_alloc(bytes, pinned, tag);
  if (got_pinned) *got_pinned = pinned;
  return p;
}

void host_free(void* p, size_t bytes, bool pinned, int tag) noexcept {
  if (p) {
    if (pinned) gpu::host_free_pinned(p);
    else std::free(p);
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  g_host.allocated -= int64_t(bytes);
  if (pinned) g_host.pinned -= int64_t(bytes);
  g_host.num_frees++;
  g_host_by_tag[tag] -= int64_t(bytes);
}

void acquire(Storage& s, bool pinned) {
  s.tag = g_current_tag;
  s.id = g_next_id++;
  if (s.device.is_cpu()) {
    s.ptr = host_alloc(s.bytes, pinned, &s.pinned, s.tag);
    return;
  }
  gpu::require("allocating CUDA memory");
  FL_CHECK(s.device.index < gpu::device_count(), "device ", s.device.str(), " does not exist (",
           gpu::device_count(), " CUDA devices)");
  s.ptr = gpu::device_alloc(s.device.index, s.bytes, s.tag, &s.block);
}

void release(Storage& s) noexcept {
  if (s.device.is_cpu()) {
    host_free(s.ptr, s.bytes, s.pinned, s.tag);
  } else if (s.block) {
    gpu::device_free(s.block);
  }
  s.ptr = nullptr;
  s.block = nullptr;
}

HostStats host_stats() {
  std::lock_guard<std::mutex> lock(g_mutex);
  HostStats out = g_host;
  for (const auto& [tag, bytes] : g_host_by_tag) {
    if (bytes != 0) out.by_tag[g_tags[size_t(tag)]] = bytes;
  }
  return out;
}

void reset_host_peak() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_host.peak_allocated = g_host.allocated;
  g_host.peak_pinned = g_host.pinned;
}

}  // namespace fl::mem
