// One table read per multiply-accumulate: sum_k lut[x_k, w_k] for any 8x8 (or narrower) table.
//
// The weight operand is fixed per inner loop: row T_w[a] = lut[a, w] is the weight-specific
// row, and the inner loop runs over output pixels p adding T_w[x[k, p]]. Sums are int32 and
// exact (the caller checks K * max|lut| < 2^31). Three variants, chosen at run time from
// the CPU's features (one portable build, no -march=native):
//   - AVX-512 VBMI: the 256-entry row is split into low and high bytes, 4 zmm each, and
//     vpermi2b looks up 64 activations at once (two permutes and a blend per byte plane);
//   - AVX2: vpgatherdd, 8 lookups per gather from the int32 row;
//   - scalar.
// Work is split over (group, block of images, output-channel chunk) items on PyTorch's thread pool.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kAlign = 64;  // pixels per VBMI step; buffers are padded to a multiple

struct Tables {
  const int32_t* rows32;  // [S][S]: rows32[w * S + a] = lut[a][w]
  const uint8_t* lo8;     // [S][256]: low bytes of rows32 (VBMI), or nullptr
  const uint8_t* hi8;     // [S][256]: high bytes
  bool unsigned_words;    // 16-bit entries are uint16 (else int16)
  int64_t size;           // S
};

// acc[p] += row[x[p]] for p < n (n a multiple of kAlign; x padded with valid indices).
void row_scalar(int32_t* acc, const uint8_t* x, int64_t n, const Tables& t, int64_t w) {
  const int32_t* row = t.rows32 + w * t.size;
  for (int64_t p = 0; p < n; p += 4) {
    acc[p] += row[x[p]];
    acc[p + 1] += row[x[p + 1]];
    acc[p + 2] += row[x[p + 2]];
    acc[p + 3] += row[x[p + 3]];
  }
}

__attribute__((target("avx2"))) void row_avx2(int32_t* acc, const uint8_t* x, int64_t n, const Tables& t,
                                              int64_t w) {
  const int* row = reinterpret_cast<const int*>(t.rows32 + w * t.size);
  for (int64_t p = 0; p < n; p += 16) {
    __m256i i0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + p)));
    __m256i i1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + p + 8)));
    __m256i v0 = _mm256_i32gather_epi32(row, i0, 4);
    __m256i v1 = _mm256_i32gather_epi32(row, i1, 4);
    __m256i* a0 = reinterpret_cast<__m256i*>(acc + p);
    __m256i* a1 = reinterpret_cast<__m256i*>(acc + p + 8);
    _mm256_storeu_si256(a0, _mm256_add_epi32(_mm256_loadu_si256(a0), v0));
    _mm256_storeu_si256(a1, _mm256_add_epi32(_mm256_loadu_si256(a1), v1));
  }
}

// The VBMI variant accumulates 64 pixels in a lane order of its own (see unscramble()).
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void row_vbmi(int32_t* acc, const uint8_t* x, int64_t n,
                                                                     const Tables& t, int64_t w) {
  const uint8_t* lo = t.lo8 + w * 256;
  const uint8_t* hi = t.hi8 + w * 256;
  const __m512i l0 = _mm512_loadu_si512(lo), l1 = _mm512_loadu_si512(lo + 64);
  const __m512i l2 = _mm512_loadu_si512(lo + 128), l3 = _mm512_loadu_si512(lo + 192);
  const __m512i h0 = _mm512_loadu_si512(hi), h1 = _mm512_loadu_si512(hi + 64);
  const __m512i h2 = _mm512_loadu_si512(hi + 128), h3 = _mm512_loadu_si512(hi + 192);
  const bool uns = t.unsigned_words;
  for (int64_t p = 0; p < n; p += 64) {
    const __m512i idx = _mm512_loadu_si512(x + p);
    const __mmask64 upper = _mm512_movepi8_mask(idx);  // index bit 7: entries 128..255
    const __m512i rl = _mm512_mask_blend_epi8(upper, _mm512_permutex2var_epi8(l0, idx, l1),
                                              _mm512_permutex2var_epi8(l2, idx, l3));
    const __m512i rh = _mm512_mask_blend_epi8(upper, _mm512_permutex2var_epi8(h0, idx, h1),
                                              _mm512_permutex2var_epi8(h2, idx, h3));
    const __m512i wa = _mm512_unpacklo_epi8(rl, rh);  // 16-bit entries, per 128-bit lane: pixels 0..7
    const __m512i wb = _mm512_unpackhi_epi8(rl, rh);  // pixels 8..15 of each lane
    __m512i v0, v1, v2, v3;
    if (uns) {
      v0 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(wa));
      v1 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(wa, 1));
      v2 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(wb));
      v3 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(wb, 1));
    } else {
      v0 = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(wa));
      v1 = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(wa, 1));
      v2 = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(wb));
      v3 = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(wb, 1));
    }
    int32_t* a = acc + p;
    _mm512_storeu_si512(a, _mm512_add_epi32(_mm512_loadu_si512(a), v0));
    _mm512_storeu_si512(a + 16, _mm512_add_epi32(_mm512_loadu_si512(a + 16), v1));
    _mm512_storeu_si512(a + 32, _mm512_add_epi32(_mm512_loadu_si512(a + 32), v2));
    _mm512_storeu_si512(a + 48, _mm512_add_epi32(_mm512_loadu_si512(a + 48), v3));
  }
}

// Accumulator slot of pixel j (0..63) in a VBMI step: v0 holds lanes 0-1 of wa (pixels 0-7,
// 16-23), v1 lanes 2-3 (32-39, 48-55), v2 and v3 the same of wb (pixels 8-15, 24-31, 40-47, 56-63).
int vbmi_slot(int j) {
  const int lane = j / 16, within = j % 16;
  const int vec = (within < 8 ? 0 : 2) + lane / 2;
  return vec * 16 + (lane % 2) * 8 + within % 8;
}

using RowFn = void (*)(int32_t*, const uint8_t*, int64_t, const Tables&, int64_t);

enum Variant { kScalar = 0, kAvx2 = 1, kVbmi = 2 };

int best_variant() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw")) return kVbmi;
  if (__builtin_cpu_supports("avx2")) return kAvx2;
  return kScalar;
}

// Run fn(item, worker) for item in [0, items) on PyTorch's intra-op thread pool (persistent
// OpenMP threads: threads created per call would be packed onto one vCPU by some schedulers);
// `worker` indexes buffers each thread allocates once per call and reuses across its items.
template <typename F>
void parallel_items(int64_t items, const F& fn) {
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    const int64_t worker = at::get_thread_num();
    for (int64_t i = begin; i < end; ++i) fn(i, worker);
  });
}

}  // namespace

// Which variant this CPU runs: 0 scalar, 1 AVX2, 2 AVX-512 VBMI.
int64_t cpu_variant() { return best_variant(); }

// sum_k lut[x_k, w_k] of a convolution over an already padded input.
//   x:      uint8 [N, C, Hp, Wp] table indices of the activations (contiguous)
//   w:      uint8 [O, C/groups, kh, kw] table indices of the weights (contiguous)
//   rows32: int32 [S, S], rows32[w][a] = lut[a][w]
//   lo8/hi8: uint8 [S, 256] low/high bytes of rows32 when every entry fits 16 bits and S == 256, else empty
//   variant: -1 = the best this CPU has, or force 0/1/2 (tests)
//   with_xsum: also return sum_k x_k per group and pixel (unsigned operands' zero-point term)
//   zw, wsum (int64 [O], or empty), zx: with them, each output is the zero-point-corrected sum
//     acc - zw[o] sum_k x_k - zx wsum[o] + K zx zw[o] (exact int64; the caller checks it fits int32)
// Returns [int32 [N, O, Ho, Wo]] or [that, int32 [N, groups, Ho, Wo]].
std::vector<torch::Tensor> lut_conv2d(torch::Tensor x, torch::Tensor w, torch::Tensor rows32, torch::Tensor lo8,
                                      torch::Tensor hi8, bool unsigned_words, int64_t sh, int64_t sw, int64_t dh,
                                      int64_t dw, int64_t groups, int64_t variant, bool with_xsum, torch::Tensor zw,
                                      torch::Tensor wsum, int64_t zx) {
  TORCH_CHECK(x.dtype() == torch::kUInt8 && w.dtype() == torch::kUInt8, "indices must be uint8");
  TORCH_CHECK(rows32.dtype() == torch::kInt32 && rows32.dim() == 2, "rows32 must be int32 [S, S]");
  TORCH_CHECK(x.dim() == 4 && w.dim() == 4, "x and w must be 4-D");
  x = x.contiguous();
  w = w.contiguous();
  rows32 = rows32.contiguous();
  const int64_t N = x.size(0), C = x.size(1), Hp = x.size(2), Wp = x.size(3);
  const int64_t O = w.size(0), Cg = w.size(1), kh = w.size(2), kw = w.size(3);
  TORCH_CHECK(C == Cg * groups && O % groups == 0, "channels do not match groups");
  const int64_t Ho = (Hp - dh * (kh - 1) - 1) / sh + 1, Wo = (Wp - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "kernel larger than the padded input");
  const int64_t K = Cg * kh * kw, Og = O / groups;
  // Stride 1: compute on the "wide" grid Ho x Wp, so each tap of an image is one contiguous
  // run of the padded input (one memcpy); the Wp - Wo extra columns are dropped at the end.
  const bool wide = sh == 1 && sw == 1;
  const int64_t P = wide ? Ho * Wp : Ho * Wo;

  if (variant < 0) variant = best_variant();
  const bool have_bytes = lo8.numel() > 0 && hi8.numel() > 0 && rows32.size(0) == 256;
  if (variant == kVbmi && (!have_bytes || best_variant() < kVbmi)) variant = best_variant() >= kAvx2 ? kAvx2 : kScalar;
  if (variant == kAvx2 && best_variant() < kAvx2) variant = kScalar;
  const RowFn row_fn = variant == kVbmi ? row_vbmi : (variant == kAvx2 ? row_avx2 : row_scalar);
  Tables tables{rows32.data_ptr<int32_t>(), have_bytes ? lo8.contiguous().data_ptr<uint8_t>() : nullptr,
                have_bytes ? hi8.contiguous().data_ptr<uint8_t>() : nullptr, unsigned_words, rows32.size(0)};

  // Images per block: enough pixels to fill the vectors, a buffer that stays in L2.
  int64_t nb = std::max<int64_t>(1, std::min<int64_t>(N, (2048 + P - 1) / P));
  nb = std::max<int64_t>(1, std::min<int64_t>(nb, (1 << 20) / std::max<int64_t>(1, K * P)));
  const int64_t blocks = (N + nb - 1) / nb;
  const int64_t Pb = ((nb * P + kAlign - 1) / kAlign) * kAlign;
  // Output channels are split too when groups x blocks alone would leave threads idle; the
  // blocks' im2col is then built once up front and shared by the chunks.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t units = groups * blocks;
  const int64_t ochunks = std::max<int64_t>(1, std::min<int64_t>(Og, (4 * threads + units - 1) / units));
  const int64_t per_chunk = (Og + ochunks - 1) / ochunks;

  auto out = torch::empty({N, O, Ho, Wo}, torch::dtype(torch::kInt32));
  auto xsum = with_xsum ? torch::empty({N, groups, Ho, Wo}, torch::dtype(torch::kInt32)) : torch::Tensor();
  const uint8_t* xp = x.data_ptr<uint8_t>();
  const uint8_t* wp = w.data_ptr<uint8_t>();
  int32_t* op = out.data_ptr<int32_t>();
  int32_t* sp = with_xsum ? xsum.data_ptr<int32_t>() : nullptr;
  const bool correct = zw.numel() > 0;
  TORCH_CHECK(!correct || (zw.numel() == O && wsum.numel() == O && zw.dtype() == torch::kInt64 &&
                           wsum.dtype() == torch::kInt64), "zw and wsum must be int64 [O]");
  const int64_t* zwp = correct ? zw.contiguous().data_ptr<int64_t>() : nullptr;
  const int64_t* wsp = correct ? wsum.contiguous().data_ptr<int64_t>() : nullptr;
  int slot[kAlign];
  for (int j = 0; j < kAlign; ++j) slot[j] = variant == kVbmi ? vbmi_slot(j) : j;

  // im2col of block (g, b) into cols [K][Pb]; the tail past the block's pixels keeps valid indices
  auto build_cols = [&](uint8_t* cols, int64_t g, int64_t n0, int64_t n1) {
    for (int64_t c = 0; c < Cg; ++c) {
      for (int64_t i = 0; i < kh; ++i) {
        for (int64_t j = 0; j < kw; ++j) {
          uint8_t* dst = cols + ((c * kh + i) * kw + j) * Pb;
          for (int64_t n = n0; n < n1; ++n) {
            const uint8_t* src = xp + ((n * C + g * Cg + c) * Hp) * Wp;
            uint8_t* d = dst + (n - n0) * P;
            if (wide) {
              const int64_t offset = i * dh * Wp + j * dw;
              const int64_t len = std::min<int64_t>(P, Hp * Wp - offset);  // never read past the image
              std::memcpy(d, src + offset, static_cast<size_t>(len));
              if (len < P) std::memset(d + len, 0, static_cast<size_t>(P - len));
            } else {
              for (int64_t oy = 0; oy < Ho; ++oy) {
                const uint8_t* s = src + (oy * sh + i * dh) * Wp + j * dw;
                for (int64_t ox = 0; ox < Wo; ++ox) d[oy * Wo + ox] = s[ox * sw];
              }
            }
          }
        }
      }
    }
  };
  // acc (one block, wide or not, in the variant's lane order) -> dst rows [n][Ho*Wo] with stride `step`;
  // with xs (sum_k x_k of the block, natural order), the zero-point correction of output channel o
  auto scatter = [&](const int32_t* acc, int32_t* dst, int64_t step, int64_t n0, int64_t n1, bool lanes,
                     const int32_t* xs, int64_t o) {
    const int64_t z = xs ? zwp[o] : 0, constant = xs ? K * zx * zwp[o] - zx * wsp[o] : 0;
    for (int64_t n = n0; n < n1; ++n) {
      int32_t* row = dst + (n - n0) * step;
      const int64_t base = (n - n0) * P;
      for (int64_t oy = 0; oy < Ho; ++oy) {
        for (int64_t ox = 0; ox < Wo; ++ox) {
          const int64_t q = base + oy * (wide ? Wp : Wo) + ox;
          const int64_t v = lanes ? acc[(q & ~(kAlign - 1)) + slot[q & (kAlign - 1)]] : acc[q];
          row[oy * Wo + ox] = static_cast<int32_t>(xs ? v - z * xs[q] + constant : v);
        }
      }
    }
  };

  std::vector<uint8_t> shared;
  if (ochunks > 1) {
    shared.assign(static_cast<size_t>(units * K * Pb), 0);
    parallel_items(units, [&](int64_t unit, int64_t) {
      const int64_t g = unit / blocks, b = unit % blocks;
      build_cols(shared.data() + unit * K * Pb, g, b * nb, std::min(N, b * nb + nb));
    });
  }
  const int64_t items = units * ochunks;
  std::vector<std::vector<uint8_t>> cols_of(threads);  // per-thread im2col when not shared
  std::vector<std::vector<int32_t>> acc_of(threads);
  std::vector<std::vector<int32_t>> xs_of(threads);  // sum_k x_k of the block, when correcting
  parallel_items(items, [&](int64_t item, int64_t worker) {
    const int64_t chunk = item % ochunks, unit = item / ochunks;
    const int64_t g = unit / blocks, b = unit % blocks;
    const int64_t n0 = b * nb, n1 = std::min(N, n0 + nb);
    const int64_t o_begin = chunk * per_chunk, o_end = std::min(Og, o_begin + per_chunk);
    std::vector<int32_t>& acc = acc_of[worker];
    if (acc.empty()) acc.resize(static_cast<size_t>(Pb));
    const uint8_t* cols;
    if (ochunks > 1) {
      cols = shared.data() + unit * K * Pb;
    } else {
      std::vector<uint8_t>& own = cols_of[worker];
      if (own.empty()) own.assign(static_cast<size_t>(K * Pb), 0);
      build_cols(own.data(), g, n0, n1);
      cols = own.data();
    }
    const int32_t* xs = nullptr;
    if (correct || (sp != nullptr && chunk == 0)) {  // sum_k x_k, in natural pixel order
      std::vector<int32_t>& sums = xs_of[worker];
      sums.assign(static_cast<size_t>(Pb), 0);
      for (int64_t k = 0; k < K; ++k) {
        const uint8_t* col = cols + k * Pb;
        for (int64_t q = 0; q < Pb; ++q) sums[q] += col[q];
      }
      if (sp != nullptr && chunk == 0)
        scatter(sums.data(), sp + (n0 * groups + g) * Ho * Wo, groups * Ho * Wo, n0, n1, false, nullptr, 0);
      if (correct) xs = sums.data();
    }
    for (int64_t oo = o_begin; oo < o_end; ++oo) {
      const int64_t o = g * Og + oo;
      std::fill(acc.begin(), acc.end(), 0);
      const uint8_t* wo = wp + o * K;
      for (int64_t k = 0; k < K; ++k) row_fn(acc.data(), cols + k * Pb, Pb, tables, wo[k]);
      scatter(acc.data(), op + (n0 * O + o) * Ho * Wo, O * Ho * Wo, n0, n1, variant == kVbmi, xs, o);
    }
  });
  if (with_xsum) return {out, xsum};
  return {out};
}

// One row of quantize_pad: out[w] = index of clamp(round_half_even(x[w] / sc) + zf, lo, hi).
// x / sc is clamped to [lo - zf - 1, hi - zf + 1] before rounding (the final clamp makes that
// exact, and NaN -> 0 as nan_to_num does), so |q| < 2^22 and (q + 1.5 * 2^23) - 1.5 * 2^23 rounds
// half to even in IEEE float32 without a libm call. Vectorizable; clones for AVX-512 and AVX2.
__attribute__((target_clones("avx512f", "avx2", "default"))) void quantize_row(uint8_t* out, const float* x,
                                                                              int64_t n, float sc, float zf, float lo,
                                                                              float hi, int32_t mask) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const float qlo = lo - zf - 1.0f, qhi = hi - zf + 1.0f;
  for (int64_t w = 0; w < n; ++w) {
    float q = x[w] / sc;
    q = q == q ? q : 0.0f;  // NaN -> 0
    q = q < qlo ? qlo : (q > qhi ? qhi : q);
    q = (q + magic) - magic + zf;
    q = q < lo ? lo : (q > hi ? hi : q);
    out[w] = static_cast<uint8_t>(static_cast<int32_t>(q) & mask);
  }
}

// Table indices of quantized activations, padded, in one pass over a contiguous NCHW float input:
// the same float32 arithmetic as dse.numerics.quantization.quantize (q = x / scale; NaN -> 0;
// round half to even; + zero; clamp), then the index: q's two's-complement byte if signed, else q.
// The index is the value's low `bits` bits (two's complement for signed operands). The padding
// holds the index of the zero point. Returns uint8 [N, C, H+2ph, W+2pw].
torch::Tensor quantize_pad(torch::Tensor x, double scale, double zero, int64_t qmin, int64_t qmax, int64_t ph,
                           int64_t pw, int64_t bits) {
  TORCH_CHECK(bits >= 1 && bits <= 8, "the kernel indexes tables of at most 8-bit operands");
  const int32_t mask = (1 << bits) - 1;
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 4, "x must be a 4-D float32 tensor");
  x = x.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw;
  const float sc = static_cast<float>(scale), zf = static_cast<float>(zero);
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  const uint8_t pad_index = static_cast<uint8_t>(static_cast<int64_t>(zf) & mask);
  auto out = torch::empty({N, C, Hp, Wp}, torch::dtype(torch::kUInt8));
  const float* xp = x.data_ptr<float>();
  uint8_t* op = out.data_ptr<uint8_t>();
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      uint8_t* dst = op + nc * Hp * Wp;
      const float* src = xp + nc * H * W;
      if (ph == 0 && pw == 0) {
        quantize_row(dst, src, H * W, sc, zf, lo, hi, mask);
        continue;
      }
      std::memset(dst, pad_index, static_cast<size_t>(Hp * Wp));
      for (int64_t h = 0; h < H; ++h) quantize_row(dst + (h + ph) * Wp + pw, src + h * W, W, sc, zf, lo, hi, mask);
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("quantize_pad", &quantize_pad, "uint8 table indices of quantized, padded activations (one pass)");
  m.def("lut_conv2d", &lut_conv2d, "sum_k lut[x_k, w_k] of a convolution (int32, exact)");
  m.def("cpu_variant", &cpu_variant, "0 scalar, 1 AVX2, 2 AVX-512 VBMI");
}
