/* Mixed sizes from 8 B to 1 MiB with random lifetimes, in 2 threads. */
#include <pthread.h>
#include "common.h"

#define SLOTS 4096
static long iters;

static void *run(void *arg) {
    uint64_t s = 31337 + (long)arg;
    static __thread unsigned char *p[SLOTS];
    static __thread size_t n[SLOTS];
    for (long i = 0; i < iters; i++) {
        int k = rnd(&s) % SLOTS;
        if (p[k]) { check(p[k], n[k]); free(p[k]); }
        uint64_t r = rnd(&s) % 1000;
        n[k] = r < 900 ? 8 + rnd(&s) % 256 : r < 990 ? 257 + rnd(&s) % 16000 : 16384 + rnd(&s) % (1 << 20);
        p[k] = malloc(n[k]);
        stamp(p[k], n[k]);
    }
    for (int k = 0; k < SLOTS; k++) if (p[k]) free(p[k]);
    return NULL;
}

int main(int argc, char **argv) {
    iters = (long)(6000000 * scale_arg(argc, argv));
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    return 0;
}
