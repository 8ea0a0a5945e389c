/* BatchViews on a CPU: the crop matrices, then each view's colour jitter, grayscale, Gaussian
 * blur, solarisation and normalisation in one pass of calls while the view is in cache.
 *
 * The same arithmetic as the eager ops in batch_ops.py (torchvision's definitions): brightness,
 * contrast and saturation blend and clip to [0, 1]; hue turns the hexcone hue; every image applies
 * its jitter ops in its own order; the blur is separable with reflect padding. The eager path runs
 * each of 4 positions x 4 jitter ops as tensor kernels over gathered rows and the blur as products
 * with banded matrices; here each view runs its own sequence on a private copy (a few passes
 * instead of dozens) and the blur touches only the kernel's taps. Compiled at first use by
 * lightning_tl/datamodules/cpu_kernel.py and called through ctypes (which releases the GIL, so
 * several threads can each take a share of the views).
 *
 * Entry points: ltl_views (the per-view steps, from crop products to output rows) and
 * ltl_resize_weights (the crop-and-resize matrices). The parameter table is float32 (n, stride)
 * with the BatchViews columns: 5 = jitter applied, 6..9 = brightness, contrast, saturation factors
 * and hue shift, 10..13 = the op at each position, 14 = grayscale, 15 = blur applied, 17 = solarise.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LUMA_R 0.2989f
#define LUMA_G 0.587f
#define LUMA_B 0.114f

static inline float clip01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

static void brightness(float *y, int64_t count, float f) {
    for (int64_t i = 0; i < count; ++i) y[i] = clip01(y[i] * f);
}

static void contrast(float *y, int64_t c, int64_t hw, float f) {
    /* blend with the mean of the grayscale image = the luma of the channel means */
    double sums[3] = {0.0, 0.0, 0.0};
    for (int64_t ch = 0; ch < c; ++ch) {
        const float *p = y + ch * hw;
        double lanes[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}; /* 8 independent sums: vectorised */
        int64_t i = 0;
        for (; i + 8 <= hw; i += 8)
            for (int j = 0; j < 8; ++j) lanes[j] += p[i + j];
        double s = 0.0;
        for (; i < hw; ++i) s += p[i];
        for (int j = 0; j < 8; ++j) s += lanes[j];
        sums[ch] = s;
    }
    float mean = c == 3 ? (float)(sums[0] / hw) * LUMA_R + (float)(sums[1] / hw) * LUMA_G +
                              (float)(sums[2] / hw) * LUMA_B
                        : (float)(sums[0] / hw);
    float other = mean * (1.0f - f);
    for (int64_t i = 0; i < c * hw; ++i) y[i] = clip01(y[i] * f + other);
}

static void saturation(float *y, int64_t hw, float f) {
    float *restrict r = y, *restrict g = y + hw, *restrict b = y + 2 * hw;
    float keep = 1.0f - f;
    for (int64_t i = 0; i < hw; ++i) {
        float gray = (r[i] * LUMA_R + g[i] * LUMA_G + b[i] * LUMA_B) * keep;
        r[i] = clip01(r[i] * f + gray);
        g[i] = clip01(g[i] * f + gray);
        b[i] = clip01(b[i] * f + gray);
    }
}

static inline float wave(float h, float centre, float sign, float offset) {
    float t = sign * fabsf(h - centre) + offset;
    return t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
}

static void hue(float *y, int64_t hw, float shift) {
    float *restrict r = y, *restrict g = y + hw, *restrict b = y + 2 * hw;
    float turn = 6.0f * shift;
    for (int64_t i = 0; i < hw; ++i) {
        float rv = r[i], gv = g[i], bv = b[i];
        float value = rv > gv ? rv : gv;
        value = value > bv ? value : bv;
        float low = rv < gv ? rv : gv;
        low = low < bv ? low : bv;
        float chroma = value - low;
        float inv = 1.0f / (chroma > FLT_MIN ? chroma : FLT_MIN);
        /* hue in sixths from the maximal channel; ties go to red, then green */
        float from_r = (gv - bv) * inv, from_g = (bv - rv) * inv + 2.0f, from_b = (rv - gv) * inv + 4.0f;
        float h = value == rv ? from_r : (value == gv ? from_g : from_b);
        h = h + turn;
        h = h - 6.0f * floorf(h / 6.0f); /* torch.remainder(h, 6) */
        r[i] = low + wave(h, 3.0f, 1.0f, -1.0f) * chroma;
        g[i] = low + wave(h, 2.0f, -1.0f, 2.0f) * chroma;
        b[i] = low + wave(h, 4.0f, -1.0f, 2.0f) * chroma;
    }
}

static void grayscale(float *y, int64_t hw) {
    float *restrict r = y, *restrict g = y + hw, *restrict b = y + 2 * hw;
    for (int64_t i = 0; i < hw; ++i) {
        float gray = r[i] * LUMA_R + g[i] * LUMA_G + b[i] * LUMA_B;
        r[i] = gray;
        g[i] = gray;
        b[i] = gray;
    }
}

static inline int64_t reflect(int64_t i, int64_t n) {
    if (i < 0) return -i;
    if (i >= n) return 2 * (n - 1) - i;
    return i;
}

/* 16 floats: the compiler maps it onto the widest vector registers it targets (one AVX-512
 * register, two AVX ones, four SSE ones), so a tap's multiply-add runs on a whole vector and the
 * blur's partial sums stay in registers. */
typedef float vec16 __attribute__((vector_size(64)));
#define LANES 16

static inline vec16 load16(const float *p) {
    vec16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* out[i] = sum_j wk[j] * taps[j][i] for i < w: k rows of taps combined, partial sums in registers. */
static void combine(float *restrict out, const float *const *taps, const float *wk, int64_t k, int64_t w) {
    int64_t i = 0;
    for (; i + LANES <= w; i += LANES) {
        vec16 acc = wk[0] * load16(taps[0] + i);
        for (int64_t j = 1; j < k; ++j) acc += wk[j] * load16(taps[j] + i);
        memcpy(out + i, &acc, sizeof acc);
    }
    for (; i < w; ++i) {
        float acc = wk[0] * taps[0][i];
        for (int64_t j = 1; j < k; ++j) acc += wk[j] * taps[j][i];
        out[i] = acc;
    }
}

/* Separable blur of one (c, h, w) image with the k-tap kernel wk, reflect padding; tmp holds
 * c*h*w + w + k floats. */
static void blur(float *y, float *restrict tmp, int64_t c, int64_t h, int64_t w, const float *wk, int64_t k) {
    int64_t pad = k / 2;
    float *line = tmp + c * h * w; /* one row with its reflected borders: w + 2 * pad */
    const float *taps[k];
    /* along each row, into tmp: tap j of output i is line[i + j] */
    for (int64_t r = 0; r < c * h; ++r) {
        const float *src = y + r * w;
        for (int64_t i = 0; i < pad; ++i) line[i] = src[pad - i];
        memcpy(line + pad, src, (size_t)w * sizeof(float));
        for (int64_t i = 0; i < pad; ++i) line[pad + w + i] = src[w - 2 - i];
        for (int64_t j = 0; j < k; ++j) taps[j] = line + j;
        combine(tmp + r * w, taps, wk, k, w);
    }
    /* then along each column, back into y: tap j of output row r is row r + j - pad, reflected */
    for (int64_t ch = 0; ch < c; ++ch) {
        const float *plane = tmp + ch * h * w;
        for (int64_t r = 0; r < h; ++r) {
            for (int64_t j = 0; j < k; ++j) taps[j] = plane + reflect(r + j - pad, h) * w;
            combine(y + (ch * h + r) * w, taps, wk, k, w);
        }
    }
}

static inline float from_bf16(uint16_t bits) {
    uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

static inline uint16_t to_bf16(float value) { /* round to nearest even, as torch's conversion */
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu)) return (uint16_t)((bits >> 16) | 0x40u);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* Views [begin, end) of one block. View i reads crop src_rows[i] of src, laid out (h, src_c, w) per
 * crop (BatchViews' crop products), float32 or bfloat16, repeating a single channel when c = 3;
 * runs jitter (in its own op order), grayscale, blur (when blur_kernels is not NULL and its blur
 * flag is set), solarisation and normalisation on a private copy in cache; and writes the result
 * to row target[i] of out, (n_out, c, h, w) float32 or bfloat16. table and blur_kernels have one
 * row per view i. Returns 0, or -1 when scratch memory ran out. */
int ltl_views(const void *src, int src_bf16, int64_t src_c, const int64_t *src_rows, void *out, int out_bf16,
              const int64_t *target, const float *table, int64_t stride, const float *blur_kernels, int64_t k,
              const float *mean, const float *std, int64_t begin, int64_t end, int64_t c, int64_t h, int64_t w) {
    int64_t hw = h * w, size = c * hw;
    float *img = (float *)malloc((size_t)(2 * size + w + k) * sizeof(float));
    if (img == NULL) return -1;
    float *tmp = img + size;
    for (int64_t i = begin; i < end; ++i) {
        const float *t = table + i * stride;
        /* load: (h, src_c, w) crop -> (c, h, w) float32 */
        for (int64_t ch = 0; ch < c; ++ch) {
            int64_t from = src_c == 1 ? 0 : ch;
            for (int64_t r = 0; r < h; ++r) {
                int64_t offset = (src_rows[i] * h + r) * src_c * w + from * w;
                float *restrict dst = img + (ch * h + r) * w;
                if (src_bf16) {
                    const uint16_t *p = (const uint16_t *)src + offset;
                    for (int64_t x = 0; x < w; ++x) dst[x] = from_bf16(p[x]);
                } else {
                    memcpy(dst, (const float *)src + offset, (size_t)w * sizeof(float));
                }
            }
        }
        if (t[5] > 0.5f) {
            for (int position = 0; position < 4; ++position) {
                int op = (int)t[10 + position];
                float factor = t[6 + op];
                if (op == 0) brightness(img, size, factor);
                else if (op == 1) contrast(img, c, hw, factor);
                else if (c == 3 && op == 2) saturation(img, hw, factor);
                else if (c == 3 && op == 3) hue(img, hw, factor);
            }
        }
        if (c == 3 && t[14] > 0.5f) grayscale(img, hw);
        if (blur_kernels != NULL && t[15] > 0.5f) blur(img, tmp, c, h, w, blur_kernels + i * k, k);
        int solarise = t[17] > 0.5f;
        for (int64_t ch = 0; ch < c; ++ch) {
            float *restrict p = img + ch * hw;
            float m = mean[ch], sd = std[ch];
            if (solarise)
                for (int64_t x = 0; x < hw; ++x) p[x] = p[x] >= 0.5f ? 1.0f - p[x] : p[x];
            for (int64_t x = 0; x < hw; ++x) p[x] = (p[x] - m) / sd;
        }
        if (out_bf16) {
            uint16_t *restrict dst = (uint16_t *)out + target[i] * size;
            for (int64_t x = 0; x < size; ++x) dst[x] = to_bf16(img[x]);
        } else {
            memcpy((float *)out + target[i] * size, img, (size_t)size * sizeof(float));
        }
    }
    free(img);
    return 0;
}

/* Crop-and-resize matrices [begin, n) of (n, size, full), as batch_ops.resize_weights: row i of matrix m holds
 * the antialiased triangle weights of output pixel i (mirrored when reverse[m]) over the input
 * pixels inside [start, start + length), normalised to sum 1, then multiplied by gain. Only the
 * taps inside the filter's support are computed; the rest of each row is zero. Returns 0, or -1
 * when scratch memory ran out. Compiled without fused multiply-adds (GCC's optimize attribute), so
 * the triangle's edges round to exactly 0 where the eager version's do. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
int ltl_resize_weights(const float *start, const float *length, const uint8_t *reverse, int64_t begin,
                       int64_t n, int64_t size, int64_t full, float gain, void *out, int out_bf16) {
    float *row = (float *)malloc((size_t)full * sizeof(float));
    if (row == NULL) return -1;
    for (int64_t m = begin; m < n; ++m) {
        float scale = length[m] / (float)size;
        float inv = 1.0f / (scale > 1.0f ? scale : 1.0f);
        float lo = start[m], hi = start[m] + length[m];
        for (int64_t i = 0; i < size; ++i) {
            float o = (reverse != NULL && reverse[m]) ? (float)(size - 1 - i) : (float)i;
            float centre = lo + (o + 0.5f) * scale;
            float reach = (scale > 1.0f ? scale : 1.0f) + 1.0f; /* support, widened by a pixel */
            int64_t first = (int64_t)floorf(centre - reach), last = (int64_t)ceilf(centre + reach);
            first = first < 0 ? 0 : first;
            last = last > full - 1 ? full - 1 : last;
            float total = 0.0f;
            for (int64_t j = 0; j < full; ++j) row[j] = 0.0f;
            for (int64_t j = first; j <= last; ++j) {
                float pixel = (float)j + 0.5f;
                float d = pixel * inv - centre * inv;
                float wv = 1.0f - fabsf(d);
                wv = wv > 0.0f ? wv : 0.0f;
                wv = (pixel >= lo && pixel < hi) ? wv : 0.0f;
                row[j] = wv;
                total += wv;
            }
            int64_t at = (m * size + i) * full;
            for (int64_t j = 0; j < full; ++j) row[j] = row[j] / total * gain;
            if (out_bf16) {
                uint16_t *restrict dst = (uint16_t *)out + at;
                for (int64_t j = 0; j < full; ++j) dst[j] = to_bf16(row[j]);
            } else {
                memcpy((float *)out + at, row, (size_t)full * sizeof(float));
            }
        }
    }
    free(row);
    return 0;
}
