/* glibc-bench-simple style: a tight loop of small malloc/free in N threads
 * (argv[2], default 1), with a small ring of live blocks. */
#include <pthread.h>
#include "common.h"

static long iters;

static void *run(void *arg) {
    uint64_t s = 777 + (long)arg;
    unsigned char *ring[128] = {0};
    size_t ns[128] = {0};
    for (long i = 0; i < iters; i++) {
        size_t n = 16 + rnd(&s) % 112;
        unsigned char *p = malloc(n);
        stamp(p, n);
        if (i & 1) { check(p, n); free(p); continue; }
        int k = rnd(&s) & 127;
        if (ring[k]) { check(ring[k], ns[k]); free(ring[k]); }
        ring[k] = p; ns[k] = n;
    }
    for (int k = 0; k < 128; k++) if (ring[k]) free(ring[k]);
    return NULL;
}

int main(int argc, char **argv) {
    iters = (long)(40000000 * scale_arg(argc, argv));
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    pthread_t t[16];
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    return 0;
}
