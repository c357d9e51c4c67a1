// The caching allocator's private pools for CUDA graphs (used by cuda/graph.cpp; see allocator.cpp).
#pragma once
#include <cstdint>

namespace fl::cuda {

// A new private pool of `device` (ids are never reused).
int pool_create(int device);
// From now until pool_capture_end, every allocation on `device` comes from `pool`.
void pool_capture_begin(int device, int pool);
void pool_capture_end(int device);
// The graph owning `pool` is gone: its memory returns to the driver now, or as soon as the last live tensor in it is
// freed; blocks it kept from outside the pool go back to the shared cache.
void pool_release(int device, int pool) noexcept;
// Bytes of device memory the pool holds.
int64_t pool_reserved(int device, int pool);

}  // namespace fl::cuda
