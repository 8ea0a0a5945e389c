/* BatchViews on a CPU: each view's random resized crop, colour jitter, grayscale, Gaussian blur,
 * solarisation and normalisation in one pass of calls while the view is in cache.
 *
 * The same arithmetic as the eager ops in batch_ops.py (torchvision's definitions): the crop is
 * resampled with antialiased triangle weights (resize_weights), separably; brightness, contrast
 * and saturation blend and clip to [0, 1]; hue turns the hexcone hue; every image applies its
 * jitter ops in its own order; the blur is separable with reflect padding. The eager path makes
 * the crops as two dense batched matrix products, runs each of 4 positions x 4 jitter ops as
 * tensor kernels over gathered rows and blurs with products of banded matrices; here each view is
 * resampled from its source image over the filters' nonzero taps only, straight into a private
 * buffer, runs its own sequence there (a few passes instead of dozens) and is written once to its
 * output row. Compiled at first use by lightning_tl/augment/cpu_kernel.py and called through
 * ctypes (which releases the GIL, so several threads can each take a share of the views).
 *
 * Entry points: ltl_views and ltl_openmp. The parameter table is float32 (n, stride), one row per
 * view. Its columns are described once, in lightning_tl/augment/view_spec.py (PARAM_COLUMNS), and
 * given to this file as -DLTL_COL_<NAME>=<column> flags by cpu_kernel.py; compiling without them
 * is an error.
 */
#include <float.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(LTL_COL_TOP) || !defined(LTL_COL_LEFT) || !defined(LTL_COL_HEIGHT) || !defined(LTL_COL_WIDTH) || \
    !defined(LTL_COL_FLIP) || !defined(LTL_COL_JITTER) || !defined(LTL_COL_FACTORS) || !defined(LTL_COL_ORDER) || \
    !defined(LTL_COL_GRAY) || !defined(LTL_COL_BLUR) || !defined(LTL_COL_SOLAR)
#error "compile with the -DLTL_COL_* column flags of lightning_tl.augment.view_spec.c_defines()"
#endif

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
 * partial sums stay in registers. */
typedef float vec16 __attribute__((vector_size(64)));
#define LANES 16

#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
/* Where one instruction shuffles 16 floats out of two registers by variable indices (AVX-512's
 * vpermt2ps, from GCC's __builtin_shuffle), the crop's row pass gathers its taps that way. */
#define LTL_WINDOWS 1
typedef int32_t ivec16 __attribute__((vector_size(64)));
#endif

static inline vec16 load16(const float *p) {
    vec16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* out[i] = sum_j wk[j] * taps[j][i] for i < w: k rows of taps combined, partial sums in registers.
 * Four (then two, then one) vectors of outputs at a time: a multiply-add waits for the previous
 * one on the same vector, so independent vectors keep the arithmetic units busy. */
static void combine(float *restrict out, const float *const *taps, const float *wk, int64_t k, int64_t w) {
    int64_t i = 0;
    for (; i + 4 * LANES <= w; i += 4 * LANES) {
        vec16 a0 = wk[0] * load16(taps[0] + i), a1 = wk[0] * load16(taps[0] + i + LANES);
        vec16 a2 = wk[0] * load16(taps[0] + i + 2 * LANES), a3 = wk[0] * load16(taps[0] + i + 3 * LANES);
        for (int64_t j = 1; j < k; ++j) {
            const float *p = taps[j] + i;
            a0 += wk[j] * load16(p);
            a1 += wk[j] * load16(p + LANES);
            a2 += wk[j] * load16(p + 2 * LANES);
            a3 += wk[j] * load16(p + 3 * LANES);
        }
        memcpy(out + i, &a0, sizeof a0);
        memcpy(out + i + LANES, &a1, sizeof a1);
        memcpy(out + i + 2 * LANES, &a2, sizeof a2);
        memcpy(out + i + 3 * LANES, &a3, sizeof a3);
    }
    for (; i + 2 * LANES <= w; i += 2 * LANES) {
        vec16 a0 = wk[0] * load16(taps[0] + i), a1 = wk[0] * load16(taps[0] + i + LANES);
        for (int64_t j = 1; j < k; ++j) {
            a0 += wk[j] * load16(taps[j] + i);
            a1 += wk[j] * load16(taps[j] + i + LANES);
        }
        memcpy(out + i, &a0, sizeof a0);
        memcpy(out + i + LANES, &a1, sizeof a1);
    }
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

/* The crop-and-resize weights of one axis, as batch_ops.resize_weights: output pixel i (mirrored
 * when reverse) takes the antialiased triangle weights of the input pixels inside [lo, lo +
 * length), normalised to sum 1, times gain. Only the nonzero taps are kept: output i reads
 * count[i] input pixels from first[i] on, with weights w[i * full + j]. Compiled without fused
 * multiply-adds (GCC's optimize attribute; never inlined into code compiled with them), so the
 * triangle's edges round to exactly 0 where the eager version's do. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off"), noinline))
#endif
static void axis_weights(float lo, float length, int64_t size, int64_t full, int reverse, float gain,
                         int64_t *first, int64_t *count, float *w) {
    float scale = length / (float)size;
    float inv = 1.0f / (scale > 1.0f ? scale : 1.0f);
    float hi = lo + length;
    float reach = (scale > 1.0f ? scale : 1.0f) + 1.0f; /* support, widened by a pixel */
    for (int64_t i = 0; i < size; ++i) {
        float o = reverse ? (float)(size - 1 - i) : (float)i;
        float centre = lo + (o + 0.5f) * scale;
        int64_t a = (int64_t)floorf(centre - reach), z = (int64_t)ceilf(centre + reach);
        a = a < 0 ? 0 : a;
        z = z > full - 1 ? full - 1 : z;
        float *row = w + i * full;
        float total = 0.0f;
        int64_t lead = -1, last = -1;
        for (int64_t j = a; j <= z; ++j) {
            float pixel = (float)j + 0.5f;
            float d = pixel * inv - centre * inv;
            float wv = 1.0f - fabsf(d);
            wv = wv > 0.0f ? wv : 0.0f;
            wv = (pixel >= lo && pixel < hi) ? wv : 0.0f;
            row[j - a] = wv;
            total += wv;
            if (wv != 0.0f) {
                lead = lead < 0 ? j : lead;
                last = j;
            }
        }
        first[i] = lead;
        count[i] = last - lead + 1;
        for (int64_t j = lead; j <= last; ++j) row[j - lead] = row[j - a] / total * gain;
    }
}

/* The crop box (top, left, height, width) of row t of a (src_c, full_h, full_w) source image (uint8 or
 * float32), flipped when its flip column is set, resized to (c, size, size) float32 at img: along each needed source row first
 * (into rows), then along columns with whole vectors. The other pointers are the scratch that
 * views() lays out. One source channel fills all c output channels. */
static void resample(const void *src, int src_u8, int64_t src_c, int64_t full_h, int64_t full_w, const float *t,
                     float gain, int64_t c, int64_t size, float *restrict img, float *restrict rows,
                     float *restrict line, float *restrict wy, float *restrict wx, float *restrict taps_x,
                     int32_t *restrict at_x, int64_t *index) {
    int64_t *fy = index, *ny = index + size, *fx = index + 2 * size, *nx = index + 3 * size;
    axis_weights(t[LTL_COL_TOP], t[LTL_COL_HEIGHT], size, full_h, 0, gain, fy, ny, wy);
    axis_weights(t[LTL_COL_LEFT], t[LTL_COL_WIDTH], size, full_w, t[LTL_COL_FLIP] > 0.5f, 1.0f, fx, nx, wx);
    int64_t r0 = fy[0], r1 = fy[0] + ny[0], c0 = fx[0], c1 = fx[0] + nx[0];
    for (int64_t i = 1; i < size; ++i) {
        r0 = fy[i] < r0 ? fy[i] : r0;
        r1 = fy[i] + ny[i] > r1 ? fy[i] + ny[i] : r1;
        c0 = fx[i] < c0 ? fx[i] : c0;
        c1 = fx[i] + nx[i] > c1 ? fx[i] + nx[i] : c1;
    }
    int64_t nr = r1 - r0, span = c1 - c0, most = 0;
    for (int64_t x = 0; x < size; ++x) most = nx[x] > most ? nx[x] : most;
    /* the column taps tap-major and padded with zero weights to `most` taps each, so every output
     * pixel runs the same loop (vectorised with gathers where the CPU has them); the line is
     * padded with zeros for the padded taps' reads */
    for (int64_t j = 0; j < most; ++j)
        for (int64_t x = 0; x < size; ++x) taps_x[j * size + x] = j < nx[x] ? wx[x * full_w + j] : 0.0f;
    for (int64_t x = 0; x < size; ++x) at_x[x] = (int32_t)(fx[x] - c0);
    for (int64_t x = span; x < span + most + 2 * LANES; ++x) line[x] = 0.0f;
#ifdef LTL_WINDOWS
    /* window[g]: the first source pixel of output group g's taps when they all lie within 32
     * pixels of it (enlarging or mildly shrinking crops), else -1; groups from the first -1 on
     * take the generic loop */
    int32_t *window = at_x + size;
    for (int64_t g = 0; g < size / LANES; ++g) {
        int64_t low = at_x[g * LANES], high = 0;
        for (int64_t x = g * LANES; x < (g + 1) * LANES; ++x) {
            low = at_x[x] < low ? at_x[x] : low;
            high = at_x[x] + nx[x] > high ? at_x[x] + nx[x] : high;
        }
        window[g] = high - low <= 2 * LANES ? (int32_t)low : -1;
    }
#endif
    for (int64_t ch = 0; ch < src_c; ++ch) {
        for (int64_t r = r0; r < r1; ++r) {
            int64_t at = (ch * full_h + r) * full_w + c0;
            if (src_u8) {
                const uint8_t *p = (const uint8_t *)src + at;
                for (int64_t x = 0; x < span; ++x) line[x] = (float)p[x];
            } else {
                memcpy(line, (const float *)src + at, (size_t)span * sizeof(float));
            }
            float *restrict dst = rows + (ch * nr + r - r0) * size;
            int64_t x = 0;
#ifdef LTL_WINDOWS
            for (; x + LANES <= size && window[x / LANES] >= 0; x += LANES) {
                /* 16 outputs whose taps lie in a 32-pixel window: each tap gathers with a two-register
                 * shuffle (indices taken modulo 32; a padded tap has weight 0) */
                const float *from = line + window[x / LANES];
                vec16 lo = load16(from), hi = load16(from + LANES);
                ivec16 idx;
                memcpy(&idx, at_x + x, sizeof idx);
                idx -= window[x / LANES];
                vec16 acc = load16(taps_x + x) * __builtin_shuffle(lo, hi, idx);
                for (int64_t j = 1; j < most; ++j) {
                    idx += 1;
                    acc += load16(taps_x + j * size + x) * __builtin_shuffle(lo, hi, idx);
                }
                memcpy(dst + x, &acc, sizeof acc);
            }
#endif
            for (int64_t o = x; o < size; ++o) dst[o] = taps_x[o] * line[at_x[o]];
            for (int64_t j = 1; j < most; ++j) {
                const float *restrict wj = taps_x + j * size, *restrict lj = line + j;
                for (int64_t o = x; o < size; ++o) dst[o] += wj[o] * lj[at_x[o]];
            }
        }
    }
    const float *taps[full_h];
    for (int64_t ch = 0; ch < src_c; ++ch) {
        for (int64_t i = 0; i < size; ++i) {
            for (int64_t j = 0; j < ny[i]; ++j) taps[j] = rows + (ch * nr + fy[i] + j - r0) * size;
            combine(img + (ch * size + i) * size, taps, wy + i * full_h, ny[i], size);
        }
    }
    for (int64_t ch = src_c; ch < c; ++ch) memcpy(img + ch * size * size, img, (size_t)(size * size) * sizeof(float));
}

static inline uint16_t to_bf16(float value) { /* round to nearest even, as torch's conversion */
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu)) return (uint16_t)((bits >> 16) | 0x40u);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* Views [begin, end) of one block, on one thread. View i is cut from image src_rows[i] of src,
 * (n_src, src_c, full_h, full_w) uint8 (times gain) or float32, with its crop box and flip (table
 * columns 0..4) and resized to size x size, repeating a single channel when c = 3; runs jitter
 * (in its own op order), grayscale, blur (when blur_kernels is not NULL and its blur flag is set)
 * on a private copy in cache; and writes it, solarised and normalised, to row target[i] of out,
 * (n_out, c, size, size) float32 or bfloat16. table and blur_kernels have one row per view i.
 * Returns 0, or -1 when scratch memory ran out. */
static int views(const void *src, int src_u8, int64_t src_c, int64_t full_h, int64_t full_w, float gain,
                 const int64_t *src_rows, void *out, int out_bf16, const int64_t *target, const float *table,
                 int64_t stride, const float *blur_kernels, int64_t k, const float *mean, const float *std,
                 int64_t begin, int64_t end, int64_t c, int64_t size) {
    int64_t hw = size * size, volume = c * hw, full = full_h > full_w ? full_h : full_w;
    /* scratch: the view, the blur's (volume + size + k), the resampled rows (src_c * full_h * size),
     * a padded source line (2 * full + 32), both axes' weights and the padded column taps (size *
     * full each), then the column taps' offsets and windows (int32) and the taps' first pixels and
     * counts (int64) */
    size_t floats = (size_t)(2 * volume + size + k + src_c * full_h * size + 2 * full + 2 * LANES +
                             size * (full_h + 2 * full_w));
    size_t bytes = floats * sizeof(float) + (size_t)(size + size / LANES + 1) * sizeof(int32_t);
    bytes = (bytes + 7) / 8 * 8;
    float *img = (float *)malloc(bytes + (size_t)(4 * size) * sizeof(int64_t));
    if (img == NULL) return -1;
    float *tmp = img + volume, *rows = tmp + volume + size + k, *line = rows + src_c * full_h * size;
    float *wy = line + 2 * full + 2 * LANES, *wx = wy + size * full_h, *taps_x = wx + size * full_w;
    int32_t *at_x = (int32_t *)(img + floats);
    int64_t *index = (int64_t *)((char *)img + bytes);
    size_t pixel = src_u8 ? 1 : sizeof(float);
    for (int64_t i = begin; i < end; ++i) {
        const float *t = table + i * stride;
        const char *image = (const char *)src + (size_t)(src_rows[i] * src_c * full_h * full_w) * pixel;
        resample(image, src_u8, src_c, full_h, full_w, t, gain, c, size, img, rows, line, wy, wx, taps_x, at_x, index);
        if (t[LTL_COL_JITTER] > 0.5f) {
            for (int position = 0; position < 4; ++position) {
                int op = (int)t[LTL_COL_ORDER + position];
                float factor = t[LTL_COL_FACTORS + op];
                if (op == 0) brightness(img, volume, factor);
                else if (op == 1) contrast(img, c, hw, factor);
                else if (c == 3 && op == 2) saturation(img, hw, factor);
                else if (c == 3 && op == 3) hue(img, hw, factor);
            }
        }
        if (c == 3 && t[LTL_COL_GRAY] > 0.5f) grayscale(img, hw);
        if (blur_kernels != NULL && t[LTL_COL_BLUR] > 0.5f) blur(img, tmp, c, size, size, blur_kernels + i * k, k);
        /* solarise and normalise on the way out: one pass, straight into the output row */
        int solarise = t[LTL_COL_SOLAR] > 0.5f;
        for (int64_t ch = 0; ch < c; ++ch) {
            const float *restrict p = img + ch * hw;
            float m = mean[ch], sd = std[ch];
            if (out_bf16) {
                uint16_t *restrict dst = (uint16_t *)out + target[i] * volume + ch * hw;
                if (solarise)
                    for (int64_t x = 0; x < hw; ++x) dst[x] = to_bf16(((p[x] >= 0.5f ? 1.0f - p[x] : p[x]) - m) / sd);
                else
                    for (int64_t x = 0; x < hw; ++x) dst[x] = to_bf16((p[x] - m) / sd);
            } else {
                float *restrict dst = (float *)out + target[i] * volume + ch * hw;
                if (solarise)
                    for (int64_t x = 0; x < hw; ++x) dst[x] = ((p[x] >= 0.5f ? 1.0f - p[x] : p[x]) - m) / sd;
                else
                    for (int64_t x = 0; x < hw; ++x) dst[x] = (p[x] - m) / sd;
            }
        }
    }
    free(img);
    return 0;
}

/* Views [begin, end) as views() makes them, cut into contiguous shares for `threads` threads.
 * Built with OpenMP, the threads are those of the OpenMP runtime already in the process (the
 * loader gives this library the libgomp that PyTorch loaded, by its soname), so they are the
 * threads PyTorch's own kernels run on, not a second set competing with them for the cores;
 * without OpenMP the caller runs a share per thread itself. Returns 0, or -1 when scratch memory
 * ran out. */
int ltl_views(const void *src, int src_u8, int64_t src_c, int64_t full_h, int64_t full_w, float gain,
              const int64_t *src_rows, void *out, int out_bf16, const int64_t *target, const float *table,
              int64_t stride, const float *blur_kernels, int64_t k, const float *mean, const float *std,
              int64_t begin, int64_t end, int64_t c, int64_t size, int threads) {
#ifdef _OPENMP
    if (threads > 1 && end - begin > 1) {
        int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
        {
            int64_t share = omp_get_num_threads(), me = omp_get_thread_num(), n = end - begin;
            failed |= views(src, src_u8, src_c, full_h, full_w, gain, src_rows, out, out_bf16, target, table, stride,
                            blur_kernels, k, mean, std, begin + n * me / share, begin + n * (me + 1) / share, c,
                            size) != 0;
        }
        return failed ? -1 : 0;
    }
#else
    (void)threads;
#endif
    return views(src, src_u8, src_c, full_h, full_w, gain, src_rows, out, out_bf16, target, table, stride,
                 blur_kernels, k, mean, std, begin, end, c, size);
}

/* 1 when built with OpenMP (ltl_views then runs its own threads), else 0. */
int ltl_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
