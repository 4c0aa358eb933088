// Weight-int8 linear for decoders: y = (x H) (W H)^T * scales + bias in one call (optimize/weight_int8.py).
//
// Why by hand: at the few rows of a decode step, torch's int8 paths pay more around the product than in it
// (rotating, converting and quantising the activations are separate ops, and fbgemm quantises and repacks the
// activations on every call), and neither of its kernels reads the int8 weights at the memory's speed. Here one
// call rotates each row (a fast Walsh-Hadamard transform per block), quantises it to u8 on the row's own range
// (a scale and a zero point per row), and multiplies it with AVX-512 VNNI (u8 x s8 -> s32, no int16 step that
// could saturate) over weights packed so that one 64-byte load feeds 16 output channels.
//
// Integer sums are exact, so every implementation of this formula (the scalar fallback below, the torch
// reference in the tests) gives the same numbers up to the float rounding of the epilogue.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define DEPLOYLM_VNNI 1
#define DEPLOYLM_AVX2 0
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define DEPLOYLM_VNNI 0
#define DEPLOYLM_AVX2 1
#else
#define DEPLOYLM_VNNI 0
#define DEPLOYLM_AVX2 0
#endif

namespace {

constexpr int kTile = 16;   // output channels per 64-byte weight vector
constexpr int kPanel = 2;   // tiles whose weights are interleaved k-step by k-step: one sequential stream
// How far ahead of the panel's stream to prefetch, in bytes: the hardware prefetcher alone left the decode
// matrix-vector products well below this machine's read bandwidth (chosen by timing 0 to 8 KiB ahead).
constexpr int64_t kPrefetch = 8192;
constexpr int kGroup = 4;   // k values per 32-bit lane (VNNI sums groups of four byte products)

// In place, natural (Sylvester) order, unnormalised: H_{2n} = [[H, H], [H, -H]], as weight_int8.hadamard.
void fwht(float* v, int64_t n) {
  for (int64_t h = 1; h < n; h <<= 1) {
    for (int64_t i = 0; i < n; i += h << 1) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
}

#if DEPLOYLM_VNNI
// One butterfly stage of the transform inside a 16-float register: lanes whose `bit` is 0 get a + b, the others
// b - a, where b is the lane `bit` away (the same sums, in the same order, as fwht's scalar loop).
template <int bit>
inline __m512 stage_in_register(__m512 v) {
  __m512 b;
  if (bit == 1) b = _mm512_permute_ps(v, 0xB1);
  else if (bit == 2) b = _mm512_permute_ps(v, 0x4E);
  else if (bit == 4) b = _mm512_shuffle_f32x4(v, v, 0xB1);
  else b = _mm512_shuffle_f32x4(v, v, 0x4E);
  __mmask16 upper = 0;
  for (int i = 0; i < 16; ++i) upper |= ((i & bit) ? 1u : 0u) << i;
  return _mm512_mask_sub_ps(_mm512_add_ps(v, b), upper, b, v);
}

// fwht over `block` floats (a multiple of 16) in place.
void fwht16(float* v, int64_t block) {
  for (int64_t r = 0; r < block; r += 16) {
    __m512 x = _mm512_loadu_ps(v + r);
    x = stage_in_register<8>(stage_in_register<4>(stage_in_register<2>(stage_in_register<1>(x))));
    _mm512_storeu_ps(v + r, x);
  }
  for (int64_t h = 16; h < block; h <<= 1)
    for (int64_t i = 0; i < block; i += h << 1)
      for (int64_t j = i; j < i + h; j += 16) {
        const __m512 a = _mm512_loadu_ps(v + j), b = _mm512_loadu_ps(v + j + h);
        _mm512_storeu_ps(v + j, _mm512_add_ps(a, b));
        _mm512_storeu_ps(v + j + h, _mm512_sub_ps(a, b));
      }
}
#endif

struct RowScale {
  float step;    // the value of one u8 level
  int32_t zero;  // the u8 level of 0
};

// One row: rotate, then quantise to u8 on its own range (asymmetric: a row whose values lean to one side keeps
// all 256 levels for them).
RowScale quantize_row(const float* x, int64_t K, int64_t Kp, int64_t block, float* tmp, uint8_t* out) {
  std::memcpy(tmp, x, K * sizeof(float));
  float norm = 1.f;
#if DEPLOYLM_VNNI
  const bool wide = K % 16 == 0 && block % 16 == 0;  // every register full (block 0: no rotation)
#else
  const bool wide = false;
#endif
  if (block > 0) {
    for (int64_t b = 0; b < K; b += block) {
#if DEPLOYLM_VNNI
      if (wide) { fwht16(tmp + b, block); continue; }
#endif
      fwht(tmp + b, block);
    }
    norm = 1.f / std::sqrt(static_cast<float>(block));
  }
  // The row's range, widened to hold 0 (so 0 and the padding are exact): 255 steps from lo to hi.
  float lo = 0.f, hi = 0.f, poison = 0.f;  // poison: NaN once any value is NaN or infinite
  for (int64_t k = 0; k < K; ++k) {
    lo = std::min(lo, tmp[k]);
    hi = std::max(hi, tmp[k]);
    poison += tmp[k] * 0.f;
  }
  if (!(hi > lo) || std::isnan(poison)) {  // all zeros: 0; a non-finite input: NaN outputs, as fp32 would give
    std::memset(out, 0, Kp);
    return {std::isnan(poison) ? std::numeric_limits<float>::quiet_NaN() : 0.f, 0};
  }
  const float step = (hi - lo) / 255.f, inv = 1.f / step;
  const int32_t zero = static_cast<int32_t>(std::min(255.f, std::max(0.f, std::nearbyint(-lo * inv))));
  int64_t k = 0;
#if DEPLOYLM_VNNI
  if (wide) {  // cvtps rounds to nearest even, as nearbyint does below
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i low = _mm512_setzero_si512(), high = _mm512_set1_epi32(255), zp = _mm512_set1_epi32(zero);
    for (; k < K; k += 16) {
      __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(tmp + k), vinv)), zp);
      q = _mm512_min_epi32(_mm512_max_epi32(q, low), high);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm512_cvtepi32_epi8(q));
    }
  }
#endif
  for (; k < K; ++k) {
    const float q = std::nearbyint(tmp[k] * inv) + static_cast<float>(zero);
    out[k] = static_cast<uint8_t>(std::min(255.f, std::max(0.f, q)));
  }
  std::memset(out + K, static_cast<int>(zero), Kp - K);
  return {step * norm, zero};
}

struct Problem {
  const uint8_t* a;     // [M, Kp] u8 activations
  const int8_t* w;      // [groups, K4, kPanel, 16, 4] packed weights
  const int32_t* wsum;  // [groups * kPanel * 16] row sums of the weights (zero * wsum is taken off every sum)
  const float* ws;      // [N] weight scales
  const RowScale* xs;   // [M] activation scales and zero points
  const float* bias;    // [N] or null
  float* y;             // [M, N]
  int64_t M, N, K4;
};

#if DEPLOYLM_VNNI
// acc += a (u8) . b (s8), in place. Written as asm because GCC 12 copies every accumulator register around each
// _mm512_dpbusd_epi32 intrinsic, twice the instructions of the loop itself.
inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// MR rows x one panel (kPanel tiles of 16 channels), from row m0: the sums stay in registers over all of K, and
// the panel's weights are read as one sequential stream.
template <int MR>
void vnni_block(const Problem& p, int64_t m0, int64_t panel) {
  constexpr int NR = kPanel;
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  const int64_t lda = p.K4 * kGroup, step = NR * kTile * kGroup;
  const int8_t* w = p.w + panel * p.K4 * step;
  const uint8_t* a = p.a + m0 * lda;
  for (int64_t k4 = 0; k4 < p.K4; ++k4, w += step) {
    __m512i b[NR];
    _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch + 64), _MM_HINT_T0);
    for (int j = 0; j < NR; ++j) b[j] = _mm512_loadu_si512(w + j * kTile * kGroup);
    for (int i = 0; i < MR; ++i) {
      int32_t four;
      std::memcpy(&four, a + i * lda + k4 * kGroup, sizeof(four));
      const __m512i x = _mm512_set1_epi32(four);
      for (int j = 0; j < NR; ++j) acc[i][j] = dpbusd(acc[i][j], x, b[j]);
    }
  }
  for (int j = 0; j < NR; ++j) {
    const int64_t n0 = (panel * NR + j) * kTile;
    if (n0 >= p.N) break;
    const int64_t valid = std::min<int64_t>(kTile, p.N - n0);
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
    const __m512i wsum = _mm512_loadu_si512(p.wsum + n0);
    const __m512 ws = _mm512_maskz_loadu_ps(mask, p.ws + n0);
    const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + n0) : _mm512_setzero_ps();
    for (int i = 0; i < MR; ++i) {
      const __m512i off = _mm512_mullo_epi32(wsum, _mm512_set1_epi32(p.xs[m0 + i].zero));
      const __m512 sums = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][j], off));
      const __m512 scale = _mm512_mul_ps(ws, _mm512_set1_ps(p.xs[m0 + i].step));
      _mm512_mask_storeu_ps(p.y + (m0 + i) * p.N + n0, mask, _mm512_fmadd_ps(sums, scale, bias));
    }
  }
}

void vnni_rows(const Problem& p, int64_t m0, int64_t rows, int64_t panel) {
  switch (rows) {
    case 1: return vnni_block<1>(p, m0, panel);
    case 2: return vnni_block<2>(p, m0, panel);
    case 3: return vnni_block<3>(p, m0, panel);
    case 4: return vnni_block<4>(p, m0, panel);
    case 5: return vnni_block<5>(p, m0, panel);
    default: return vnni_block<6>(p, m0, panel);
  }
}
#endif

#if DEPLOYLM_AVX2
// AVX2 has no u8 x s8 -> s32 instruction; vpmaddubsw adds pairs of u8 x s8 products in int16 and saturates on
// u8 activations (2 * 255 * 127 > 32767). So the activations are shifted to s8 (a - 128) and the sign moves
// onto the weights: |a - 128| <= 128 as u8 times sign(a - 128) * w, |w| <= 127, gives pairs of at most
// 2 * 128 * 127 = 32512, never saturated; the sums are exact, and the 128 * sum(w) the shift took off goes back
// in with the zero point. One 32-byte load feeds 8 output channels (their 4 k values each).
constexpr int kRowsAvx2 = 2;  // 16 registers: 8 sums, 2 x (|a|, a) per row, the weights, the ones

template <int MR>
void avx2_block(const Problem& p, int64_t m0, int64_t panel) {
  constexpr int NV = kPanel * kTile * kGroup / 32;  // weight vectors per k step
  __m256i acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_setzero_si256();
  const int64_t lda = p.K4 * kGroup, step = kPanel * kTile * kGroup;
  const int8_t* w = p.w + panel * p.K4 * step;
  const uint8_t* a = p.a + m0 * lda;
  const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t k4 = 0; k4 < p.K4; ++k4, w += step) {
    _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch + 64), _MM_HINT_T0);
    __m256i sa[MR], ua[MR];
    for (int i = 0; i < MR; ++i) {
      int32_t four;
      std::memcpy(&four, a + i * lda + k4 * kGroup, sizeof(four));
      sa[i] = _mm256_xor_si256(_mm256_set1_epi32(four), flip);  // a - 128 as s8
      ua[i] = _mm256_abs_epi8(sa[i]);                            // -128 -> 0x80, read as u8: 128
    }
    for (int j = 0; j < NV; ++j) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * 32));
      for (int i = 0; i < MR; ++i) {
        const __m256i pairs = _mm256_maddubs_epi16(ua[i], _mm256_sign_epi8(b, sa[i]));
        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  for (int j = 0; j < NV; ++j) {
    const int64_t n0 = panel * kPanel * kTile + j * 8;
    if (n0 >= p.N) break;
    const int64_t valid = std::min<int64_t>(8, p.N - n0);
    const __m256i wsum = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.wsum + n0));
    for (int i = 0; i < MR; ++i) {
      const RowScale xs = p.xs[m0 + i];
      const __m256i exact = _mm256_add_epi32(acc[i][j], _mm256_mullo_epi32(wsum, _mm256_set1_epi32(128 - xs.zero)));
      alignas(32) float sums[8];
      _mm256_store_ps(sums, _mm256_cvtepi32_ps(exact));
      float* out = p.y + (m0 + i) * p.N + n0;
      for (int c = 0; c < valid; ++c)
        out[c] = sums[c] * (p.ws[n0 + c] * xs.step) + (p.bias ? p.bias[n0 + c] : 0.f);
    }
  }
}
#endif

// Same sums, one channel at a time: CPUs with neither (correct, not fast; weight_int8 prefers torch's kernels
// there, see int8_simd).
void scalar_panel(const Problem& p, int64_t m, int64_t panel) {
  const int8_t* w = p.w + panel * p.K4 * kPanel * kTile * kGroup;
  const uint8_t* a = p.a + m * p.K4 * kGroup;
  for (int c = 0; c < kPanel * kTile; ++c) {
    const int64_t n = panel * kPanel * kTile + c;
    if (n >= p.N) break;
    int64_t sum = 0;
    for (int64_t k4 = 0; k4 < p.K4; ++k4)
      for (int g = 0; g < kGroup; ++g)
        sum += static_cast<int32_t>(a[k4 * kGroup + g]) * w[(k4 * kPanel * kTile + c) * kGroup + g];
    const float v = static_cast<float>(sum - static_cast<int64_t>(p.xs[m].zero) * p.wsum[n]);
    p.y[m * p.N + n] = v * (p.ws[n] * p.xs[m].step) + (p.bias ? p.bias[n] : 0.f);
  }
}

// Panels [begin, end) for every row: each thread keeps a panel's weights in cache while it walks the rows.
void run_panels(const Problem& p, int64_t begin, int64_t end) {
  for (int64_t panel = begin; panel < end; ++panel) {
#if DEPLOYLM_VNNI
    for (int64_t m = 0; m < p.M; m += 6) vnni_rows(p, m, std::min<int64_t>(6, p.M - m), panel);
#elif DEPLOYLM_AVX2
    for (int64_t m = 0; m < p.M; m += kRowsAvx2) {
      if (p.M - m >= kRowsAvx2) avx2_block<kRowsAvx2>(p, m, panel);
      else avx2_block<1>(p, m, panel);
    }
#else
    for (int64_t m = 0; m < p.M; ++m) scalar_panel(p, m, panel);
#endif
  }
}

}  // namespace

// The instruction set int8_linear's loop uses: "avx512-vnni", "avx2", or "" (the scalar loop).
std::string int8_simd() { return DEPLOYLM_VNNI ? "avx512-vnni" : (DEPLOYLM_AVX2 ? "avx2" : ""); }

// x [M, K] float32; packed [panels, K4, panel tiles, 16, 4] int8; wsum [panels * panel tiles * 16] int32; scale [N] float32; bias [N] or
// empty; block: the Hadamard block the weights were rotated with (0: none). Returns [M, N] float32.
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor packed, torch::Tensor wsum, torch::Tensor scale,
                          c10::optional<torch::Tensor> bias, int64_t block) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "int8_linear: x must be float32 [rows, in]");
  TORCH_CHECK(packed.dim() == 5 && packed.scalar_type() == at::kChar && packed.size(2) == kPanel &&
              packed.size(3) == kTile && packed.size(4) == kGroup && packed.is_contiguous(),
              "int8_linear: packed must be int8 [panels, K/4, ", kPanel, ", 16, 4]");
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), K4 = packed.size(1), Kp = K4 * kGroup, N = scale.size(0);
  TORCH_CHECK(Kp >= K && Kp - K < kGroup, "int8_linear: x has ", K, " features, the weights ", Kp);
  const int64_t panels = packed.size(0), width = panels * kPanel * kTile;
  TORCH_CHECK(width >= N && wsum.numel() == width, "int8_linear: shapes disagree");
  TORCH_CHECK(block == 0 || K % block == 0, "int8_linear: rotation block does not divide the features");
  const float* bp = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->numel() == N && bias->scalar_type() == at::kFloat && bias->is_contiguous(), "int8_linear: bias");
    bp = bias->data_ptr<float>();
  }
  auto y = torch::empty({M, N}, x.options());
  if (M == 0) return y;
  std::vector<uint8_t> a(M * Kp);
  std::vector<RowScale> xs(M);
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> tmp(K);
    for (int64_t m = begin; m < end; ++m) xs[m] = quantize_row(xp + m * K, K, Kp, block, tmp.data(), &a[m * Kp]);
  });
  const Problem p{a.data(), packed.data_ptr<int8_t>(), wsum.data_ptr<int32_t>(), scale.data_ptr<float>(),
                  xs.data(), bp, y.data_ptr<float>(), M, N, K4};
  // Split channels, not rows: a thread reads each weight once.
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) { run_panels(p, begin, end); });
  return y;
}
