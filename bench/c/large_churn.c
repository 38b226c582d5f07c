/* large-churn: 2 threads, each replacing one of its 8 live blocks of
 * 64-128 KiB at random per step, touching only their first and last bytes
 * (as a program does with I/O buffers it fills partly): the large-block
 * path of malloc and free, shared by threads, with nothing to copy. */
#include <pthread.h>
#include "common.h"

#define THREADS 2
#define LIVE 8

static long iters;

static void *run(void *arg) {
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)((long)arg + 1);
    unsigned char *p[LIVE] = {0};
    size_t n[LIVE] = {0};
    for (long i = 0; i < iters; i++) {
        int k = rnd(&s) % LIVE;
        if (p[k]) { check(p[k], n[k]); free(p[k]); }
        n[k] = 65536 + rnd(&s) % 65536;
        p[k] = malloc(n[k]);
        if (!p[k]) exit(2);
        stamp(p[k], n[k]);
    }
    for (int k = 0; k < LIVE; k++) if (p[k]) { check(p[k], n[k]); free(p[k]); }
    return NULL;
}

int main(int argc, char **argv) {
    iters = (long)(800000 * scale_arg(argc, argv));
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    return 0;
}
