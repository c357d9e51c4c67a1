// Memory accounting and allocation entry points: host memory (pageable or pinned) with statistics, and the hook
// into the per-device caching allocator (cuda/allocator.cpp). Allocations carry the current tag.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "tensor.h"

namespace fl::mem {

// The tag new allocations are attributed to ('' = untagged). Returns the previous tag.
std::string set_tag(const std::string& tag);
int current_tag();
const std::string& tag_name(int id);

// Fills s.ptr (and s.block/s.pinned/s.tag/s.id) for s.device and s.bytes; throws ERR_FLUXLAB_OOM on failure.
void acquire(Storage& s, bool pinned);
void release(Storage& s) noexcept;

// Host buffers outside tensors (pinned buffers, staging): same accounting.
void* host_alloc(size_t bytes, bool want_pinned, bool* got_pinned, int tag);
void host_free(void* p, size_t bytes, bool pinned, int tag) noexcept;

struct HostStats {
  int64_t allocated = 0, peak_allocated = 0, pinned = 0, peak_pinned = 0, num_allocs = 0, num_frees = 0;
  std::map<std::string, int64_t> by_tag;
};
HostStats host_stats();
void reset_host_peak();

int current_cuda_device();

}  // namespace fl::mem
