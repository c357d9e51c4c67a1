#include "profiler.h"

#include <vector>

#include "../core/gpu.h"
#include "check.h"

namespace fl::cuda {

namespace {

struct Record {
  std::string op;
  int device = 0;
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
};

// Per JS thread (the addon runs in worker threads too): the open profile and its recorded ops.
struct Profile {
  bool open = false;
  std::vector<Record> records;
};

thread_local Profile t_profile;

cudaEvent_t new_event() {
  cudaEvent_t e = nullptr;
  check(cudaEventCreate(&e), "cuda.profile: cudaEventCreate");
  return e;
}

void destroy_events(std::vector<Record>& records) noexcept {
  for (Record& r : records) {
    if (r.start) cudaEventDestroy(r.start);
    if (r.stop) cudaEventDestroy(r.stop);
  }
  records.clear();
}

}  // namespace

bool profiling() { return t_profile.open; }

void OpTimer::begin(int device, cudaStream_t stream, std::string context) {
  if (gpu::capturing(device)) return;
  Record r;
  r.op = std::move(context);
  r.device = device;
  std::vector<Record> pending(1);  // owns the events until the record joins the profile
  try {
    r.start = new_event();
    pending[0].start = r.start;
    r.stop = new_event();
    pending[0].stop = r.stop;
    check(cudaEventRecord(r.start, stream), "cuda.profile: cudaEventRecord");
  } catch (...) {
    destroy_events(pending);
    throw;
  }
  t_profile.records.push_back(std::move(r));
  active_ = true;
  stream_ = stream;
  slot_ = int(t_profile.records.size()) - 1;
}

OpTimer::~OpTimer() {
  if (active_ && t_profile.open && size_t(slot_) < t_profile.records.size()) {
    cudaEventRecord(t_profile.records[size_t(slot_)].stop, stream_);
  }
}

}  // namespace fl::cuda

namespace fl::gpu {

void profile_begin() {
  FL_CHECK(!cuda::t_profile.open, "cuda.profile: a profile is already open (profiles do not nest)");
  check_not_capturing(-1, "cuda.profile");
  cuda::t_profile.open = true;
}

std::vector<OpTime> profile_end() {
  cuda::Profile& p = cuda::t_profile;
  if (!p.open) return {};
  p.open = false;
  std::vector<OpTime> times;
  times.reserve(p.records.size());
  try {
    for (const cuda::Record& r : p.records) {
      cuda::DeviceGuard guard(r.device);
      cuda::check(cudaEventSynchronize(r.stop), "cuda.profile: waiting for " + r.op);
      float ms = 0.f;
      cuda::check(cudaEventElapsedTime(&ms, r.start, r.stop), "cuda.profile: timing " + r.op);
      times.push_back({r.op, double(ms)});
    }
  } catch (...) {
    cuda::destroy_events(p.records);
    throw;
  }
  cuda::destroy_events(p.records);
  return times;
}

}  // namespace fl::gpu
