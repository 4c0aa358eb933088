// Decode attention over per-sequence KV slabs, every sequence of a step in one call (runtime/cpp_kernels.py).
//
// Why by hand: each sequence's KV lives in its own slab ([layers, 2, kv_heads, capacity, head_dim]), so torch's
// attention runs one call per sequence and layer, and its fixed cost per call dominates a decode step of many
// sequences; a batched torch call would first copy every sequence's KV. This reads the slabs in place.
// One query token per sequence: write its key/value at position `start`, then softmax(q K^T * scale) V over
// positions [lo, start] (lo from the sliding window). fp32 throughout, as torch's CPU attention accumulates.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

#if defined(__AVX512F__)
// exp of 16 floats (Cephes' expf: 2^n times a degree-6 polynomial on [-ln2/2, ln2/2]; about 1 ulp). Why by
// hand: the softmax below takes one exp per (query head, position), and libm's scalar expf per score was the
// largest cost of a many-sequence decode step.
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-88.3762626647949f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}
#endif

// p[i] = exp(s[i] - mx) in place; returns the sum of the p[i].
inline float exp_shifted(float* s, int64_t n, float mx) {
  int64_t i = 0;
  float sum = 0.f;
#if defined(__AVX512F__)
  const __m512 m = _mm512_set1_ps(mx);
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m512 p = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + i), m));
    _mm512_storeu_ps(s + i, p);
    acc = _mm512_add_ps(acc, p);
  }
  sum = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; ++i) {
    s[i] = std::exp(s[i] - mx);
    sum += s[i];
  }
  return sum;
}

inline float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

#if defined(__AVX512F__)
// 16 lanes of r: the sums of v[0..15]'s lanes, in order (three shuffle-and-add levels instead of sixteen
// horizontal reductions).
inline __m512 sum16(const __m512* v) {
  __m512 a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i)
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {
    const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
    b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  for (int i = 0; i < 2; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
}

// One query head over L positions, D = 16 * NV: scores 16 positions at a time, softmax, then the weighted sum of
// V with the output in registers.
template <int NV>
void attend_one(const float* q, const float* K, const float* V, int64_t L, float sc, float* scores, float* out) {
  constexpr int64_t D = 16 * NV;
  __m512 qv[NV];
  for (int c = 0; c < NV; ++c) qv[c] = _mm512_loadu_ps(q + c * 16);
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t t0 = 0; t0 < L; t0 += 16) {
    const int64_t n = std::min<int64_t>(16, L - t0);
    __m512 part[16];
    for (int64_t j = 0; j < 16; ++j) {
      if (j >= n) { part[j] = _mm512_setzero_ps(); continue; }
      const float* kt = K + (t0 + j) * D;
      __m512 acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kt));
      for (int c = 1; c < NV; ++c) acc = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kt + c * 16), acc);
      part[j] = acc;
    }
    const __mmask16 valid = static_cast<__mmask16>((1u << n) - 1u);
    const __m512 s = _mm512_mul_ps(sum16(part), _mm512_set1_ps(sc));
    _mm512_mask_storeu_ps(scores + t0, valid, s);
    mx = _mm512_mask_max_ps(mx, valid, mx, s);
  }
  const float total = exp_shifted(scores, L, _mm512_reduce_max_ps(mx));
  __m512 acc[NV];
  for (int c = 0; c < NV; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t t = 0; t < L; ++t) {
    const __m512 pt = _mm512_set1_ps(scores[t]);
    const float* vt = V + t * D;
    for (int c = 0; c < NV; ++c) acc[c] = _mm512_fmadd_ps(pt, _mm512_loadu_ps(vt + c * 16), acc[c]);
  }
  const __m512 inv = _mm512_set1_ps(1.f / total);
  for (int c = 0; c < NV; ++c) _mm512_storeu_ps(out + c * 16, _mm512_mul_ps(acc[c], inv));
}

// Every query head of one KV head through attend_one, if the head size is one it covers; false otherwise.
bool attend_vector(const float* q, int64_t G, int64_t D, const float* K, const float* V, int64_t L, float sc,
                   std::vector<float>& scores, float* out) {
  if (D != 64 && D != 128 && D != 256) return false;
  scores.resize(L + 16);
  for (int64_t g = 0; g < G; ++g) {
    const float* qg = q + g * D;
    float* og = out + g * D;
    if (D == 64) attend_one<4>(qg, K, V, L, sc, scores.data(), og);
    else if (D == 128) attend_one<8>(qg, K, V, L, sc, scores.data(), og);
    else attend_one<16>(qg, K, V, L, sc, scores.data(), og);
  }
  return true;
}
#endif

}  // namespace

torch::Tensor slab_decode_attention(torch::Tensor q, torch::Tensor k_new, torch::Tensor v_new,
                                    std::vector<torch::Tensor> slabs, std::vector<int64_t> starts, int64_t layer,
                                    double scale, int64_t window) {
  TORCH_CHECK(q.dim() == 3 && k_new.dim() == 3 && v_new.dim() == 3, "q, k_new, v_new must be [B, heads, D]");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k_new.scalar_type() == at::kFloat &&
              v_new.scalar_type() == at::kFloat, "slab_decode_attention computes in float32 only");
  q = q.contiguous();
  k_new = k_new.contiguous();
  v_new = v_new.contiguous();
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), Hkv = k_new.size(1);
  TORCH_CHECK(H % Hkv == 0, "query heads must be a multiple of KV heads");
  TORCH_CHECK((int64_t)slabs.size() == B && (int64_t)starts.size() == B, "one slab and one start per sequence");
  const int64_t G = H / Hkv;
  std::vector<float*> base(B);
  std::vector<int64_t> head_stride(B), kv_stride(B), cap(B);
  for (int64_t b = 0; b < B; ++b) {
    const auto& s = slabs[b];
    TORCH_CHECK(s.dim() == 5 && s.scalar_type() == at::kFloat && s.is_contiguous(),
                "slabs must be contiguous float32 [layers, 2, kv_heads, capacity, D]");
    TORCH_CHECK(s.size(2) == Hkv && s.size(4) == D && layer < s.size(0), "slab shape does not fit the step");
    TORCH_CHECK(starts[b] >= 0 && starts[b] < s.size(3), "a token past the slab's capacity");
    cap[b] = s.size(3);
    head_stride[b] = s.stride(2);
    kv_stride[b] = s.stride(1);
    base[b] = s.data_ptr<float>() + layer * s.stride(0);
  }
  const float* qp = q.data_ptr<float>();
  const float* kp = k_new.data_ptr<float>();
  const float* vp = v_new.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {  // the new keys/values first: attention below reads them at `start`
    for (int64_t h = 0; h < Hkv; ++h) {
      float* k_dst = base[b] + h * head_stride[b] + starts[b] * D;
      std::memcpy(k_dst, kp + (b * Hkv + h) * D, D * sizeof(float));
      std::memcpy(k_dst + kv_stride[b], vp + (b * Hkv + h) * D, D * sizeof(float));
    }
  }
  auto out = torch::empty_like(q);
  float* op = out.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> acc(G * D);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / Hkv, h = idx % Hkv;
      const int64_t stop = starts[b] + 1;
      const int64_t lo = window > 0 ? std::max<int64_t>(0, stop - window) : 0;
      const int64_t L = stop - lo;
      const float* K = base[b] + h * head_stride[b] + lo * D;
      const float* V = K + kv_stride[b];
#if defined(__AVX512F__)
      if (attend_vector(qp + (b * H + h * G) * D, G, D, K, V, L, sc, scores, op + (b * H + h * G) * D)) continue;
#endif
      scores.assign(G * L, 0.f);
      std::vector<float> mx(G, -std::numeric_limits<float>::infinity());
      for (int64_t t = 0; t < L; ++t) {  // one pass over K: every query head of this KV head
        const float* kt = K + t * D;
        for (int64_t g = 0; g < G; ++g) {
          const float s = dot(qp + (b * H + h * G + g) * D, kt, D) * sc;
          scores[g * L + t] = s;
          mx[g] = std::max(mx[g], s);
        }
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      std::vector<float> sum(G, 0.f);
      for (int64_t g = 0; g < G; ++g) sum[g] = exp_shifted(scores.data() + g * L, L, mx[g]);
      for (int64_t t = 0; t < L; ++t) {  // one pass over V
        const float* vt = V + t * D;
        for (int64_t g = 0; g < G; ++g) {
          const float p = scores[g * L + t];
          float* a = acc.data() + g * D;
#pragma omp simd
          for (int64_t i = 0; i < D; ++i) a[i] += p * vt[i];
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        float* o = op + (b * H + h * G + g) * D;
        const float inv = 1.f / sum[g];
        for (int64_t i = 0; i < D; ++i) o[i] = acc[g * D + i] * inv;
      }
    }
  });
  return out;
}
