// place_pattern.c — the fork's calling pattern without llama.cpp: one C thread makes, per token,
// for each of SmolLM2-135M's 30 layers, GAP µs of its own work (a spin on its CPU clock, standing
// in for the model) and then one hashevict_place of one token (9 query / 3 KV heads, head_dim 64,
// a full 512-slot cache, so every call evicts). It prints, as one JSON line, the calling thread's
// CPU time, the process's, and that of all other threads (the Go runtime's own): what the library
// costs beyond the calls themselves. From the repository root:
//
//   cc -O2 integrations/llamacpp-fork/place_pattern.c -Iinclude -Lbuild -lhashevict -Wl,-rpath,$PWD/build -o build/place-pattern
//   build/place-pattern [TOKENS [GAP_US]]       (default 300 tokens, 450 µs: ~14 ms per token)
#define _GNU_SOURCE
#include "hashevict.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double clock_s(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static volatile double sink;

static void spin(double s) {
    const double t0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    double x = 1;
    while (clock_s(CLOCK_THREAD_CPUTIME_ID) - t0 < s) {
        for (int i = 0; i < 200; i++) x = x * 1.0000001 + 1e-9;
    }
    sink = x;
}

// The CPU time of every thread but the caller's, from the scheduler's own account (ns).
static double others_s(void) {
    DIR * d = opendir("/proc/self/task");
    if (!d) return -1;
    const long me = syscall(SYS_gettid);
    double sum = 0;
    for (struct dirent * e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || atol(e->d_name) == me) continue;
        char p[300];
        snprintf(p, sizeof p, "/proc/self/task/%s/schedstat", e->d_name);
        FILE * f = fopen(p, "r");
        unsigned long long ns = 0;
        if (f) {
            if (fscanf(f, "%llu", &ns) != 1) ns = 0;
            fclose(f);
        }
        sum += ns * 1e-9;
    }
    closedir(d);
    return sum;
}

static int check(hashevict_status st, const char * what) {
    if (st == HASHEVICT_OK) return 0;
    fprintf(stderr, "place-pattern: %s: %s: %s\n", what, hashevict_status_string(st), hashevict_last_error());
    return 1;
}

int main(int argc, char ** argv) {
    const int tokens = argc > 1 ? atoi(argv[1]) : 300;
    const double gap = (argc > 2 ? atof(argv[2]) : 450) * 1e-6;
    enum { LAYERS = 30, QH = 9, KVH = 3, DIM = 64, BUDGET = 512 };

    hashevict_params p = hashevict_default_params();
    p.mode = HASHEVICT_MODE_SLOT;
    p.n_layers = LAYERS;
    p.n_kv_heads = KVH;
    p.n_q_heads = QH;
    p.head_dim = DIM;
    p.budget = BUDGET;
    hashevict_engine * e = NULL;
    if (check(hashevict_engine_create(&p, &e), "engine_create") || check(hashevict_seq_add(e, 0), "seq_add")) return 1;

    static float q[QH * DIM], k[KVH * DIM];
    int32_t slots[KVH];
    hashevict_tensor qd = {0}, kd = {0};
    qd.data = q;
    qd.dtype = HASHEVICT_DTYPE_F32;
    qd.device = HASHEVICT_DEVICE_HOST;
    qd.head_dim = DIM;
    qd.n_heads = QH;
    qd.n_tokens = 1;
    qd.head_stride = DIM * sizeof(float);
    qd.token_stride = sizeof q;
    kd = qd;
    kd.data = k;
    kd.n_heads = KVH;
    kd.token_stride = sizeof k;

    srand(1);
    double t0 = 0, p0 = 0, o0 = 0, w0 = 0;
    for (int32_t pos = 0; pos < BUDGET + tokens; pos++) {
        if (pos == BUDGET) {  // the cache is full from here on: every call evicts
            t0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
            p0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
            o0 = others_s();
            w0 = clock_s(CLOCK_MONOTONIC);
        }
        for (int l = 0; l < LAYERS; l++) {
            for (int i = 0; i < QH * DIM; i++) q[i] = rand() / (float) RAND_MAX - 0.5f;
            for (int i = 0; i < KVH * DIM; i++) k[i] = rand() / (float) RAND_MAX - 0.5f;
            if (pos >= BUDGET) spin(gap);
            if (check(hashevict_place(e, 0, l, &qd, &kd, &pos, 1, slots, NULL), "place")) return 1;
        }
    }
    const double thread = clock_s(CLOCK_THREAD_CPUTIME_ID) - t0, process = clock_s(CLOCK_PROCESS_CPUTIME_ID) - p0;
    const double others = others_s() - o0, wall = clock_s(CLOCK_MONOTONIC) - w0;
    printf("{\"tokens\": %d, \"gap_us\": %.0f, \"thread_cpu_s\": %.4f, \"process_cpu_s\": %.4f, "
           "\"other_threads_cpu_s\": %.4f, \"wall_s\": %.4f, \"thread_over_process\": %.4f}\n",
           tokens, gap * 1e6, thread, process, others, wall, thread / process);
    hashevict_engine_free(e);
    return 0;
}
