/* 256 threads churn small blocks (16..511 B, 2048 live each); a quarter of
 * the frees hand the block to a random slot of a shared array, so it is
 * freed later by whichever thread next swaps that slot: issue 13's memory
 * target for many threads with cross-thread frees.
 *
 * Arguments: the scale (1 = 40,000 operations a thread) and, optionally, Y.
 * With Y > 0 the main thread yields after starting each thread and every
 * thread yields every Y operations: run on one CPU with round-robin
 * scheduling (`chrt -r 1 taskset -c 1`), about 40,000 / Y threads are then
 * part-way through at once, so the peak RSS no longer depends on how the
 * scheduler overlapped them (without it, the same library's peak varies
 * over 2x between runs). */
#include <pthread.h>
#include <sched.h>
#include "common.h"

#define THREADS 256
#define SLOTS 2048
#define SHARED 64

static long iters;
static long yield_every;
static void *_Atomic handoff[THREADS][SHARED];

static void *run(void *arg) {
    uint64_t s = 2654435761u * (uint64_t)((long)arg + 1);
    unsigned char **p = calloc(SLOTS, sizeof *p);
    size_t *n = calloc(SLOTS, sizeof *n);
    for (long i = 0; i < iters; i++) {
        if (yield_every > 0 && i % yield_every == 0) sched_yield();
        int k = rnd(&s) % SLOTS;
        if (p[k]) {
            check(p[k], n[k]);
            if (rnd(&s) % 4 == 0) {
                void *old = __atomic_exchange_n(&handoff[rnd(&s) % THREADS][rnd(&s) % SHARED], p[k],
                                                __ATOMIC_ACQ_REL);
                free(old);
            } else {
                free(p[k]);
            }
        }
        n[k] = 16 + rnd(&s) % 496;
        p[k] = malloc(n[k]);
        stamp(p[k], n[k]);
    }
    for (int k = 0; k < SLOTS; k++) free(p[k]);
    free(p);
    free(n);
    return NULL;
}

int main(int argc, char **argv) {
    iters = (long)(40000 * scale_arg(argc, argv));
    yield_every = argc > 2 ? atol(argv[2]) : 0;
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) {
        pthread_create(&t[i], NULL, run, (void *)i);
        if (yield_every > 0) sched_yield();
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < SHARED; j++) free(handoff[i][j]);
    return 0;
}
