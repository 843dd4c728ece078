// See cublas.h. The library is opened once per process (libcublas.so.13, then
// libcublas.so); aigc_engine/text/native.py preloads the nvidia-cublas wheel's copy with
// RTLD_GLOBAL first, so that the soname resolves to it.
#include "cuda/cublas.h"

#include <dlfcn.h>

#include <climits>
#include <mutex>
#include <stdexcept>
#include <string>

namespace aigc::cuda {
namespace {

// cublas_api.h: cublasStatus_t, cublasOperation_t and cublasMath_t are C enums (int).
using Status = int;
constexpr Status kSuccess = 0;        // CUBLAS_STATUS_SUCCESS
constexpr int kOpN = 0;               // CUBLAS_OP_N
constexpr int kPedanticMath = 2;      // CUBLAS_PEDANTIC_MATH
using Handle = void*;                 // cublasHandle_t: struct cublasContext*

struct Api {
  Status (*create)(Handle*);                               // cublasCreate_v2
  Status (*destroy)(Handle);                               // cublasDestroy_v2
  Status (*set_stream)(Handle, cudaStream_t);              // cublasSetStream_v2
  Status (*set_math_mode)(Handle, int);                    // cublasSetMathMode
  Status (*sgemm)(Handle, int, int, int, int, int, const float*, const float*, int, const float*, int,
                  const float*, float*, int);              // cublasSgemm_v2
};

template <typename F>
void resolve(void* library, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(library, name));
  if (f == nullptr) throw std::runtime_error(std::string("cuBLAS: the loaded libcublas has no ") + name);
}

const Api& api() {
  static Api loaded{};
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    void* library = dlopen("libcublas.so.13", RTLD_NOW | RTLD_GLOBAL);
    if (library == nullptr) library = dlopen("libcublas.so", RTLD_NOW | RTLD_GLOBAL);
    if (library == nullptr) {
      error = "cuBLAS: cannot load libcublas.so.13, which the CUDA decoder needs (" + std::string(dlerror()) +
              "); install it with `pip install nvidia-cublas` (the aigc-engine[gpu] extra)";
      return;
    }
    try {
      resolve(library, "cublasCreate_v2", loaded.create);
      resolve(library, "cublasDestroy_v2", loaded.destroy);
      resolve(library, "cublasSetStream_v2", loaded.set_stream);
      resolve(library, "cublasSetMathMode", loaded.set_math_mode);
      resolve(library, "cublasSgemm_v2", loaded.sgemm);
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
  });
  if (!error.empty()) throw std::runtime_error(error);
  return loaded;
}

void check(Status status, const char* what) {
  if (status != kSuccess) throw std::runtime_error(std::string("cuBLAS error in ") + what + ": status " +
                                                   std::to_string(status));
}

int as_int(int64_t value, const char* what) {
  if (value > INT_MAX) throw std::invalid_argument(std::string("cuBLAS: ") + what + " over 2**31 - 1");
  return static_cast<int>(value);
}

}  // namespace

Cublas::Cublas(cudaStream_t stream) {
  const Api& a = api();
  Handle handle = nullptr;
  check(a.create(&handle), "cublasCreate");
  handle_ = handle;
  try {
    check(a.set_stream(handle, stream), "cublasSetStream");
    check(a.set_math_mode(handle, kPedanticMath), "cublasSetMathMode");
  } catch (...) {
    a.destroy(handle);
    throw;
  }
}

Cublas::~Cublas() {
  if (handle_ != nullptr) api().destroy(static_cast<Handle>(handle_));
}

void Cublas::matmul(const float* x, const float* w, float* y, int64_t m, int64_t k, int64_t n) {
  // cuBLAS is column-major: row-major y (m, n) is column-major yᵀ (n, m) = wᵀ (n, k) · xᵀ (k, m),
  // and row-major w (k, n), x (m, k) are column-major wᵀ (ld n), xᵀ (ld k) as they lie.
  const float one = 1.0f, zero = 0.0f;
  const int mi = as_int(m, "rows"), ki = as_int(k, "k"), ni = as_int(n, "n");
  check(api().sgemm(static_cast<Handle>(handle_), kOpN, kOpN, ni, mi, ki, &one, w, ni, x, ki, &zero, y, ni),
        "cublasSgemm");
}

}  // namespace aigc::cuda
