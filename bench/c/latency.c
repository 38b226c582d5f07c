/* latency: the cost of each malloc and each free on its own, as a
 * percentile table. One thread keeps LIVE blocks live and replaces a random
 * one per step; sizes are 90% 16..512 B, 9% 512 B..32 KiB and 1% 32 KiB..
 * 4 MiB; within a band each power-of-two octave is equally likely and the
 * size uniform inside it (small sizes commoner, as in programs), from a
 * fixed-seed xorshift. Every malloc and every free is
 * timed alone and its time stored into an array mapped and written before
 * the first timed call, so timing allocates nothing and takes no page fault.
 *
 * usage: latency [SCALE [untimed | slow=NS]]. SCALE 1 is 2,000,000 steps
 * (one timed free and one timed malloc each) after the untimed fill. It
 * prints
 *   latency clock=<rdtsc|clock_gettime> timer_ns=<cost of an empty timing>
 *   malloc_ns=<p50>,<p99>,<p99.9>,<p99.99>,<max> free_ns=<same>
 * on one line. With "untimed" it times nothing and prints nothing: the same
 * calls, with an instruction count that does not depend on the clock (what
 * the instr bin counts under cachegrind).
 *
 * With "slow=NS" it also prints, before that line, where the slow calls
 * are: for malloc and for free, a table by the block's requested size
 * (small <= 1 KiB, <= 8 KiB, medium <= 64 KiB, large <= 2 MiB, huge) of
 * all calls, the calls slower than NS, than the operation's p99 and than
 * its p99.9, and the calls slower than NS by time octave (NS..2NS, 2NS..4NS,
 * ...), with the page faults the calls took. Each call then lies between
 * two getrusage(RUSAGE_THREAD) readings (outside its timing), which give
 * its faults and whether the thread was switched out during it: those
 * calls are left out of the tables (and their percentiles), so the tables
 * show the allocator's work rather than the machine's other load. Its
 * lines start with "slow", never with "latency"; the "latency" line after
 * them is computed as without the option, over all calls. What is known
 * of each call is stored, like its time, in an array written before the
 * first timed call.
 *
 * The clock is the TSC on x86_64 (fenced, so the timed call cannot drift out
 * of the interval), converted to nanoseconds by the ratio of TSC ticks to
 * CLOCK_MONOTONIC nanoseconds over the whole run: no calibration loop, whose
 * length would depend on the clock. Elsewhere it is CLOCK_MONOTONIC. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/resource.h>
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

/* What the slow=NS tables know of each call, in one byte: its size
 * bucket (small <= 1 KiB, <= 8 KiB, medium <= 64 KiB, large <= 2 MiB,
 * huge), the page faults it took (at most 7 counted) and whether the thread
 * was switched out during it (then its time says nothing of the allocator;
 * such calls are left out of the tables and counted apart). */
#define BUCKETS 5
static const char *const bucket_name[BUCKETS] = {"<=1K", "<=8K", "<=64K", "<=2M", "huge"};
#define FAULT_SHIFT 3
#define SWITCHED 0x80

static uint8_t bucket(size_t size) {
    if (size <= 1024) return 0;
    if (size <= 8192) return 1;
    if (size <= 65536) return 2;
    if (size <= 2u << 20) return 3;
    return 4;
}

/* The call's byte, from getrusage readings taken just outside its timing. */
static uint8_t call_info(size_t size, const struct rusage *r0, const struct rusage *r1) {
    long faults = (r1->ru_minflt - r0->ru_minflt) + (r1->ru_majflt - r0->ru_majflt);
    int switched = r1->ru_nivcsw != r0->ru_nivcsw || r1->ru_nvcsw != r0->ru_nvcsw;
    return (uint8_t)(bucket(size) | (faults > 7 ? 7 : faults) << FAULT_SHIFT |
                     (switched ? SWITCHED : 0));
}

static uint8_t *infos(long count) {
    uint8_t *a = mmap(NULL, (size_t)count, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (a == MAP_FAILED) exit(2);
    memset(a, 0xff, (size_t)count);
    return a;
}

#define OCTAVES 8

/* The slow=NS table of one operation: its times t (unsorted) and infos b
 * of count calls. The percentiles here are those of the calls that were
 * not switched out. */
static void slow_table(const char *name, const uint32_t *t, const uint8_t *b, long count,
                       double ns_per_tick, double slow_ns) {
    uint32_t *sorted = malloc((size_t)count * sizeof *sorted);
    if (!sorted) exit(2);
    long kept = 0, switched = 0;
    for (long i = 0; i < count; i++) {
        if (b[i] & SWITCHED) switched++;
        else sorted[kept++] = t[i];
    }
    qsort(sorted, (size_t)kept, sizeof *sorted, by_value);
    uint32_t p99 = rank(sorted, kept, 990000), p999 = rank(sorted, kept, 999000);
    free(sorted);
    double slow_ticks = slow_ns / ns_per_tick;
    long all[BUCKETS] = {0}, slow[BUCKETS] = {0}, over99[BUCKETS] = {0}, over999[BUCKETS] = {0};
    long faulted[BUCKETS] = {0}, slow_faulted[BUCKETS] = {0}, faults[BUCKETS] = {0};
    long oct[BUCKETS][OCTAVES] = {{0}};
    for (long i = 0; i < count; i++) {
        if (b[i] & SWITCHED) continue;
        int k = b[i] & 7, f = (b[i] >> FAULT_SHIFT) & 7;
        all[k]++;
        faults[k] += f;
        faulted[k] += f > 0;
        if (t[i] > p99) over99[k]++;
        if (t[i] > p999) over999[k]++;
        if (t[i] > slow_ticks) {
            slow[k]++;
            slow_faulted[k] += f > 0;
            int o = 0;
            for (double edge = 2 * slow_ticks; o < OCTAVES - 1 && t[i] > edge; edge *= 2) o++;
            oct[k][o]++;
        }
    }
    printf("slow %s p99=%.0f p99.9=%.0f (ns) of %ld calls, %ld switched out and left out\n",
           name, p99 * ns_per_tick, p999 * ns_per_tick, kept, switched);
    printf("slow %-6s %9s %7s %7s %7s %7s %7s %7s |", "size", "calls", "faulted", "faults",
           ">slow", "+fault", ">p99", ">p99.9");
    for (int o = 0; o < OCTAVES; o++)
        printf(o < OCTAVES - 1 ? " <=%6.0f" : "  >%6.0f",
               slow_ns * (double)(o < OCTAVES - 1 ? 2 << o : 1 << o));
    printf("\n");
    for (int k = 0; k < BUCKETS; k++) {
        printf("slow %-6s %9ld %7ld %7ld %7ld %7ld %7ld %7ld |", bucket_name[k], all[k], faulted[k],
               faults[k], slow[k], slow_faulted[k], over99[k], over999[k]);
        for (int o = 0; o < OCTAVES; o++) printf(" %8ld", oct[k][o]);
        printf("\n");
    }
}

static inline uint32_t elapsed(uint64_t t0, uint64_t t1) {
    uint64_t d = t1 - t0;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

int main(int argc, char **argv) {
    long steps = (long)(2000000 * scale_arg(argc, argv));
    int timed = !(argc > 2 && strcmp(argv[2], "untimed") == 0);
    double slow_ns = argc > 2 && strncmp(argv[2], "slow=", 5) == 0 ? atof(argv[2] + 5) : 0;
    if (steps < 1) steps = 1;
    uint32_t *t_malloc = timed ? samples(steps) : NULL;
    uint32_t *t_free = timed ? samples(steps) : NULL;
    uint8_t *b_malloc = slow_ns > 0 ? infos(steps) : NULL;
    uint8_t *b_free = slow_ns > 0 ? infos(steps) : NULL;
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
        if (b_malloc) {
            /* As below, each call between two getrusage readings. */
            struct rusage r0, r1, r2;
            getrusage(RUSAGE_THREAD, &r0);
            uint64_t a = ticks();
            free(p[k]);
            uint64_t b = ticks();
            getrusage(RUSAGE_THREAD, &r1);
            uint64_t b2 = ticks();
            unsigned char *q = malloc(size);
            uint64_t c = ticks();
            getrusage(RUSAGE_THREAD, &r2);
            t_free[i] = elapsed(a, b);
            t_malloc[i] = elapsed(b2, c);
            b_free[i] = call_info(n[k], &r0, &r1);
            b_malloc[i] = call_info(size, &r1, &r2);
            p[k] = q;
        } else if (timed) {
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
        if (slow_ns > 0) {
            slow_table("malloc", t_malloc, b_malloc, steps, ns_per_tick, slow_ns);
            slow_table("free", t_free, b_free, steps, ns_per_tick, slow_ns);
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
