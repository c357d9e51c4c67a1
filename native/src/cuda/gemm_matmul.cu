// Batched matmul with numpy batch broadcasting.
#include "gemm.cuh"

namespace fl::cuda {

namespace {

// Operand whose batch offset follows broadcast strides (in matrices) over the output's batch dims.
template <class Base>
struct Batched : Base {
  Strided batch;
  int op;
  int64_t matrix;  // elements per matrix
  __device__ void set_batch(int64_t b) { this->p = this->base + strided_offset(batch, op, b) * matrix; }
};

}  // namespace

void matmul(const void* a, const void* b, void* out, DType dt, int64_t M, int64_t N, int64_t K, const Strided& batch,
            cudaStream_t s) {
  gemm::check_grid(M, "ops.matmul");
  int64_t batches = 1;
  for (int d = 0; d < batch.nd; d++) batches *= batch.shape[d];
  FL_CUDA_FLOAT_SWITCH(dt, T, {
    Batched<gemm::RowsK<T>> la;
    la.base = la.p = static_cast<const T*>(a);
    la.rows = M;
    la.K = K;
    la.batch = batch;
    la.op = 1;
    la.matrix = M * K;
    Batched<gemm::KCols<T>> lb;
    lb.base = lb.p = static_cast<const T*>(b);
    lb.cols = N;
    lb.K = K;
    lb.batch = batch;
    lb.op = 2;
    lb.matrix = K * N;
    gemm::StoreRows<T> st{static_cast<T*>(out), static_cast<T*>(out), nullptr, N, M * N};
    gemm::gemm_kernel<<<gemm::grid(M, N, batches), gemm::kThreads, 0, s>>>(M, N, K, batches, la, lb, st);
  });
}

}  // namespace fl::cuda
