/* A fake libcuda for the Go tests of package cuda, built by the tests with
 * the system C compiler. It exports every entry point the package looks up;
 * hev_stub_set chooses what they return, so that one library plays the
 * toolkit's stub driver (cuInit -> 34), a machine without a GPU (100), a
 * driver without devices, and a fake GPU whose pointers, streams and module
 * loads misbehave on demand. cuLaunchKernel keeps the parameter buffer it
 * was given, and hev_stub_field decodes it with the layout the C compiler
 * gives the kernels' parameter lists (mirrored below from hashevict.cu), so
 * the Go packing of every kernel's arguments is checked without a GPU.
 * Built with -DHEV_STUB_PARTIAL it exports cuInit only. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_params.h"

typedef int CUresult;

#ifdef HEV_STUB_PARTIAL
CUresult cuInit(unsigned flags) { (void)flags; return 0; }
#else

enum { K_INIT, K_COUNT, K_MEMTYPE, K_STREAMCTX, K_MODLOAD, K_CURCTX, K_ALLOC, K_PTRCTX, K_VERSION, K_MODLOAD2, K_N };
static long long cfg[K_N] = {0, 1, 2, 0x1000, 0, 0, 0, 0x1000, 13000, 0};
static int loads; /* cuModuleLoadData calls: the second gets K_MODLOAD2 */

void hev_stub_set(int key, long long value) {
    if (key >= 0 && key < K_N) cfg[key] = value;
    loads = 0;
}

static const char *names[][2] = {
    {"0", "CUDA_SUCCESS"},         {"2", "CUDA_ERROR_OUT_OF_MEMORY"}, {"34", "CUDA_ERROR_STUB_LIBRARY"},
    {"100", "CUDA_ERROR_NO_DEVICE"}, {"209", "CUDA_ERROR_NO_BINARY_FOR_GPU"}, {"222", "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"}, {"1", "CUDA_ERROR_INVALID_VALUE"},
};

CUresult cuGetErrorName(CUresult r, const char **s) {
    char buf[16];
    int n = 0, v = r;
    char tmp[16];
    do tmp[n++] = (char)('0' + v % 10), v /= 10; while (v);
    for (int i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    buf[n] = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(names[i][0], buf)) return *s = names[i][1], 0;
    *s = NULL;
    return 1;
}
CUresult cuGetErrorString(CUresult r, const char **s) {
    *s = r == 34 ? "CUDA driver is a stub library" : "stub description";
    return 0;
}
CUresult cuInit(unsigned flags) { (void)flags; return (CUresult)cfg[K_INIT]; }
CUresult cuDriverGetVersion(int *v) { *v = (int)cfg[K_VERSION]; return 0; }
CUresult cuDeviceGetCount(int *n) { *n = (int)cfg[K_COUNT]; return 0; }
CUresult cuDeviceGet(int *d, int ordinal) { *d = ordinal; return ordinal < cfg[K_COUNT] ? 0 : 101; }
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    (void)dev;
    *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 16 ? 132 : 0;
    return 0;
}
CUresult cuDeviceGetName(char *name, int len, int dev) {
    (void)dev;
    strncpy(name, "Fake GPU", (size_t)len);
    return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { *ctx = (void *)(uintptr_t)(0x1000 + dev); return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { (void)dev; return 0; }
CUresult cuCtxGetCurrent(void **ctx) { *ctx = (void *)(uintptr_t)cfg[K_CURCTX]; return 0; }
CUresult cuCtxGetDevice(int *d) { *d = 0; return 0; }
CUresult cuCtxPushCurrent_v2(void *ctx) { (void)ctx; return 0; }
CUresult cuCtxPopCurrent_v2(void **ctx) { *ctx = NULL; return 0; }
CUresult cuCtxSynchronize(void) { return 0; }
CUresult cuPointerGetAttribute(void *data, int attr, u64 ptr) {
    (void)ptr;
    if (attr == 2) {
        if (cfg[K_MEMTYPE] == 0) return 1;
        *(unsigned *)data = (unsigned)cfg[K_MEMTYPE];
        return 0;
    }
    if (attr == 1) { *(void **)data = (void *)(uintptr_t)cfg[K_PTRCTX]; return 0; }
    if (attr == 9) { *(int *)data = 0; return 0; }
    return 1;
}
CUresult cuStreamGetCtx(void *stream, void **ctx) {
    (void)stream;
    *ctx = (void *)(uintptr_t)cfg[K_STREAMCTX];
    return 0;
}

static const char *kernels[] = {"hev_hash", "hev_farthest", "hev_score_step", "hev_keys_to_slots",
                                "hev_store", "hev_token_totals", "hev_read_bw", "hev_guard"};
CUresult cuModuleLoadData(void **mod, const void *image) {
    (void)image;
    *mod = (void *)0x42;
    return (CUresult)cfg[loads++ == 0 ? K_MODLOAD : K_MODLOAD2];
}
CUresult cuModuleUnload(void *mod) { (void)mod; return 0; }
CUresult cuModuleGetFunction(void **fn, void *mod, const char *name) {
    (void)mod;
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        if (!strcmp(kernels[i], name)) return *fn = (void *)(uintptr_t)(i + 1), 0;
    return 500;
}
CUresult cuFuncGetAttribute(int *v, int attr, void *fn) {
    (void)fn;
    *v = attr == 6 ? 90 : 90;
    return 0;
}

static unsigned char last_params[1024];
static size_t last_size;
static int last_fn, launches;
static unsigned last_grid[3], last_block, last_smem;

CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, void *stream, void **params, void **extra) {
    (void)by, (void)bz, (void)stream;
    if (params != NULL || extra == NULL || extra[0] != (void *)1 || extra[2] != (void *)2 || extra[4] != NULL)
        return 1;
    last_size = *(size_t *)extra[3];
    if (last_size > sizeof last_params) return 1;
    memcpy(last_params, extra[1], last_size);
    last_fn = (int)(uintptr_t)fn - 1;
    last_grid[0] = gx, last_grid[1] = gy, last_grid[2] = gz, last_block = bx, last_smem = smem;
    launches++;
    return 0;
}

static u64 next_addr = 0x7f0000000000ull;
CUresult cuMemAlloc_v2(u64 *p, size_t n) {
    if (cfg[K_ALLOC]) return (CUresult)cfg[K_ALLOC];
    *p = next_addr;
    next_addr += (n + 255) & ~(size_t)255;
    return 0;
}
CUresult cuMemFree_v2(u64 p) { (void)p; return 0; }
CUresult cuMemAllocHost_v2(void **p, size_t n) { *p = calloc(1, n); return *p ? 0 : 2; }
CUresult cuMemFreeHost(void *p) { free(p); return 0; }
CUresult cuMemcpyHtoDAsync_v2(u64 d, const void *s, size_t n, void *st) { (void)d, (void)s, (void)n, (void)st; return 0; }
CUresult cuMemcpyDtoHAsync_v2(void *d, u64 s, size_t n, void *st) { (void)s, (void)st; memset(d, 0, n); return 0; }
CUresult cuMemcpyDtoDAsync_v2(u64 d, u64 s, size_t n, void *st) { (void)d, (void)s, (void)n, (void)st; return 0; }
CUresult cuMemsetD32Async(u64 d, unsigned v, size_t n, void *st) { (void)d, (void)v, (void)n, (void)st; return 0; }
CUresult cuStreamSynchronize(void *s) { (void)s; return 0; }
CUresult cuStreamQuery(void *s) { (void)s; return 0; }
CUresult cuStreamCreate(void **s, unsigned f) { (void)f; *s = (void *)0x77; return 0; }
CUresult cuStreamDestroy_v2(void *s) { (void)s; return 0; }
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) { *f = 1 << 30, *t = 1 << 30; return 0; }
CUresult cuEventCreate(void **e, unsigned f) { (void)f; *e = (void *)0x88; return 0; }
CUresult cuEventRecord(void *e, void *s) { (void)e, (void)s; return 0; }
CUresult cuEventSynchronize(void *e) { (void)e; return 0; }
CUresult cuEventElapsedTime(float *ms, void *a, void *b) { (void)a, (void)b; *ms = 1.0f; return 0; }
CUresult cuEventDestroy_v2(void *e) { (void)e; return 0; }

#define F(s, m) {offsetof(struct s, m), sizeof(((struct s *)0)->m)}
static const size_t layout[][32][2] = {
    {F(hash_p, x), F(hash_p, dtype), F(hash_p, dim), F(hash_p, heads), F(hash_p, rows), F(hash_p, head_stride),
     F(hash_p, token_stride), F(hash_p, rt), F(hash_p, bits), F(hash_p, codes), F(hash_p, bad)},
    {F(farthest_p, table), F(farthest_p, table_stride), F(farthest_p, bits), F(farthest_p, slots),
     F(farthest_p, probes), F(farthest_p, probe_head), F(farthest_p, probe_token), F(farthest_p, per_token),
     F(farthest_p, tokens), F(farthest_p, skip), F(farthest_p, skip_stride), F(farthest_p, skip_count),
     F(farthest_p, keys)},
    {F(score_p, table), F(score_p, table_stride), F(score_p, bits), F(score_p, slots), F(score_p, probes),
     F(score_p, probe_head), F(score_p, probe_token), F(score_p, per_token), F(score_p, tokens), F(score_p, skip),
     F(score_p, skip_stride), F(score_p, skip_count), F(score_p, score), F(score_p, count),
     F(score_p, score_stride), F(score_p, mode), F(score_p, inv), F(score_p, decay), F(score_p, keep),
     F(score_p, argmax), F(score_p, keys)},
    {F(keys_p, keys), F(keys_p, heads), F(keys_p, out), F(keys_p, out_stride)},
    {F(store_p, table), F(store_p, table_stride), F(store_p, bits), F(store_p, probes), F(store_p, probe_head),
     F(store_p, probe_token), F(store_p, per_token), F(store_p, tokens), F(store_p, score), F(store_p, count),
     F(store_p, score_stride), F(store_p, inv), F(store_p, new_codes), F(store_p, new_head), F(store_p, new_token),
     F(store_p, token), F(store_p, fixed_slot), F(store_p, slots), F(store_p, slots_stride), F(store_p, out_slots),
     F(store_p, positions), F(store_p, pos_stride), F(store_p, position), F(store_p, out_evicted), F(store_p, guard),
     F(store_p, n_sink), F(store_p, n_recent)},
    {F(totals_p, scores), F(totals_p, tables), F(totals_p, slots), F(totals_p, totals)},
    {F(readbw_p, p), F(readbw_p, n), F(readbw_p, never), F(readbw_p, sink)},
    {F(guard_p, guard), F(guard_p, n_sink), F(guard_p, n_recent), F(guard_p, positions), F(guard_p, pos_stride),
     F(guard_p, hi), F(guard_p, heads), F(guard_p, skip), F(guard_p, skip_count)},
};
static const size_t sizes[] = {sizeof(struct hash_p), sizeof(struct farthest_p), sizeof(struct score_p),
                               sizeof(struct keys_p), sizeof(struct store_p), sizeof(struct totals_p),
                               sizeof(struct readbw_p), sizeof(struct guard_p)};

/* hev_stub_last reports the last launch: kernel index, launches so far,
 * grid, block, dynamic shared memory, and whether the buffer size is the
 * struct's (rounded to 8). */
int hev_stub_last(int *fn, unsigned *grid, unsigned *block, unsigned *smem, int *size_ok) {
    *fn = last_fn;
    memcpy(grid, last_grid, sizeof last_grid);
    *block = last_block;
    *smem = last_smem;
    *size_ok = last_fn >= 0 && last_size == ((sizes[last_fn] + 7) & ~(size_t)7);
    return launches;
}

/* hev_stub_field decodes parameter i of the last launch (zero-extended);
 * returns 0 past the last parameter. */
int hev_stub_field(int i, u64 *value) {
    if (last_fn < 0 || i < 0 || i >= 32) return 0;
    size_t off = layout[last_fn][i][0], size = layout[last_fn][i][1];
    if (size == 0) return 0;
    *value = 0;
    memcpy(value, last_params + off, size);
    return 1;
}
#endif
