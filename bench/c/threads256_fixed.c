/* threads-256 with a fixed overlap, for peak RSS comparisons that do not
 * depend on how the scheduler overlaps the threads (in `threads256.c` the
 * same library's peak varies over 2x between runs). Run it on one CPU with
 * round-robin scheduling, so a thread runs until it yields:
 *
 *   LD_PRELOAD=<lib> chrt -r 1 taskset -c 1 ./threads256_fixed <Y>
 *
 * The main thread yields after starting each thread, and every thread
 * yields every Y operations, so about 40000 / Y threads are part-way
 * through their run at once. Prints the peak RSS. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#define THREADS 256
#define SLOTS 2048
#define SHARED 64
#define ITERS 40000

static long yield_every;
static void *_Atomic handoff[THREADS][SHARED];

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *run(void *arg) {
    uint64_t s = (uint64_t)(long)arg * 2654435761u + 1;
    void **p = calloc(SLOTS, sizeof *p);
    for (long i = 0; i < ITERS; i++) {
        if (i % yield_every == 0) sched_yield();
        int k = (int)(rnd(&s) % SLOTS);
        if (p[k]) {
            if (rnd(&s) % 4 == 0) {
                void *old = __atomic_exchange_n(&handoff[rnd(&s) % THREADS][rnd(&s) % SHARED], p[k],
                                                __ATOMIC_ACQ_REL);
                free(old);
            } else {
                free(p[k]);
            }
        }
        size_t n = 16 + rnd(&s) % 496;
        p[k] = malloc(n);
        ((char *)p[k])[0] = 1;
        ((char *)p[k])[n - 1] = 2;
    }
    for (int k = 0; k < SLOTS; k++) free(p[k]);
    free(p);
    return NULL;
}

int main(int argc, char **argv) {
    yield_every = argc > 1 ? atol(argv[1]) : 1000;
    if (yield_every < 1) yield_every = 1;
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) {
        pthread_create(&t[i], NULL, run, (void *)i);
        sched_yield();
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < SHARED; j++) free(handoff[i][j]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak rss %ld MiB\n", ru.ru_maxrss / 1024);
    return 0;
}
