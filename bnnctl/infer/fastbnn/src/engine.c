/* Engine driver: picks the instruction-set variant, splits a batch into tiles and runs them on
 * threads.
 *
 * Work split: a batch is cut into tiles of a few images (CNV) or a few dozen (LFC). With at
 * least as many tiles as threads, every thread takes whole tiles from a shared counter (no
 * synchronisation inside a tile). With fewer tiles (one image, or a handful), all threads work
 * on the same tile together: each layer's rows (conv) or 64-row output groups (dense) are dealt
 * out round-robin and the team meets at a barrier before the next layer. */
#define _GNU_SOURCE 1
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fastbnn.h"

#if defined(_WIN32)
#define FB_THREADS 0
#else
#define FB_THREADS 1
#include <pthread.h>
#include <sched.h>
#endif

#define FB_CNV_TILE 8   /* images: the dense tail layers get a few rows per weight pass */
#define FB_LFC_TILE 64  /* images: 64 rows per pass over a 64-row weight group kept in L1 */

/* ---------------------------------------------------------------- instruction-set variants */

extern const fb_isa fb_isa_avx512, fb_isa_avx2, fb_isa_popcnt, fb_isa_neon, fb_isa_generic;

static const fb_isa *const all_isas[] = {
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
    &fb_isa_avx512, &fb_isa_avx2, &fb_isa_popcnt,
#endif
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
    &fb_isa_neon,
#endif
    &fb_isa_generic,
};

int fb_isa_count(void) { return (int)(sizeof(all_isas) / sizeof(all_isas[0])); }

const fb_isa *fb_isa_at(int i) { return all_isas[i]; }

const fb_isa *fb_isa_find(const char *name)
{
    const int n = fb_isa_count();
    for (int i = 0; i < n; i++) {
        if (!all_isas[i]->supported())
            continue;
        if (name == NULL || strcmp(name, all_isas[i]->name) == 0)
            return all_isas[i];
    }
    return NULL;
}

/* ---------------------------------------------------------------- barrier */

typedef struct {
    atomic_int count;
    atomic_int gen;
    int n;
} fb_barrier;

static void barrier_wait(fb_barrier *b)
{
    if (b->n <= 1)
        return;
    int gen = atomic_load(&b->gen);
    if (atomic_fetch_add(&b->count, 1) == b->n - 1) {
        atomic_store(&b->count, 0);
        atomic_fetch_add(&b->gen, 1);
        return;
    }
    /* Spin briefly (layers take microseconds), then yield: on a shared 2-core machine the
     * other thread may be descheduled and pure spinning would steal its core. */
    for (long spins = 0; atomic_load(&b->gen) == gen; spins++) {
#if FB_THREADS
        if (spins > 4000)
            sched_yield();
#endif
    }
}

/* ---------------------------------------------------------------- tiles */

typedef struct {
    const fb_model *m;
    const fb_isa *isa;
    const uint8_t *in;
    uint8_t *out;
    int n, tile, n_tiles, team;
    atomic_int next;
    atomic_int go; /* set once every thread exists, so `team` is final when work starts */
    fb_barrier bar;
    uint64_t *shared_act; /* team mode: the two activation buffers of the one tile in flight */
} fb_job;

static void *aligned_calloc(size_t words)
{
    /* 64-byte aligned for whole-cache-line vector loads; the original pointer sits just before */
    size_t bytes = words * 8 + 64 + sizeof(void *);
    void *raw = calloc(1, bytes);
    if (!raw)
        return NULL;
    uintptr_t p = ((uintptr_t)raw + sizeof(void *) + 63) & ~(uintptr_t)63;
    ((void **)p)[-1] = raw;
    return (void *)p;
}

static void aligned_free(void *p)
{
    if (p)
        free(((void **)p)[-1]);
}

void *fb_aligned_calloc(size_t words) { return aligned_calloc(words); }

void fb_aligned_free(void *p) { aligned_free(p); }

static void pack_lfc_input(const fb_model *m, const uint8_t *img, uint64_t *words)
{
    /* spec §4.2: pixel i -> bit i mod 64 of word i div 64; the bytes are already 0/1 bits */
    for (int w = 0; w < m->in_words; w++) {
        uint64_t v = 0;
        const int base = w * 64;
        const int end = base + 64 < m->in_bytes ? base + 64 : m->in_bytes;
        for (int i = base; i < end; i++)
            v |= (uint64_t)(img[i] != 0) << (i - base);
        words[w] = v;
    }
}

/* Runs one tile; tid/team select this thread's share of every layer. */
static void run_tile(fb_job *job, int t, int tid, int team, uint64_t *act, uint64_t *tmp)
{
    const fb_model *m = job->m;
    const fb_isa *isa = job->isa;
    const int start = t * job->tile;
    const int B = job->n - start < job->tile ? job->n - start : job->tile;
    const size_t aw = m->act_words;
    uint64_t *buf[2] = {act, act + (size_t)job->tile * aw};
    const uint8_t *in = job->in + (size_t)start * m->in_bytes;
    int cur = 0; /* buffer holding the current layer input (LFC, and CNV after layer 0) */

    if (!m->is_cnv) {
        for (int b = tid; b < B; b += team)
            pack_lfc_input(m, in + (size_t)b * m->in_bytes, buf[0] + b * aw);
        barrier_wait(&job->bar);
    }
    for (int l = 0; l < m->n_layers; l++) {
        const fb_layer *L = &m->layers[l];
        const int first_cnv = m->is_cnv && l == 0;
        uint64_t *dst = first_cnv ? buf[0] : buf[cur ^ 1];
        if (L->conv) {
            const int rows = L->pool ? L->out_dim / 2 : L->out_dim;
            for (int u = tid; u < B * rows; u += team) {
                const int b = u / rows;
                const void *src = first_cnv ? (const void *)(in + (size_t)b * m->in_bytes)
                                            : (const void *)(buf[cur] + b * aw);
                isa->conv_unit(L, src, dst + b * aw, u % rows, tmp);
            }
        } else if (team == 1) {
            isa->dense(L, buf[cur], dst, (ptrdiff_t)aw, B, 0, L->mh);
        } else {
            for (int g = tid; g < L->mh / 64; g += team)
                isa->dense(L, buf[cur], dst, (ptrdiff_t)aw, B, g * 64, g * 64 + 64);
        }
        cur = first_cnv ? 0 : cur ^ 1;
        barrier_wait(&job->bar);
    }
    /* results: CNV int16 scores (N, mh); LFC the first output word (N,) */
    for (int b = tid; b < B; b += team) {
        const uint64_t *src = buf[cur] + b * aw;
        if (m->is_cnv)
            memcpy(job->out + (size_t)(start + b) * m->out_mh * 2, src, (size_t)m->out_mh * 2);
        else
            memcpy(job->out + (size_t)(start + b) * 8, src, 8);
    }
    barrier_wait(&job->bar);
}

typedef struct {
    fb_job *job;
    int tid;
    uint64_t *tmp; /* two conv rows before pooling */
    uint64_t *own; /* batch mode: this thread's two activation buffers */
} fb_worker;

static void *worker(void *arg)
{
    fb_worker *w = (fb_worker *)arg;
    fb_job *job = w->job;
    for (long spins = 0; !atomic_load(&job->go); spins++) {
#if FB_THREADS
        if (spins > 1000)
            sched_yield();
#endif
    }
    if (job->team == 1) {
        for (;;) {
            int t = atomic_fetch_add(&job->next, 1);
            if (t >= job->n_tiles)
                break;
            run_tile(job, t, 0, 1, w->own, w->tmp);
        }
    } else if (w->tid < job->team) {
        for (int t = 0; t < job->n_tiles; t++)
            run_tile(job, t, w->tid, job->team, job->shared_act, w->tmp);
    }
    return NULL;
}

static void free_workers(fb_worker *workers, int threads)
{
    for (int i = 0; i < threads; i++) {
        aligned_free(workers[i].tmp);
        aligned_free(workers[i].own);
    }
}

int fb_run(const fb_model *m, const fb_isa *isa, const void *in, void *out, int n, int threads)
{
    if (n <= 0)
        return 0;
#if !FB_THREADS
    threads = 1;
#endif
    if (threads < 1)
        threads = 1;
    if (threads > 256)
        threads = 256;
    fb_job job;
    memset(&job, 0, sizeof job);
    job.m = m;
    job.isa = isa;
    job.in = (const uint8_t *)in;
    job.out = (uint8_t *)out;
    job.n = n;
    /* Tiles: no more than a thread's share, so that a small batch still feeds every thread. */
    const int tile = m->is_cnv ? FB_CNV_TILE : FB_LFC_TILE;
    const int per_thread = (n + threads - 1) / threads;
    job.tile = per_thread < tile ? per_thread : tile;
    job.n_tiles = (n + job.tile - 1) / job.tile;
    job.team = job.n_tiles < threads ? threads : 1;
    if (job.team == 1 && threads > job.n_tiles)
        threads = job.n_tiles;
    atomic_init(&job.next, 0);
    atomic_init(&job.go, 0);
    atomic_init(&job.bar.count, 0);
    atomic_init(&job.bar.gen, 0);

    /* every buffer is allocated before any thread starts: a failure is a plain error return */
    const size_t act = 2 * (size_t)job.tile * m->act_words;
    fb_worker *workers = calloc((size_t)threads, sizeof *workers);
    if (!workers)
        return -1;
    int ok = 1;
    if (job.team > 1)
        ok = (job.shared_act = aligned_calloc(act)) != NULL;
    for (int i = 0; i < threads && ok; i++) {
        workers[i].job = &job;
        workers[i].tid = i;
        workers[i].tmp = aligned_calloc(m->tmp_words + 8);
        workers[i].own = job.team == 1 ? aligned_calloc(act) : NULL;
        ok = workers[i].tmp && (job.team > 1 || workers[i].own);
    }
    if (!ok) {
        free_workers(workers, threads);
        free(workers);
        aligned_free(job.shared_act);
        return -1;
    }
#if FB_THREADS
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    int started = 1;
    for (int i = 1; ids && i < threads; i++) {
        if (pthread_create(&ids[i], NULL, worker, &workers[i]) != 0)
            break;
        started++;
    }
    /* a team short of members would wait forever at its barriers: shrink it before `go` */
    if (job.team > 1)
        job.team = started;
    job.bar.n = job.team;
    atomic_store(&job.go, 1);
    worker(&workers[0]);
    for (int i = 1; i < started; i++)
        pthread_join(ids[i], NULL);
    free(ids);
#else
    job.team = 1;
    job.bar.n = 1;
    atomic_store(&job.go, 1);
    worker(&workers[0]);
#endif
    free_workers(workers, threads);
    free(workers);
    aligned_free(job.shared_act);
    return 0;
}

/* ---------------------------------------------------------------- microbenchmark */

typedef struct {
    const fb_isa *isa;
    int kw;
    long reps;
    uint64_t macs, sum;
} fb_bench_arg;

static void *bench_worker(void *arg)
{
    fb_bench_arg *a = (fb_bench_arg *)arg;
    uint64_t *x = aligned_calloc((size_t)a->kw * 4);
    uint64_t *w = aligned_calloc((size_t)a->kw * 64);
    if (!x || !w) {
        aligned_free(x);
        aligned_free(w);
        return NULL;
    }
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < a->kw * 4; i++)
        x[i] = s = s * 6364136223846793005ull + 1442695040888963407ull;
    for (int i = 0; i < a->kw * 64; i++)
        w[i] = s = s * 6364136223846793005ull + 1442695040888963407ull;
    a->sum = a->isa->bench(x, w, a->kw, a->reps, &a->macs);
    aligned_free(x);
    aligned_free(w);
    return NULL;
}

uint64_t fb_bench(const fb_isa *isa, int kw, long reps, int threads, uint64_t *macs)
{
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
#if !FB_THREADS
    threads = 1;
#endif
    fb_bench_arg args[64];
    for (int i = 0; i < threads; i++) {
        args[i].isa = isa;
        args[i].kw = kw;
        args[i].reps = reps;
        args[i].macs = 0;
        args[i].sum = 0;
    }
#if FB_THREADS
    pthread_t ids[64];
    int started = 1;
    for (int i = 1; i < threads; i++) {
        if (pthread_create(&ids[i], NULL, bench_worker, &args[i]) != 0)
            break;
        started++;
    }
    bench_worker(&args[0]);
    for (int i = 1; i < started; i++)
        pthread_join(ids[i], NULL);
#else
    int started = 1;
    bench_worker(&args[0]);
#endif
    uint64_t total = 0, sum = 0;
    for (int i = 0; i < started; i++) {
        total += args[i].macs;
        sum += args[i].sum;
    }
    *macs = total;
    return sum; /* the caller keeps it, so the kernel cannot be optimised away */
}
