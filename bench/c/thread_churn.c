/* thread-churn: each of 2 threads keeps its own working set of 1,000 blocks
 * of 8..1024 B and replaces one at random per step; nothing is shared, so
 * this is the per-thread fast path of malloc and free under churn, with
 * the working set spread over many size classes. */
#include <pthread.h>
#include "common.h"

#define THREADS 2
#define SLOTS 1000

static long iters;

static void *run(void *arg) {
    uint64_t s = 0x2545f4914f6cdd1dull * (uint64_t)((long)arg + 1);
    unsigned char **p = calloc(SLOTS, sizeof *p);
    size_t *n = calloc(SLOTS, sizeof *n);
    if (!p || !n) exit(2);
    for (long i = 0; i < iters; i++) {
        int k = rnd(&s) % SLOTS;
        if (p[k]) { check(p[k], n[k]); free(p[k]); }
        n[k] = 8 + rnd(&s) % 1017;
        p[k] = malloc(n[k]);
        if (!p[k]) exit(2);
        stamp(p[k], n[k]);
    }
    for (int k = 0; k < SLOTS; k++) if (p[k]) { check(p[k], n[k]); free(p[k]); }
    free(p);
    free(n);
    return NULL;
}

int main(int argc, char **argv) {
    iters = (long)(10000000 * scale_arg(argc, argv));
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    return 0;
}
