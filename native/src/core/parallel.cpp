#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace fl {

namespace {

thread_local bool t_in_task = false;

class Pool {
 public:
  Pool() {
    int n = int(std::thread::hardware_concurrency());
    if (const char* env = std::getenv("FLUXLAB_NUM_THREADS")) {
      int v = std::atoi(env);
      if (v > 0) n = v;
    }
    threads_ = std::max(1, n);
  }

  ~Pool() { stop(); }

  int threads() const { return threads_; }

  void set_threads(int n) {
    std::lock_guard<std::mutex> run(run_mutex_);
    stop();
    threads_ = std::max(1, n);
  }

  void run(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    int64_t n = end - begin;
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    int64_t max_chunks = (n + grain - 1) / grain;
    if (t_in_task || threads_ == 1 || max_chunks == 1) {
      fn(begin, end);
      return;
    }
    std::lock_guard<std::mutex> run(run_mutex_);
    start();
    // A few chunks per thread balance uneven work without much scheduling overhead.
    int64_t chunks = std::min<int64_t>(max_chunks, int64_t(threads_) * 4);
    int64_t chunk = (n + chunks - 1) / chunks;
    chunks = (n + chunk - 1) / chunk;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      begin_ = begin;
      end_ = end;
      chunk_ = chunk;
      next_.store(0);
      chunks_ = chunks;
      pending_ = chunks;
      error_ = nullptr;
      generation_++;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mutex_);
    // Workers still inside work() hold this job's snapshot: the next job must not start under them.
    done_.wait(lock, [&] { return pending_ == 0 && active_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void start() {
    if (!workers_.empty()) return;
    quit_ = false;
    for (int i = 1; i < threads_; i++) workers_.emplace_back([this] { loop(); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
      }
      work();
    }
  }

  void work() {
    const std::function<void(int64_t, int64_t)>* fn;
    int64_t begin, end, chunk, chunks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!fn_) return;
      fn = fn_;
      begin = begin_;
      end = end_;
      chunk = chunk_;
      chunks = chunks_;
      active_++;
    }
    t_in_task = true;
    for (;;) {
      int64_t c = next_.fetch_add(1);
      if (c >= chunks) break;
      int64_t b = begin + c * chunk;
      int64_t e = std::min(end, b + chunk);
      try {
        (*fn)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mutex_);
      --pending_;
    }
    t_in_task = false;
    std::lock_guard<std::mutex> lock(mutex_);
    active_--;
    if (pending_ == 0 && active_ == 0) done_.notify_all();
  }

  int threads_ = 1;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  bool quit_ = false;
  uint64_t generation_ = 0;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t begin_ = 0, end_ = 0, chunk_ = 1, chunks_ = 0, pending_ = 0, active_ = 0;
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

int num_threads() { return pool().threads(); }
void set_num_threads(int n) { pool().set_threads(n); }

void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  pool().run(begin, end, grain, fn);
}

}  // namespace fl
