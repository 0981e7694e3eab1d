/* The parameter lists of the kernels of cuda/kernels/hashevict.cu, as C
 * structs: a C compiler lays them out as CUDA lays out a kernel's parameter
 * buffer (natural alignment), so the fake drivers of the tests decode the
 * buffers the Go launchers pack with them. Keep in step with hashevict.cu. */
#ifndef HEV_KERNEL_PARAMS_H
#define HEV_KERNEL_PARAMS_H
typedef const void *P;
typedef unsigned long long u64;
struct hash_p { P x; int dtype, dim, heads, rows; long long head_stride, token_stride; P rt; int bits; P codes, bad; };
struct farthest_p { P table; long long table_stride; int bits, slots; P probes; long long probe_head, probe_token;
                    int per_token, tokens; P skip; int skip_stride; P skip_count, keys; };
struct score_p { P table; long long table_stride; int bits, slots; P probes; long long probe_head, probe_token;
                 int per_token, tokens; P skip; int skip_stride; P skip_count; P score, count; long long score_stride;
                 int mode; float inv, decay, keep; int argmax; P keys; };
struct keys_p { P keys; int heads; P out; int out_stride; };
struct store_p { P table; long long table_stride; int bits; P probes; long long probe_head, probe_token;
                 int per_token, tokens; P score, count; long long score_stride; float inv; P new_codes;
                 long long new_head, new_token; int token, fixed_slot; P slots; int slots_stride; P out_slots;
                 P positions; long long pos_stride; int position; P out_evicted; P guard; int n_sink, n_recent; };
struct totals_p { P scores; int tables, slots; P totals; };
struct readbw_p { P p; long long n; u64 never; P sink; };
struct guard_p { P guard; int n_sink, n_recent; P positions; long long pos_stride; int hi, heads; P skip, skip_count; };
#endif
