// A small persistent thread pool for the CPU ops. parallel_for splits [begin, end) into chunks of at least
// `grain` iterations; the calling thread takes part; calls from inside a running task run inline (no nesting).
#pragma once
#include <cstdint>
#include <functional>

namespace fl {

int num_threads();
void set_num_threads(int n);
void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace fl
