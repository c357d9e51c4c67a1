// CUDA devices, streams and events; memory statistics; pinned buffers; the random generator; CPU threads.
#include <unordered_map>

#include "../core/alloc.h"
#include "../core/gpu.h"
#include "../core/parallel.h"
#include "../cpu/kernels.h"
#include "util.h"

namespace fl::js {

namespace {

Napi::Value N(Napi::Env env, double v) { return Napi::Number::New(env, v); }

int device_index(const Napi::Value& v, const char* what) {
  int64_t d = int_arg(v, what);
  gpu::require(what);
  FL_CHECK(d >= 0 && d < gpu::device_count(), what, ": device cuda:", d, " does not exist (", gpu::device_count(),
           " CUDA devices)");
  return int(d);
}

// ---- streams and events -----------------------------------------------------------------------------------

std::unordered_map<void*, int64_t>& stream_ids() {
  static std::unordered_map<void*, int64_t> ids;
  return ids;
}
int64_t g_next_stream_id = 1;

class NativeStream : public Napi::ObjectWrap<NativeStream> {
 public:
  static Napi::Function define(Napi::Env env) {
    Napi::Function cls = DefineClass(env, "NativeStream",
                                     {
                                         InstanceAccessor<&NativeStream::device>("device"),
                                         InstanceAccessor<&NativeStream::id>("id"),
                                         InstanceAccessor<&NativeStream::disposed>("disposed"),
                                         InstanceMethod<&NativeStream::synchronize>("synchronize"),
                                         InstanceMethod<&NativeStream::query>("query"),
                                         InstanceMethod<&NativeStream::wait_event>("waitEvent"),
                                         InstanceMethod<&NativeStream::dispose>("dispose"),
                                     });
    addon_data(env).stream = Napi::Persistent(cls);
    return cls;
  }
  static Napi::Object make(Napi::Env env, int device, void* stream, bool owned) {
    Napi::Object o = addon_data(env).stream.New({});
    NativeStream* s = Unwrap(o);
    s->device_ = device;
    s->stream_ = stream;
    s->owned_ = owned;
    return o;
  }
  static NativeStream* from(const Napi::Value& v, const char* what) {
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(v.Env()).stream.Value())) {
      fail(cat(what, ": expected a stream"));
    }
    NativeStream* s = Unwrap(v.As<Napi::Object>());
    if (s->disposed_) fail(cat(what, ": the stream was disposed"), kErrDisposed);
    return s;
  }

  explicit NativeStream(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeStream>(info) {}
  ~NativeStream() override { release(); }

  int device_ = 0;
  void* stream_ = nullptr;
  bool owned_ = false;
  bool disposed_ = false;

 private:
  void release() {
    if (owned_ && !disposed_) {
      if (gpu::available() && gpu::current_stream(device_) == stream_) gpu::set_current_stream(device_, nullptr);
      stream_ids().erase(stream_);
      gpu::stream_destroy(device_, stream_);
    }
    disposed_ = true;
  }
  Napi::Value device(const Napi::CallbackInfo& info) { return N(info.Env(), device_); }
  Napi::Value id(const Napi::CallbackInfo& info) {
    auto it = stream_ids().find(stream_);
    return N(info.Env(), stream_ == nullptr || it == stream_ids().end() ? 0 : double(it->second));
  }
  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }
  Napi::Value synchronize(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      from(Value(), "Stream.synchronize");
      gpu::stream_synchronize(device_, stream_);
      return info.Env().Undefined();
    });
  }
  Napi::Value query(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      from(Value(), "Stream.query");
      return Napi::Boolean::New(info.Env(), gpu::stream_query(device_, stream_));
    });
  }
  Napi::Value wait_event(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    release();
    return info.Env().Undefined();
  }
};

class NativeEvent : public Napi::ObjectWrap<NativeEvent> {
 public:
  static Napi::Function define(Napi::Env env) {
    Napi::Function cls = DefineClass(env, "NativeEvent",
                                     {
                                         InstanceAccessor<&NativeEvent::device>("device"),
                                         InstanceAccessor<&NativeEvent::disposed>("disposed"),
                                         InstanceMethod<&NativeEvent::record>("record"),
                                         InstanceMethod<&NativeEvent::synchronize>("synchronize"),
                                         InstanceMethod<&NativeEvent::query>("query"),
                                         InstanceMethod<&NativeEvent::elapsed>("elapsedMs"),
                                         InstanceMethod<&NativeEvent::dispose>("dispose"),
                                     });
    addon_data(env).event = Napi::Persistent(cls);
    return cls;
  }
  static NativeEvent* from(const Napi::Value& v, const char* what) {
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(v.Env()).event.Value())) {
      fail(cat(what, ": expected an event"));
    }
    NativeEvent* e = Unwrap(v.As<Napi::Object>());
    if (!e->event_) fail(cat(what, ": the event was disposed"), kErrDisposed);
    return e;
  }
  explicit NativeEvent(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeEvent>(info) {}
  ~NativeEvent() override { gpu::event_destroy(device_, event_); }

  int device_ = 0;
  void* event_ = nullptr;
  bool recorded_ = false;

 private:
  Napi::Value device(const Napi::CallbackInfo& info) { return N(info.Env(), device_); }
  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), event_ == nullptr); }
  Napi::Value record(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      from(Value(), "Event.record");
      NativeStream* s = NativeStream::from(info[0], "Event.record");
      FL_CHECK(s->device_ == device_, "Event.record: event of cuda:", device_, " on a stream of cuda:", s->device_);
      gpu::event_record(device_, event_, s->stream_);
      recorded_ = true;
      return info.Env().Undefined();
    });
  }
  Napi::Value synchronize(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      from(Value(), "Event.synchronize");
      gpu::event_synchronize(event_);
      return info.Env().Undefined();
    });
  }
  Napi::Value query(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      from(Value(), "Event.query");
      return Napi::Boolean::New(info.Env(), gpu::event_query(event_));
    });
  }
  Napi::Value elapsed(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      from(Value(), "Event.elapsedMs");
      NativeEvent* end = from(info[0], "Event.elapsedMs");
      FL_CHECK(recorded_ && end->recorded_, "Event.elapsedMs: both events must be recorded first");
      return N(info.Env(), gpu::event_elapsed_ms(event_, end->event_));
    });
  }
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    gpu::event_destroy(device_, event_);
    event_ = nullptr;
    return info.Env().Undefined();
  }
};

Napi::Value NativeStream::wait_event(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    from(Value(), "Stream.waitEvent");
    NativeEvent* e = NativeEvent::from(info[0], "Stream.waitEvent");
    gpu::stream_wait_event(device_, stream_, e->event_);
    return info.Env().Undefined();
  });
}

Napi::Value stream_create_js(const Napi::CallbackInfo& info) {
  int dev = device_index(info[0], "new Stream");
  void* s = gpu::stream_create(dev, int(int_arg(info[1], "new Stream")));
  stream_ids()[s] = g_next_stream_id++;
  return NativeStream::make(info.Env(), dev, s, true);
}

Napi::Value default_stream_js(const Napi::CallbackInfo& info) {
  return NativeStream::make(info.Env(), device_index(info[0], "cuda.defaultStream"), nullptr, false);
}

Napi::Value current_stream_js(const Napi::CallbackInfo& info) {
  int dev = device_index(info[0], "cuda.currentStream");
  return NativeStream::make(info.Env(), dev, gpu::current_stream(dev), false);
}

Napi::Value set_current_stream_js(const Napi::CallbackInfo& info) {
  int dev = device_index(info[0], "cuda.withStream");
  NativeStream* s = NativeStream::from(info[1], "cuda.withStream");
  FL_CHECK(s->device_ == dev, "cuda.withStream: stream of cuda:", s->device_, " given for cuda:", dev);
  gpu::set_current_stream(dev, s->stream_);
  return info.Env().Undefined();
}

Napi::Value event_create_js(const Napi::CallbackInfo& info) {
  int dev = device_index(info[0], "new Event");
  void* e = gpu::event_create(dev, bool_arg(info[1], "new Event"));
  Napi::Object o = addon_data(info.Env()).event.New({});
  NativeEvent* ev = NativeEvent::Unwrap(o);
  ev->device_ = dev;
  ev->event_ = e;
  return o;
}

Napi::Value record_stream_js(const Napi::CallbackInfo& info) {
  const Tensor& t = tensor_arg(info, 0, "recordStream");
  NativeStream* s = NativeStream::from(info[1], "recordStream");
  FL_CHECK(t.is_cuda() && t.device().index == s->device_, "recordStream: tensor ", t.desc(), " and stream of cuda:",
           s->device_);
  gpu::record_stream(t.storage->block, s->stream_);
  return info.Env().Undefined();
}

// ---- devices ----------------------------------------------------------------------------------------------

Napi::Value cuda_available_js(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), gpu::available()); }
Napi::Value cuda_reason_js(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), gpu::unavailable_reason());
}
Napi::Value device_count_js(const Napi::CallbackInfo& info) { return N(info.Env(), gpu::device_count()); }
Napi::Value current_device_js(const Napi::CallbackInfo& info) { return N(info.Env(), gpu::current_device()); }
Napi::Value set_device_js(const Napi::CallbackInfo& info) {
  gpu::set_device(device_index(info[0], "cuda.setDevice"));
  return info.Env().Undefined();
}
Napi::Value synchronize_js(const Napi::CallbackInfo& info) {
  gpu::synchronize(device_index(info[0], "cuda.synchronize"));
  return info.Env().Undefined();
}
Napi::Value device_props_js(const Napi::CallbackInfo& info) {
  gpu::DeviceProps p = gpu::device_props(device_index(info[0], "cuda.deviceProperties"));
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", Napi::String::New(env, p.name));
  o.Set("major", N(env, p.major));
  o.Set("minor", N(env, p.minor));
  o.Set("totalMemory", N(env, double(p.total_memory)));
  o.Set("multiProcessorCount", N(env, p.multi_processor_count));
  o.Set("l2CacheSize", N(env, p.l2_cache_size));
  o.Set("sharedMemPerBlockOptin", N(env, p.shared_mem_per_block_optin));
  return o;
}

// ---- memory -----------------------------------------------------------------------------------------------

Napi::Object by_tag(Napi::Env env, const std::map<std::string, int64_t>& m) {
  Napi::Object o = Napi::Object::New(env);
  for (const auto& [tag, bytes] : m) o.Set(tag, N(env, double(bytes)));
  return o;
}

Napi::Value memory_stats_js(const Napi::CallbackInfo& info) {
  gpu::DeviceStats s = gpu::device_stats(device_index(info[0], "memory.stats"));
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("allocated", N(env, double(s.allocated)));
  o.Set("reserved", N(env, double(s.reserved)));
  o.Set("peakAllocated", N(env, double(s.peak_allocated)));
  o.Set("peakReserved", N(env, double(s.peak_reserved)));
  o.Set("numAllocs", N(env, double(s.num_allocs)));
  o.Set("numFrees", N(env, double(s.num_frees)));
  o.Set("numCudaMallocs", N(env, double(s.num_cuda_mallocs)));
  o.Set("numCudaFrees", N(env, double(s.num_cuda_frees)));
  o.Set("free", N(env, double(s.free)));
  o.Set("total", N(env, double(s.total)));
  o.Set("graphReserved", N(env, double(s.graph_reserved)));
  o.Set("graphPools", N(env, double(s.graph_pools)));
  std::map<std::string, int64_t> tags;
  for (const auto& [id, bytes] : s.by_tag) tags[mem::tag_name(id)] = bytes;
  o.Set("byTag", by_tag(env, tags));
  return o;
}

Napi::Value reset_peak_js(const Napi::CallbackInfo& info) {
  gpu::reset_peak(device_index(info[0], "memory.resetPeak"));
  return info.Env().Undefined();
}

Napi::Value empty_cache_js(const Napi::CallbackInfo& info) {
  gpu::empty_cache(device_index(info[0], "memory.emptyCache"));
  return info.Env().Undefined();
}

Napi::Value set_tag_js(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), mem::set_tag(string_arg(info[0], "memory.withTag")));
}

Napi::Value host_stats_js(const Napi::CallbackInfo& info) {
  mem::HostStats s = mem::host_stats();
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("allocated", N(env, double(s.allocated)));
  o.Set("peakAllocated", N(env, double(s.peak_allocated)));
  o.Set("pinned", N(env, double(s.pinned)));
  o.Set("peakPinned", N(env, double(s.peak_pinned)));
  o.Set("numAllocs", N(env, double(s.num_allocs)));
  o.Set("numFrees", N(env, double(s.num_frees)));
  o.Set("byTag", by_tag(env, s.by_tag));
  return o;
}

Napi::Value reset_host_peak_js(const Napi::CallbackInfo& info) {
  mem::reset_host_peak();
  return info.Env().Undefined();
}

// ---- pinned buffers ---------------------------------------------------------------------------------------

// Owned jointly by the buffer object (dispose frees at once) and the ArrayBuffer's finalizer (which frees if
// dispose never ran, and deletes this record), so JS views can never outlive the memory.
struct PinnedBlock {
  void* ptr = nullptr;
  size_t bytes = 0;
  bool pinned = false;
  int tag = 0;
  bool freed = false;
  bool finalized = false;
  bool owner_alive = true;
};

void free_block(PinnedBlock* b) {
  if (!b->freed) {
    mem::host_free(b->ptr, b->bytes, b->pinned, b->tag);
    b->freed = true;
  }
}

class NativePinned : public Napi::ObjectWrap<NativePinned> {
 public:
  static Napi::Function define(Napi::Env env) {
    Napi::Function cls = DefineClass(env, "NativePinned",
                                     {
                                         InstanceAccessor<&NativePinned::buffer>("buffer"),
                                         InstanceAccessor<&NativePinned::byte_length>("byteLength"),
                                         InstanceAccessor<&NativePinned::pinned>("pinned"),
                                         InstanceAccessor<&NativePinned::disposed>("disposed"),
                                         InstanceMethod<&NativePinned::dispose>("dispose"),
                                     });
    addon_data(env).pinned = Napi::Persistent(cls);
    return cls;
  }
  explicit NativePinned(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativePinned>(info) {}
  ~NativePinned() override {
    if (block_) {
      block_->owner_alive = false;
      if (block_->finalized) delete block_;
    }
  }

  void init(Napi::Env env, size_t bytes) {
    block_ = new PinnedBlock;
    block_->bytes = bytes;
    block_->tag = mem::current_tag();
    block_->ptr = mem::host_alloc(bytes, true, &block_->pinned, block_->tag);
    Napi::ArrayBuffer ab;
    if (bytes == 0) {
      ab = Napi::ArrayBuffer::New(env, 0);
      free_block(block_);
      block_->finalized = true;
    } else {
      ab = Napi::ArrayBuffer::New(env, block_->ptr, bytes, [](Napi::Env, void*, PinnedBlock* b) {
        free_block(b);
        b->finalized = true;
        if (!b->owner_alive) delete b;
      }, block_);
    }
    buffer_ = Napi::Persistent(ab);
  }

 private:
  Napi::Value buffer(const Napi::CallbackInfo&) { return buffer_.Value(); }
  Napi::Value byte_length(const Napi::CallbackInfo& info) { return N(info.Env(), disposed_ ? 0 : double(block_->bytes)); }
  Napi::Value pinned(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), block_->pinned); }
  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    if (!disposed_) {
      disposed_ = true;
      Napi::ArrayBuffer ab = buffer_.Value();
      if (block_->bytes > 0) ab.Detach();  // views become length 0 before the memory goes
      free_block(block_);
    }
    return info.Env().Undefined();
  }

  PinnedBlock* block_ = nullptr;
  Napi::Reference<Napi::ArrayBuffer> buffer_;
  bool disposed_ = false;
};

Napi::Value pinned_alloc_js(const Napi::CallbackInfo& info) {
  double bytes = number_arg(info[0], "pinned");
  FL_CHECK(bytes >= 0 && bytes == double(int64_t(bytes)), "pinned: invalid size ", bytes);
  Napi::Object o = addon_data(info.Env()).pinned.New({});
  NativePinned::Unwrap(o)->init(info.Env(), size_t(bytes));
  return o;
}

// ---- random -----------------------------------------------------------------------------------------------

class NativeGenerator : public Napi::ObjectWrap<NativeGenerator> {
 public:
  static Napi::Function define(Napi::Env env) {
    Napi::Function cls = DefineClass(env, "NativeGenerator",
                                     {
                                         InstanceMethod<&NativeGenerator::manual_seed>("manualSeed"),
                                         InstanceAccessor<&NativeGenerator::seed>("seed"),
                                     });
    addon_data(env).generator = Napi::Persistent(cls);
    return cls;
  }
  explicit NativeGenerator(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeGenerator>(info) {}
  cpu::Mt19937 mt;

  static uint64_t seed_arg(const Napi::Value& v) {
    if (!v.IsBigInt()) fail("Generator: the seed must be a bigint");
    bool lossless = true;
    uint64_t s = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) {
      // negative seeds wrap like torch's (uint64 of the two's complement)
      s = uint64_t(v.As<Napi::BigInt>().Int64Value(&lossless));
    }
    return s;
  }

 private:
  Napi::Value manual_seed(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      mt.seed_with(seed_arg(info[0]));
      return info.Env().Undefined();
    });
  }
  Napi::Value seed(const Napi::CallbackInfo& info) { return Napi::BigInt::New(info.Env(), mt.seed); }
};

Napi::Value generator_create_js(const Napi::CallbackInfo& info) {
  Napi::Object o = addon_data(info.Env()).generator.New({});
  NativeGenerator::Unwrap(o)->mt.seed_with(NativeGenerator::seed_arg(info[0]));
  return o;
}

Napi::Value randn_js(const Napi::CallbackInfo& info) {
  if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(addon_data(info.Env()).generator.Value())) {
    fail("Tensor.randn: expected a Generator");
  }
  NativeGenerator* g = NativeGenerator::Unwrap(info[0].As<Napi::Object>());
  Shape shape = shape_arg(info[1], "Tensor.randn");
  DType dtype = dtype_arg(info[2], "Tensor.randn");
  Device device = device_arg(info[3], "Tensor.randn");
  FL_CHECK(is_float(dtype), "Tensor.randn: dtype must be a float type");
  std::vector<float> values(size_t(numel_of(shape)));
  cpu::randn_float(g->mt, values.data(), int64_t(values.size()));
  return NativeTensor::wrap(info.Env(), ops::from_host(values.data(), values.size() * sizeof(float), DType::F32, shape,
                                                       dtype, device));
}

Napi::Value random_normal_js(const Napi::CallbackInfo& info) {
  const char* w = "Tensor.randn";
  if (!info[3].IsBigInt()) fail("Tensor.randn: the seed must be a bigint");
  bool lossless = true;
  uint64_t seed = info[3].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) seed = uint64_t(info[3].As<Napi::BigInt>().Int64Value(&lossless));
  return NativeTensor::wrap(info.Env(), ops::randn_philox(shape_arg(info[0], w), dtype_arg(info[1], w),
                                                          device_arg(info[2], w), seed, float(number_arg(info[4], w)),
                                                          float(number_arg(info[5], w))));
}

// ---- CUDA graphs ------------------------------------------------------------------------------------------

class NativeGraph : public Napi::ObjectWrap<NativeGraph> {
 public:
  static Napi::Function define(Napi::Env env) {
    Napi::Function cls = DefineClass(env, "NativeGraph",
                                     {
                                         InstanceAccessor<&NativeGraph::device>("device"),
                                         InstanceAccessor<&NativeGraph::memory_bytes>("memoryBytes"),
                                         InstanceAccessor<&NativeGraph::disposed>("disposed"),
                                         InstanceMethod<&NativeGraph::end>("endCapture"),
                                         InstanceMethod<&NativeGraph::abort>("abortCapture"),
                                         InstanceMethod<&NativeGraph::replay>("replay"),
                                         InstanceMethod<&NativeGraph::dispose>("dispose"),
                                     });
    addon_data(env).graph = Napi::Persistent(cls);
    return cls;
  }
  explicit NativeGraph(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeGraph>(info) {}
  ~NativeGraph() override { release(); }

  void* graph_ = nullptr;
  int device_ = 0;

 private:
  void release() {
    if (graph_) gpu::graph_destroy(graph_);
    graph_ = nullptr;
  }
  void* get(const char* what) {
    if (!graph_) fail(cat(what, ": the graph was disposed"), kErrDisposed);
    return graph_;
  }
  Napi::Value device(const Napi::CallbackInfo& info) { return N(info.Env(), device_); }
  Napi::Value memory_bytes(const Napi::CallbackInfo& info) {
    return N(info.Env(), graph_ ? double(gpu::graph_pool_bytes(graph_)) : 0.0);
  }
  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), graph_ == nullptr); }
  Napi::Value end(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      gpu::graph_capture_end(get("cuda.captureGraph"));
      return info.Env().Undefined();
    });
  }
  Napi::Value abort(const Napi::CallbackInfo& info) {
    if (graph_) gpu::graph_capture_abort(graph_);
    return info.Env().Undefined();
  }
  Napi::Value replay(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      gpu::graph_replay(get("CudaGraph.replay"));
      return info.Env().Undefined();
    });
  }
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    release();
    return info.Env().Undefined();
  }
};

Napi::Value graph_capture_begin_js(const Napi::CallbackInfo& info) {
  int dev = device_index(info[0], "cuda.captureGraph");
  void* g = gpu::graph_capture_begin(dev);
  Napi::Object o = addon_data(info.Env()).graph.New({});
  NativeGraph* ng = NativeGraph::Unwrap(o);
  ng->graph_ = g;
  ng->device_ = dev;
  return o;
}

Napi::Value is_capturing_js(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), gpu::capturing(device_index(info[0], "cuda.isCapturing")));
}

Napi::Value route_counts_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  for (const auto& [name, n] : gpu::route_counts()) o.Set(name, N(env, double(n)));
  return o;
}

Napi::Value profile_begin_js(const Napi::CallbackInfo& info) {
  gpu::profile_begin();
  return info.Env().Undefined();
}

// [[op, ms], ...] in launch order.
Napi::Value profile_end_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<gpu::OpTime> times = gpu::profile_end();
  Napi::Array out = Napi::Array::New(env, times.size());
  for (size_t i = 0; i < times.size(); i++) {
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(uint32_t(0), Napi::String::New(env, times[i].op));
    pair.Set(uint32_t(1), N(env, times[i].ms));
    out.Set(uint32_t(i), pair);
  }
  return out;
}

Napi::Value reset_route_counts_js(const Napi::CallbackInfo& info) {
  gpu::reset_route_counts();
  return info.Env().Undefined();
}

// ---- threads ----------------------------------------------------------------------------------------------

Napi::Value set_threads_js(const Napi::CallbackInfo& info) {
  int64_t n = int_arg(info[0], "threads.set");
  FL_CHECK(n >= 1 && n <= 1024, "threads.set: invalid thread count ", n);
  set_num_threads(int(n));
  return info.Env().Undefined();
}

Napi::Value get_threads_js(const Napi::CallbackInfo& info) { return N(info.Env(), num_threads()); }

}  // namespace

void register_cuda_functions(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeStream", NativeStream::define(env));
  exports.Set("NativeEvent", NativeEvent::define(env));
  exports.Set("NativePinned", NativePinned::define(env));
  exports.Set("NativeGenerator", NativeGenerator::define(env));
  exports.Set("NativeGraph", NativeGraph::define(env));
#define FL_EXPORT(name, fn) exports.Set(name, Napi::Function::New<guarded<fn>>(env, name))
  FL_EXPORT("cudaAvailable", cuda_available_js);
  FL_EXPORT("cudaUnavailableReason", cuda_reason_js);
  FL_EXPORT("deviceCount", device_count_js);
  FL_EXPORT("currentDevice", current_device_js);
  FL_EXPORT("setDevice", set_device_js);
  FL_EXPORT("synchronize", synchronize_js);
  FL_EXPORT("deviceProperties", device_props_js);
  FL_EXPORT("streamCreate", stream_create_js);
  FL_EXPORT("defaultStream", default_stream_js);
  FL_EXPORT("currentStream", current_stream_js);
  FL_EXPORT("setCurrentStream", set_current_stream_js);
  FL_EXPORT("eventCreate", event_create_js);
  FL_EXPORT("recordStream", record_stream_js);
  FL_EXPORT("memoryStats", memory_stats_js);
  FL_EXPORT("resetPeak", reset_peak_js);
  FL_EXPORT("emptyCache", empty_cache_js);
  FL_EXPORT("setAllocationTag", set_tag_js);
  FL_EXPORT("hostStats", host_stats_js);
  FL_EXPORT("resetHostPeak", reset_host_peak_js);
  FL_EXPORT("pinnedAlloc", pinned_alloc_js);
  FL_EXPORT("generatorCreate", generator_create_js);
  FL_EXPORT("randn", randn_js);
  FL_EXPORT("randomNormal", random_normal_js);
  FL_EXPORT("graphCaptureBegin", graph_capture_begin_js);
  FL_EXPORT("isCapturing", is_capturing_js);
  FL_EXPORT("routeCounts", route_counts_js);
  FL_EXPORT("resetRouteCounts", reset_route_counts_js);
  FL_EXPORT("profileBegin", profile_begin_js);
  FL_EXPORT("profileEnd", profile_end_js);
  FL_EXPORT("setNumThreads", set_threads_js);
  FL_EXPORT("getNumThreads", get_threads_js);
#undef FL_EXPORT
}

}  // namespace fl::js
