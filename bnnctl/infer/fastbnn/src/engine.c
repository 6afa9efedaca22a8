/* Engine driver: picks the instruction-set variant, splits a batch into tiles and runs them on
 * threads.
 *
 * Work split: a batch is cut into tiles of a few images (CNV) or a few dozen (LFC), each run
 * layer by layer with its activations kept packed in two small buffers (so memory does not grow
 * with the batch). With at least as many tiles as threads, every thread takes whole tiles from a
 * shared counter (no synchronisation inside a tile). With fewer tiles (one image, or a handful),
 * a team of threads works on the same tile: the leading layers with enough work are dealt out
 * by rows (conv) or 64-row output groups (dense), with a barrier after each, and thread 0 does
 * the small tail. Whether to form a team at all is the caller's choice (`split`), by default
 * decided from the load average (see idle_team). */
#define _GNU_SOURCE 1
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "isa_common.h"

#if defined(_WIN32)
#define FB_THREADS 0
#else
#define FB_THREADS 1
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#endif

#define FB_CNV_TILE 8   /* images: the dense tail layers get a few rows per weight pass */
#define FB_LFC_TILE 64  /* images: 64 rows per pass over a 64-row weight group kept in L1 */

/* ---------------------------------------------------------------- instruction-set variants */

extern const fb_isa fb_isa_avx512, fb_isa_avx2, fb_isa_popcnt, fb_isa_neon, fb_isa_generic;

static const fb_isa *const all_isas[] = { /* best first */
#ifdef FB_X86_AVX512
    &fb_isa_avx512,
#endif
#ifdef FB_X86
    &fb_isa_avx2, &fb_isa_popcnt,
#endif
#ifdef FB_NEON
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

/* Spin briefly (layers take microseconds), then sleep on a condition variable. Sleeping
 * matters on a busy machine: a waiter that only yielded could keep the core from the thread it
 * waits for until the next scheduler tick (milliseconds). */
#define FB_SPINS 2000

typedef struct {
    atomic_int count;
    atomic_int gen;
    atomic_int n; /* may shrink before the last arrival (a thread that could not be created) */
#if FB_THREADS
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
} fb_barrier;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void barrier_wait(fb_barrier *b)
{
    if (atomic_load(&b->n) <= 1)
        return;
#if FB_THREADS
    const int gen = atomic_load(&b->gen);
    if (atomic_fetch_add(&b->count, 1) == atomic_load(&b->n) - 1) {
        atomic_store(&b->count, 0);
        pthread_mutex_lock(&b->mu);
        atomic_fetch_add(&b->gen, 1);
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        return;
    }
    for (int spins = 0; spins < FB_SPINS; spins++) {
        if (atomic_load(&b->gen) != gen)
            return;
        cpu_relax();
    }
    /* the last thread bumps gen under the mutex, so checking it under the mutex loses no wake-up */
    pthread_mutex_lock(&b->mu);
    while (atomic_load(&b->gen) == gen)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
#endif
}

/* ---------------------------------------------------------------- tiles */

typedef struct {
    const fb_model *m;
    const fb_isa *isa;
    const uint8_t *in;
    uint8_t *out;
    int n, tile, n_tiles, team;
    atomic_int next;
    fb_barrier start; /* every thread meets here first, so `team` is final when work starts */
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

/* Rough cost of a layer on B images, in word operations (one word of one row). */
static double layer_work(const fb_layer *L, int B)
{
    const double pixels = L->conv ? (double)L->out_dim * L->out_dim : 1.0;
    const double words = L->in_kind == IN_FIX8 ? 3.0 * L->ppseg : (double)L->kw * (L->w_tern ? 2 : 1);
    return B * pixels * L->mh * words;
}

/* Below this much work per thread a layer is not worth a barrier (about 5 us of kernel time;
 * on a busy machine a barrier can cost far more, as the partner thread may be descheduled). */
#define FB_SHARE_WORK 65536.0

/* Runs one tile; tid/team select this thread's share of every layer. In a team, the leading
 * layers with enough work are shared (rows or 64-row groups dealt out round-robin, a barrier
 * after each); from the first layer too small to share, thread 0 finishes the tile alone. */
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

    int shared_layers = 0; /* the leading layers the whole team works on */
    while (team > 1 && shared_layers < m->n_layers) {
        const fb_layer *L = &m->layers[shared_layers];
        const int units = L->conv ? B * (L->pool ? L->out_dim / 2 : L->out_dim) : L->mh / 64;
        if (units < 2 * team || layer_work(L, B) < FB_SHARE_WORK * team)
            break;
        shared_layers++;
    }
    if (!m->is_cnv) {
        const int step = shared_layers ? team : 1;
        if (shared_layers || tid == 0)
            for (int b = shared_layers ? tid : 0; b < B; b += step)
                pack_lfc_input(m, in + (size_t)b * m->in_bytes, buf[0] + b * aw);
        if (shared_layers)
            barrier_wait(&job->bar);
    }
    for (int l = 0; l < m->n_layers; l++) {
        const fb_layer *L = &m->layers[l];
        const int shared = l < shared_layers;
        const int me = shared ? tid : 0, all = shared ? team : 1;
        const int first_cnv = m->is_cnv && l == 0;
        uint64_t *dst = first_cnv ? buf[0] : buf[cur ^ 1];
        if (!shared && tid != 0)
            break; /* thread 0 finishes the tile */
        if (L->conv) {
            const int rows = L->pool ? L->out_dim / 2 : L->out_dim;
            for (int u = me; u < B * rows; u += all) {
                const int b = u / rows;
                const void *src = first_cnv ? (const void *)(in + (size_t)b * m->in_bytes)
                                            : (const void *)(buf[cur] + b * aw);
                isa->conv_unit(L, src, dst + b * aw, u % rows, tmp);
            }
        } else if (all == 1) {
            isa->dense(L, buf[cur], dst, (ptrdiff_t)aw, B, 0, L->mh);
        } else {
            for (int g = me; g < L->mh / 64; g += all)
                isa->dense(L, buf[cur], dst, (ptrdiff_t)aw, B, g * 64, g * 64 + 64);
        }
        cur = first_cnv ? 0 : cur ^ 1;
        if (shared)
            barrier_wait(&job->bar);
    }
    if (tid == 0) {
        /* results: CNV int16 scores (N, mh); LFC the first output word (N,) */
        for (int b = 0; b < B; b++) {
            const uint64_t *src = buf[cur] + b * aw;
            if (m->is_cnv)
                memcpy(job->out + (size_t)(start + b) * m->out_mh * 2, src, (size_t)m->out_mh * 2);
            else
                memcpy(job->out + (size_t)(start + b) * 8, src, 8);
        }
    }
    /* the team reuses the same buffers for the next tile */
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
    barrier_wait(&job->start);
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

/* Threads a team may use for one image, given the machine's load: layers take microseconds, so
 * a team member that another process preempts stalls the whole team at the next barrier (a
 * scheduler tick, milliseconds). The caller's own thread is part of the load. */
static int idle_team(int threads)
{
#if FB_THREADS
    /* the load average changes slowly: read it (it is a file read) at most every 100 ms */
    static atomic_long cached_milli = -1, cached_at_ms = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const long now_ms = (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    long milli = atomic_load(&cached_milli);
    if (milli < 0 || now_ms - atomic_load(&cached_at_ms) > 100) {
        double load;
        if (getloadavg(&load, 1) != 1)
            return threads;
        milli = (long)(load * 1000);
        atomic_store(&cached_milli, milli);
        atomic_store(&cached_at_ms, now_ms);
    }
    static atomic_long online = 0; /* sysconf reads /sys each time: once is enough */
    long cpus = atomic_load(&online);
    if (cpus == 0) {
        cpus = sysconf(_SC_NPROCESSORS_ONLN);
        atomic_store(&online, cpus);
    }
    if (cpus < 1)
        return threads;
    double free_cpus = (double)cpus - milli / 1000.0 + 1.0;
    int team = free_cpus < 1.0 ? 1 : (int)(free_cpus + 0.5);
    return team < threads ? team : threads;
#else
    (void)threads;
    return 1;
#endif
}

int fb_run(const fb_model *m, const fb_isa *isa, const void *in, void *out, int n, int threads, int split)
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
    if (job.team > 1) {
        /* fewer images than threads: split each image's layers over a team, if allowed
         * (split: 1 always, 0 never, -1 when the machine has idle CPUs) */
        int team = split > 0 ? threads : split == 0 ? 1 : idle_team(threads);
        if (team < 2) {
            job.team = 1;
            threads = job.n_tiles;
        } else {
            job.team = threads = team;
        }
    }
    if (job.team == 1 && threads > job.n_tiles)
        threads = job.n_tiles;
    atomic_init(&job.next, 0);
    atomic_init(&job.bar.count, 0);
    atomic_init(&job.bar.gen, 0);
    atomic_init(&job.start.count, 0);
    atomic_init(&job.start.gen, 0);
#if FB_THREADS
    pthread_mutex_init(&job.bar.mu, NULL);
    pthread_cond_init(&job.bar.cv, NULL);
    pthread_mutex_init(&job.start.mu, NULL);
    pthread_cond_init(&job.start.cv, NULL);
#endif

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
    /* The workers wait at the start barrier until the main thread arrives, after it has fixed
     * the team: a team short of a thread that could not be created would wait forever. */
    atomic_init(&job.start.n, threads);
    atomic_init(&job.bar.n, job.team);
    int started = 1;
    for (int i = 1; ids && i < threads; i++) {
        if (pthread_create(&ids[i], NULL, worker, &workers[i]) != 0)
            break;
        started++;
    }
    if (job.team > 1)
        job.team = started;
    atomic_store(&job.bar.n, job.team);
    atomic_store(&job.start.n, started);
    worker(&workers[0]);
    for (int i = 1; i < started; i++)
        pthread_join(ids[i], NULL);
    free(ids);
    pthread_mutex_destroy(&job.bar.mu);
    pthread_cond_destroy(&job.bar.cv);
    pthread_mutex_destroy(&job.start.mu);
    pthread_cond_destroy(&job.start.cv);
#else
    job.team = 1;
    atomic_init(&job.bar.n, 1);
    atomic_init(&job.start.n, 1);
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
