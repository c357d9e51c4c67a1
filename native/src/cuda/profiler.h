// Op timing for cuda.profile(): while a profile is open on this thread, every op launched through
// FL_CUDA_LAUNCH (and every graph replay) is bracketed by a pair of CUDA events on its stream, so the figure is
// the GPU time between the op's first and last kernel, not host time. Ops inside a graph capture are not timed
// (a captured event cannot be timed); a replayed graph counts as one op. Closing the profile waits for the
// recorded events, so the launches themselves stay asynchronous.
#pragma once
#include <cuda_runtime_api.h>

#include <string>
#include <utility>

namespace fl::cuda {

bool profiling();

class OpTimer {
 public:
  template <class F>
  OpTimer(int device, cudaStream_t stream, F&& context) {
    if (profiling()) begin(device, stream, context());
  }
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  void begin(int device, cudaStream_t stream, std::string context);
  bool active_ = false;
  cudaStream_t stream_ = nullptr;
  int slot_ = -1;
};

}  // namespace fl::cuda
