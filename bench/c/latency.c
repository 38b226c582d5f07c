/* latency: the cost of each malloc and each free on its own, as a
 * percentile table. One thread keeps LIVE blocks live and replaces a random
 * one per step; sizes are 90% 16..512 B, 9% 512 B..32 KiB and 1% 32 KiB..
 * 4 MiB; within a band each power-of-two octave is equally likely and the
 * size uniform inside it (small sizes commoner, as in programs), from a
 * fixed-seed xorshift. Every malloc and every free is
 * timed alone and its time stored into an array mapped and written before
 * the first timed call, so timing allocates nothing and takes no page fault.
 *
 * usage: latency [SCALE [untimed]]. SCALE 1 is 2,000,000 steps (one timed
 * free and one timed malloc each) after the untimed fill. It prints
 *   latency clock=<rdtsc|clock_gettime> timer_ns=<cost of an empty timing>
 *   malloc_ns=<p50>,<p99>,<p99.9>,<p99.99>,<max> free_ns=<same>
 * on one line. With "untimed" it times nothing and prints nothing: the same
 * calls, with an instruction count that does not depend on the clock (what
 * the instr bin counts under cachegrind).
 *
 * The clock is the TSC on x86_64 (fenced, so the timed call cannot drift out
 * of the interval), converted to nanoseconds by the ratio of TSC ticks to
 * CLOCK_MONOTONIC nanoseconds over the whole run: no calibration loop, whose
 * length would depend on the clock. Elsewhere it is CLOCK_MONOTONIC. */
#include <sys/mman.h>
#include "common.h"

#define LIVE 50000

static unsigned char *p[LIVE];
static size_t n[LIVE];

#if defined(__x86_64__)
#include <x86intrin.h>
#define CLOCK_NAME "rdtsc"
static inline uint64_t ticks(void) {
    _mm_lfence();
    uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
}
#else
#define CLOCK_NAME "clock_gettime"
static inline uint64_t ticks(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#endif

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A size in [2^lo, 2^hi): an octave [2^e, 2^(e+1)) picked uniformly, then a
 * size uniform inside it. */
static size_t octaves(uint64_t *s, unsigned lo, unsigned hi) {
    unsigned e = lo + (unsigned)(rnd(s) % (hi - lo));
    return ((size_t)1 << e) + (size_t)(rnd(s) % ((uint64_t)1 << e));
}

static size_t pick(uint64_t *s) {
    uint64_t r = rnd(s) % 100;
    if (r < 90) return octaves(s, 4, 9);      /* 16 B .. 512 B */
    if (r < 99) return octaves(s, 9, 15);     /* 512 B .. 32 KiB */
    return octaves(s, 15, 22);                /* 32 KiB .. 4 MiB */
}

static uint32_t *samples(long count) {
    size_t bytes = (size_t)count * sizeof(uint32_t);
    uint32_t *a = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (a == MAP_FAILED) exit(2);
    memset(a, 0xff, bytes);
    return a;
}

static int by_value(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The nearest-rank percentile of sorted a[0..count): the smallest value
 * with at least per_million / 1e6 of the samples at or below it. */
static uint32_t rank(const uint32_t *a, long count, long per_million) {
    long k = (long)(((__int128)count * per_million + 999999) / 1000000);
    return a[k < 1 ? 0 : k - 1];
}

static void report(const char *name, uint32_t *a, long count, double ns_per_tick) {
    /* Sorting may allocate; the timing is over by now. */
    qsort(a, (size_t)count, sizeof *a, by_value);
    static const long at[] = {500000, 990000, 999000, 999900, 1000000};
    printf(" %s=", name);
    for (int i = 0; i < 5; i++)
        printf("%s%.0f", i ? "," : "", rank(a, count, at[i]) * ns_per_tick);
}

static inline uint32_t elapsed(uint64_t t0, uint64_t t1) {
    uint64_t d = t1 - t0;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

int main(int argc, char **argv) {
    long steps = (long)(2000000 * scale_arg(argc, argv));
    int timed = !(argc > 2 && strcmp(argv[2], "untimed") == 0);
    if (steps < 1) steps = 1;
    uint32_t *t_malloc = timed ? samples(steps) : NULL;
    uint32_t *t_free = timed ? samples(steps) : NULL;
    uint64_t s = 0x2545f4914f6cdd1dull;
    for (int k = 0; k < LIVE; k++) {
        n[k] = pick(&s);
        p[k] = malloc(n[k]);
        if (!p[k]) exit(2);
        stamp(p[k], n[k]);
    }
    uint64_t ns0 = timed ? mono_ns() : 0, tk0 = timed ? ticks() : 0;
    for (long i = 0; i < steps; i++) {
        int k = (int)(rnd(&s) % LIVE);
        size_t size = pick(&s);
        check(p[k], n[k]);
        if (timed) {
            uint64_t a = ticks();
            free(p[k]);
            uint64_t b = ticks();
            unsigned char *q = malloc(size);
            uint64_t c = ticks();
            t_free[i] = elapsed(a, b);
            t_malloc[i] = elapsed(b, c);
            p[k] = q;
        } else {
            free(p[k]);
            p[k] = malloc(size);
        }
        if (!p[k]) exit(2);
        n[k] = size;
        stamp(p[k], size);
    }
    if (timed) {
        uint64_t tk1 = ticks(), ns1 = mono_ns();
        double ns_per_tick = tk1 > tk0 ? (double)(ns1 - ns0) / (double)(tk1 - tk0) : 1.0;
        /* The cost of the timing itself: the least of many empty intervals. */
        uint32_t timer = UINT32_MAX;
        for (int i = 0; i < 10000; i++) {
            uint64_t a = ticks(), b = ticks();
            if (elapsed(a, b) < timer) timer = elapsed(a, b);
        }
        printf("latency clock=%s timer_ns=%.0f", CLOCK_NAME, timer * ns_per_tick);
        report("malloc_ns", t_malloc, steps, ns_per_tick);
        report("free_ns", t_free, steps, ns_per_tick);
        printf("\n");
    }
    for (int k = 0; k < LIVE; k++) {
        check(p[k], n[k]);
        free(p[k]);
    }
    return 0;
}
