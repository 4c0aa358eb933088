// The small per-layer ops of the lean decoder forward (runtime/decoder_fastpath.py), one call each.
//
// Why by hand: at one token per sequence, transformers' RMSNorm (eight tensor ops) and rotary embedding (seven)
// cost more in per-op overhead than in arithmetic, sixty-odd small ops per layer in all; torch.compile would fuse
// them but its guards cost as much per layer as they save on this project's CPUs (decoder_fastpath.py). Same
// formulas as transformers' Llama modules, in float32; only the summation order of the norm's mean differs.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>

namespace {

void check_rows(const torch::Tensor& x, const char* what) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), what,
              " must be a contiguous float32 [tokens, hidden] tensor");
}

// out = x / sqrt(mean(x^2) + eps) * w, one row.
inline void norm_row(const float* x, const float* w, float* out, int64_t n, float eps) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += x[i] * x[i];
  const float inv = 1.f / std::sqrt(sum / static_cast<float>(n) + eps);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

}  // namespace

torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  check_rows(x, "rms_norm: x");
  TORCH_CHECK(weight.numel() == x.size(1) && weight.is_contiguous() && weight.scalar_type() == at::kFloat,
              "rms_norm: weight must be float32 [hidden]");
  auto out = torch::empty_like(x);
  const int64_t n = x.size(1);
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, x.size(0), 64, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) norm_row(xp + t * n, wp, op + t * n, n, static_cast<float>(eps));
  });
  return out;
}

// x += residual (in place), then rms_norm(x): the residual add of one sub-layer and the norm of the next.
torch::Tensor add_rms_norm_(torch::Tensor x, torch::Tensor residual, torch::Tensor weight, double eps) {
  check_rows(x, "add_rms_norm_: x");
  check_rows(residual, "add_rms_norm_: residual");
  TORCH_CHECK(residual.sizes() == x.sizes(), "add_rms_norm_: x and residual differ in shape");
  TORCH_CHECK(weight.numel() == x.size(1) && weight.is_contiguous() && weight.scalar_type() == at::kFloat,
              "add_rms_norm_: weight must be float32 [hidden]");
  auto out = torch::empty_like(x);
  const int64_t n = x.size(1);
  float* xp = x.data_ptr<float>();
  const float* rp = residual.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, x.size(0), 64, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* row = xp + t * n;
      const float* r = rp + t * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) row[i] += r[i];
      norm_row(row, wp, op + t * n, n, static_cast<float>(eps));
    }
  });
  return out;
}

// In place on the first `heads` heads of every row of qkv [tokens, width] (the query heads, then the key heads):
// x * cos + rotate_half(x) * sin, with cos/sin [tokens, head_dim] and rotate_half(x) = (-x2, x1).
void rotary_(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, int64_t heads, int64_t head_dim) {
  check_rows(qkv, "rotary_: qkv");
  check_rows(cos, "rotary_: cos");
  check_rows(sin, "rotary_: sin");
  TORCH_CHECK(cos.size(0) == qkv.size(0) && cos.size(1) == head_dim && sin.sizes() == cos.sizes(),
              "rotary_: cos/sin must be [tokens, head_dim]");
  TORCH_CHECK(head_dim % 2 == 0 && heads * head_dim <= qkv.size(1), "rotary_: heads do not fit the rows");
  const int64_t width = qkv.size(1), half = head_dim / 2;
  float* base = qkv.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  at::parallel_for(0, qkv.size(0), 16, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* c = cp + t * head_dim;
      const float* s = sp + t * head_dim;
      for (int64_t h = 0; h < heads; ++h) {
        float* x = base + t * width + h * head_dim;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float a = x[i], b2 = x[i + half];
          x[i] = a * c[i] - b2 * s[i];
          x[i + half] = b2 * c[i + half] + a * s[i + half];
        }
      }
    }
  });
}
