// Float linear for the few rows of a decode step: y = x W^T + bias, W packed by runtime/decoder_linear.py as
// [panels, K, 32] (32 output channels per panel, k-major inside it), float32 or bfloat16.
//
// Why by hand: a decode step's linears are matrix-vector products whose weights come from memory, not cache
// (every layer's are read once per step). torch's fp32 GEMV reads them well below this machine's bandwidth
// (benchmarks/decoder_kernels.py). Here each thread streams whole panels, one sequential read each, with a
// software prefetch ahead of it, and keeps the sums of every row in registers over all of K. bf16 weights are
// widened to fp32 as they are loaded (exact), so activations and sums stay fp32.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__AVX512F__)
#include <immintrin.h>
#define DEPLOYLM_AVX512 1
#define DEPLOYLM_AVX2 0
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define DEPLOYLM_AVX512 0
#define DEPLOYLM_AVX2 1
#else
#define DEPLOYLM_AVX512 0
#define DEPLOYLM_AVX2 0
#endif

namespace {

constexpr int kWidth = 32;            // output channels per panel: two 16-float registers
constexpr int kMaxRows = 8;           // rows per register block
// Bytes ahead of the panel stream to prefetch: the hardware prefetcher alone left these reads well below the
// machine's bandwidth (chosen by timing, as for int8_linear.cpp).
constexpr int64_t kPrefetch = 4096;

struct Problem {
  const float* x;   // [M, K]
  const void* w;    // [panels, K, kWidth] float or bf16
  const float* bias;
  float* y;         // [M, N]
  int64_t M, K, N;
};

#if DEPLOYLM_AVX512
inline void load_weights(const float* w, __m512& lo, __m512& hi) {
  lo = _mm512_loadu_ps(w);
  hi = _mm512_loadu_ps(w + 16);
}

inline void load_weights(const uint16_t* w, __m512& lo, __m512& hi) {
  const __m512i raw = _mm512_loadu_si512(w);  // 32 bf16: the upper 16 bits of 32 floats
  lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(raw)), 16));
  hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(raw, 1)), 16));
}

template <typename W, int MR>
void panel_block(const Problem& p, int64_t m0, int64_t panel) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  const W* w = static_cast<const W*>(p.w) + panel * p.K * kWidth;
  const float* x = p.x + m0 * p.K;
  constexpr int64_t ahead = kPrefetch / sizeof(W);
  for (int64_t k = 0; k < p.K; ++k, w += kWidth) {
    _mm_prefetch(reinterpret_cast<const char*>(w + ahead), _MM_HINT_T0);
    if (sizeof(W) == 4) _mm_prefetch(reinterpret_cast<const char*>(w + ahead + 16), _MM_HINT_T0);
    __m512 lo, hi;
    load_weights(w, lo, hi);
    for (int i = 0; i < MR; ++i) {
      const __m512 xi = _mm512_set1_ps(x[i * p.K + k]);
      acc[i][0] = _mm512_fmadd_ps(xi, lo, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(xi, hi, acc[i][1]);
    }
  }
  for (int j = 0; j < 2; ++j) {
    const int64_t n0 = panel * kWidth + j * 16;
    if (n0 >= p.N) break;
    const int64_t valid = std::min<int64_t>(16, p.N - n0);
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
    const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + n0) : _mm512_setzero_ps();
    for (int i = 0; i < MR; ++i)
      _mm512_mask_storeu_ps(p.y + (m0 + i) * p.N + n0, mask, _mm512_add_ps(acc[i][j], bias));
  }
}

template <typename W>
void rows_block(const Problem& p, int64_t m0, int64_t rows, int64_t panel) {
  switch (rows) {
    case 1: return panel_block<W, 1>(p, m0, panel);
    case 2: return panel_block<W, 2>(p, m0, panel);
    case 3: return panel_block<W, 3>(p, m0, panel);
    case 4: return panel_block<W, 4>(p, m0, panel);
    case 5: return panel_block<W, 5>(p, m0, panel);
    case 6: return panel_block<W, 6>(p, m0, panel);
    case 7: return panel_block<W, 7>(p, m0, panel);
    default: return panel_block<W, 8>(p, m0, panel);
  }
}
#endif

#if DEPLOYLM_AVX2
// AVX2 + FMA (CPUs without AVX-512: AMD Zen 1-3, Intel before Skylake-SP): a panel is four 8-float registers,
// and 16 registers hold the sums of at most three rows (12), the rows' broadcast values (3) and one weight
// vector.
constexpr int kMaxRowsAvx2 = 3;

inline __m256 load8(const float* w) { return _mm256_loadu_ps(w); }
inline __m256 load8(const uint16_t* w) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

template <typename W, int MR>
void panel_block_avx2(const Problem& p, int64_t m0, int64_t panel) {
  __m256 acc[MR][4];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm256_setzero_ps();
  const W* w = static_cast<const W*>(p.w) + panel * p.K * kWidth;
  const float* x = p.x + m0 * p.K;
  constexpr int64_t ahead = kPrefetch / sizeof(W);
  for (int64_t k = 0; k < p.K; ++k, w += kWidth) {
    _mm_prefetch(reinterpret_cast<const char*>(w + ahead), _MM_HINT_T0);
    if (sizeof(W) == 4) _mm_prefetch(reinterpret_cast<const char*>(w + ahead + 16), _MM_HINT_T0);
    __m256 xi[MR];
    for (int i = 0; i < MR; ++i) xi[i] = _mm256_broadcast_ss(x + i * p.K + k);
    for (int j = 0; j < 4; ++j) {
      const __m256 wj = load8(w + j * 8);
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm256_fmadd_ps(xi[i], wj, acc[i][j]);
    }
  }
  for (int j = 0; j < 4; ++j) {
    const int64_t n0 = panel * kWidth + j * 8;
    if (n0 >= p.N) break;
    const int64_t valid = std::min<int64_t>(8, p.N - n0);
    for (int i = 0; i < MR; ++i) {
      float* out = p.y + (m0 + i) * p.N + n0;
      if (valid == 8) {
        const __m256 bias = p.bias ? _mm256_loadu_ps(p.bias + n0) : _mm256_setzero_ps();
        _mm256_storeu_ps(out, _mm256_add_ps(acc[i][j], bias));
        continue;
      }
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, acc[i][j]);
      for (int c = 0; c < valid; ++c) out[c] = tmp[c] + (p.bias ? p.bias[n0 + c] : 0.f);
    }
  }
}

template <typename W>
void rows_block_avx2(const Problem& p, int64_t m0, int64_t rows, int64_t panel) {
  switch (rows) {
    case 1: return panel_block_avx2<W, 1>(p, m0, panel);
    case 2: return panel_block_avx2<W, 2>(p, m0, panel);
    default: return panel_block_avx2<W, 3>(p, m0, panel);
  }
}
#endif

inline float widen(float v) { return v; }
inline float widen(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// The same sums one channel at a time (CPUs without AVX2; decoder_linear prefers torch there).
template <typename W>
void scalar_panel(const Problem& p, int64_t panel) {
  const W* w = static_cast<const W*>(p.w) + panel * p.K * kWidth;
  for (int64_t m = 0; m < p.M; ++m)
    for (int c = 0; c < kWidth; ++c) {
      const int64_t n = panel * kWidth + c;
      if (n >= p.N) break;
      float sum = 0.f;
      for (int64_t k = 0; k < p.K; ++k) sum += p.x[m * p.K + k] * widen(w[k * kWidth + c]);
      p.y[m * p.N + n] = sum + (p.bias ? p.bias[n] : 0.f);
    }
}

template <typename W>
void run(const Problem& p, int64_t panels) {
  // Split channels, not rows: a thread reads each weight once.
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t panel = begin; panel < end; ++panel) {
#if DEPLOYLM_AVX512
      for (int64_t m = 0; m < p.M; m += kMaxRows) rows_block<W>(p, m, std::min<int64_t>(kMaxRows, p.M - m), panel);
#elif DEPLOYLM_AVX2
      for (int64_t m = 0; m < p.M; m += kMaxRowsAvx2)
        rows_block_avx2<W>(p, m, std::min<int64_t>(kMaxRowsAvx2, p.M - m), panel);
#else
      scalar_panel<W>(p, panel);
#endif
    }
  });
}

}  // namespace

// The instruction set float_linear's loop uses: "avx512", "avx2", or "" (the scalar loop).
std::string float_simd() { return DEPLOYLM_AVX512 ? "avx512" : (DEPLOYLM_AVX2 ? "avx2" : ""); }

// x [M, K] float32; packed [panels, K, 32] float32 or bfloat16; bias [N] float32 or empty; n: output features
// (panels * 32 minus the padding). Returns [M, n] float32.
torch::Tensor float_linear(torch::Tensor x, torch::Tensor packed, c10::optional<torch::Tensor> bias, int64_t n) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "float_linear: x must be float32 [rows, in]");
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == kWidth && packed.is_contiguous() &&
              (packed.scalar_type() == at::kFloat || packed.scalar_type() == at::kBFloat16),
              "float_linear: packed must be float32 or bfloat16 [panels, in, ", kWidth, "]");
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), panels = packed.size(0);
  TORCH_CHECK(packed.size(1) == K, "float_linear: x has ", K, " features, the weights ", packed.size(1));
  TORCH_CHECK(n > 0 && n <= panels * kWidth && n > (panels - 1) * kWidth, "float_linear: ", n,
              " outputs do not fit ", panels, " panels");
  const float* bp = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->numel() == n && bias->scalar_type() == at::kFloat && bias->is_contiguous(), "float_linear: bias");
    bp = bias->data_ptr<float>();
  }
  auto y = torch::empty({M, n}, x.options());
  if (M == 0) return y;
  const Problem p{x.data_ptr<float>(), packed.data_ptr(), bp, y.data_ptr<float>(), M, K, n};
  if (packed.scalar_type() == at::kFloat) run<float>(p, panels);
  else run<uint16_t>(p, panels);
  return y;
}
