#include <vector>

#include "../cpu/kernels.h"
#include "common.h"

namespace fl::ops {

NF4 nf4_quantize(const Tensor& w, int64_t blocksize, bool double_quant, int64_t nested_blocksize) {
  check_float("nf4Quantize", "w", w);
  FL_CHECK(w.ndim() == 2, "ops.nf4Quantize: expects a 2-d weight [N,K], got ", w.desc());
  FL_CHECK(blocksize >= 2 && blocksize % 2 == 0 && blocksize <= 4096, "ops.nf4Quantize: invalid blocksize ", blocksize);
  FL_CHECK(!double_quant || nested_blocksize > 0, "ops.nf4Quantize: invalid nested blocksize ", nested_blocksize);
  const Device dev = w.device();
  const int64_t n = w.numel();
  FL_CHECK(n > 0, "ops.nf4Quantize: empty weight ", w.desc());
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  NF4 q;
  q.rows = w.shape[0];
  q.cols = w.shape[1];
  q.blocksize = blocksize;
  q.packed = empty({(n + 1) / 2}, DType::U8, dev);
  Tensor absmax = empty({blocks}, DType::F32, dev);
  q.quant_map = from_host(cpu::kNF4Codes, sizeof(cpu::kNF4Codes), DType::F32, {16}, DType::F32, dev);
  q.standard_codes = true;
  if (dev.is_cpu()) {
    cpu::nf4_quantize(w, blocksize, q.packed.ptr<uint8_t>(), absmax.ptr<float>());
  } else {
    FL_CUDA_LAUNCH(dev, cat("ops.nf4Quantize: ", w.desc()),
                   cuda::nf4_quantize(w.data(), w.dtype, n, blocksize, q.packed.ptr<uint8_t>(), absmax.ptr<float>(),
                                      stream));
  }
  if (!double_quant) {
    q.absmax = absmax;
    q.nested_blocksize = 0;
    return q;
  }
  float map[256];
  cpu::dynamic_map(map);
  q.nested_blocksize = nested_blocksize;
  q.nested_map = from_host(map, sizeof(map), DType::F32, {256}, DType::F32, dev);
  const int64_t nested = (blocks + nested_blocksize - 1) / nested_blocksize;
  q.absmax_codes = empty({blocks}, DType::U8, dev);
  q.nested_absmax = empty({nested}, DType::F32, dev);
  if (dev.is_cpu()) {
    cpu::double_quant(absmax.ptr<float>(), blocks, nested_blocksize, map, q.absmax_codes.ptr<uint8_t>(),
                      q.nested_absmax.ptr<float>(), &q.offset);
  } else {
#if FLUXLAB_WITH_CUDA
    Tensor offset = empty({1}, DType::F32, dev);
    Tensor centered = empty({blocks}, DType::F32, dev);
#endif
    FL_CUDA_LAUNCH(dev, cat("ops.nf4Quantize (double quant): ", w.desc()),
                   cuda::double_quant(absmax.ptr<float>(), blocks, nested_blocksize, q.nested_map.ptr<float>(),
                                      q.absmax_codes.ptr<uint8_t>(), q.nested_absmax.ptr<float>(), offset.ptr<float>(),
                                      centered.ptr<float>(), stream));
#if FLUXLAB_WITH_CUDA
    // the offset goes into the quant_state JSON, so it is read back (quantization is a load-time step)
    read_bytes(offset, &q.offset);
#endif
  }
  return q;
}

Tensor nf4_dequantize(const NF4& w, DType dtype) {
  w.check("nf4Dequantize");
  FL_CHECK(is_float(dtype), "ops.nf4Dequantize: dtype must be a float type, got ", dtype_name(dtype));
  Tensor out = empty({w.rows, w.cols}, dtype, w.device());
  NF4View view = w.view();
  if (w.device().is_cpu()) {
    cpu::nf4_dequantize(view, out);
  } else {
#if FLUXLAB_WITH_CUDA
    const int64_t blocks = (w.rows * w.cols + w.blocksize - 1) / w.blocksize;
    Tensor absmax = empty({blocks}, DType::F32, w.device());
#endif
    FL_CUDA_LAUNCH(w.device(), cat("ops.nf4Dequantize: [", w.rows, ",", w.cols, "] to ", dtype_name(dtype)), {
      cuda::nf4_absmax(view, absmax.ptr<float>(), stream);
      cuda::nf4_dequantize(view, absmax.ptr<float>(), out.data(), dtype, stream);
    });
  }
  return out;
}

Tensor nf4_absmax(const NF4& w) {
  w.check("nf4Absmax");
  const int64_t blocks = (w.rows * w.cols + w.blocksize - 1) / w.blocksize;
  Tensor out = empty({blocks}, DType::F32, w.device());
  NF4View view = w.view();
  if (w.device().is_cpu()) {
    cpu::nf4_absmax(view, out.ptr<float>());
  } else {
    FL_CUDA_LAUNCH(w.device(), cat("nf4Absmax: [", w.rows, ",", w.cols, "]"),
                   cuda::nf4_absmax(view, out.ptr<float>(), stream));
  }
  return out;
}

}  // namespace fl::ops
