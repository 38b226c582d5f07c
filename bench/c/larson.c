/* larson-like server simulation: each thread replaces random blocks of its
 * own array, and every round hands its array to the next thread, so most
 * blocks are freed by a thread that did not allocate them. */
#include <pthread.h>
#include "common.h"

#define THREADS 4
#define SLOTS 2000

typedef struct { unsigned char *p; size_t n; } slot_t;
static slot_t arrays[THREADS][SLOTS];
static long iters;
static pthread_barrier_t bar;

static void *run(void *arg) {
    long id = (long)arg;
    uint64_t s = 0x9e3779b97f4a7c15ull * (id + 1);
    for (int round = 0; round < 20; round++) {
        slot_t *a = arrays[(id + round) % THREADS];
        for (long i = 0; i < iters; i++) {
            slot_t *sl = &a[rnd(&s) % SLOTS];
            if (sl->p) { check(sl->p, sl->n); free(sl->p); }
            sl->n = 8 + rnd(&s) % 500;
            sl->p = malloc(sl->n);
            stamp(sl->p, sl->n);
        }
        pthread_barrier_wait(&bar);
    }
    return NULL;
}

int main(int argc, char **argv) {
    iters = (long)(300000 * scale_arg(argc, argv));
    pthread_barrier_init(&bar, NULL, THREADS);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < SLOTS; j++) if (arrays[i][j].p) { check(arrays[i][j].p, arrays[i][j].n); free(arrays[i][j].p); }
    return 0;
}
