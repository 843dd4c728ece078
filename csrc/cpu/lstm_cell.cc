// The LSTM cell update (aigc/lstm.h). Compiled with -ffast-math so that tanhf comes from
// glibc's vector math library (libmvec), as in gelu.cc; the sigmoids are tanh too. The
// loop runs over one row's hidden units, so a unit takes the vector body or the scalar
// tail by its index alone, never by how many rows share the call.
#include <cmath>

#include "aigc/lstm.h"

namespace aigc {
namespace AIGC_ISA_NAMESPACE {

namespace {

// One row. The restrict parameters let GCC vectorise the loop (with libmvec's tanhf);
// without them it cannot tell the rows apart and calls the scalar tanhf five times a unit
// (pycode-lstm, 8 rows: ~0.9 of a 1.5 ms step).
void cell_row(const float* __restrict x, const float* __restrict u, float* __restrict c, float* __restrict h,
              int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const float i = 0.5f + 0.5f * std::tanh(0.5f * (x[k] + u[k]));
    const float f = 0.5f + 0.5f * std::tanh(0.5f * (x[n + k] + u[n + k]));
    const float g = std::tanh(x[2 * n + k] + u[2 * n + k]);
    const float o = 0.5f + 0.5f * std::tanh(0.5f * (x[3 * n + k] + u[3 * n + k]));
    const float cell = f * c[k] + i * g;
    c[k] = cell;
    h[k] = o * std::tanh(cell);
  }
}

}  // namespace

void lstm_cell_rows(const LstmCellParams& p, int64_t first, int64_t last) {
  const int64_t n = p.hidden;
  for (int64_t r = first; r < last; ++r) {
    cell_row(p.input + p.input_rows[r] * 4 * n, p.recurrent + r * 4 * n, p.c + r * n, p.h + r * n, n);
  }
}

}  // namespace AIGC_ISA_NAMESPACE
}  // namespace aigc
