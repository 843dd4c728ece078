// The LSTM cell's element-wise update (cpu/lstm_cell.cc), one row per sequence: the gate
// pre-activations are input[input_rows[r]] (x·W_ihᵀ + b_ih + b_hh, (tokens, 4·hidden)) plus
// recurrent[r] (h·W_hhᵀ, (rows, 4·hidden)), in torch's gate order i, f, g, o; then
//   c ← σ(f)·c + σ(i)·tanh(g),   h = σ(o)·tanh(c),   σ(x) = (1 + tanh(x / 2)) / 2.
// c (rows, hidden) is updated in place; h (rows, hidden) is written (it may be the rows
// the recurrent projection read). Every row's numbers depend on that row only.
#pragma once

#include <cstdint>

#include "aigc/isa.h"

namespace aigc {

struct LstmCellParams {
  const float* input;         // (tokens, 4 * hidden)
  const int64_t* input_rows;  // (rows,) which input row each row adds
  const float* recurrent;     // (rows, 4 * hidden)
  float* c;                   // (rows, hidden), in place
  float* h;                   // (rows, hidden)
  int64_t rows, hidden;
};

// Threaded over rows.
void lstm_cell(const LstmCellParams& p);

}  // namespace aigc

AIGC_ISA_DECLARE(void, lstm_cell_rows, (const LstmCellParams& p, int64_t first, int64_t last))
