/* big-blocks: 2 threads, each replacing one of its 4 live blocks of
 * 64 KiB-16 MiB (log-uniform: large and huge blocks alike) at random per
 * step, writing one byte per 4 KiB page and checking them before the
 * free: the large- and huge-block paths of malloc and free, with a
 * program's use of each page but little copying. */
#include <pthread.h>
#include "common.h"

#define THREADS 2
#define LIVE 4
#define PAGE 4096

static long iters;

/* A size between 2^16 and 2^24 bytes, log-uniform. */
static size_t big_size(uint64_t *s) {
    int shift = 16 + (int)(rnd(s) % 8);
    size_t base = (size_t)1 << shift;
    return base + (size_t)(rnd(s) % base);
}

static void touch(unsigned char *p, size_t n, unsigned char tag) {
    for (size_t i = 0; i < n; i += PAGE) p[i] = (unsigned char)(tag + i / PAGE);
}

static void verify(const unsigned char *p, size_t n, unsigned char tag) {
    for (size_t i = 0; i < n; i += PAGE) {
        if (p[i] != (unsigned char)(tag + i / PAGE)) {
            fprintf(stderr, "corrupted block %p (%zu bytes) at %zu\n", (void *)p, n, i);
            exit(3);
        }
    }
}

static void *run(void *arg) {
    uint64_t s = 0x2545f4914f6cdd1dull * (uint64_t)((long)arg + 1);
    unsigned char *p[LIVE] = {0};
    size_t n[LIVE] = {0};
    unsigned char tag[LIVE] = {0};
    for (long i = 0; i < iters; i++) {
        int k = rnd(&s) % LIVE;
        if (p[k]) { verify(p[k], n[k], tag[k]); free(p[k]); }
        n[k] = big_size(&s);
        tag[k] = (unsigned char)i;
        p[k] = malloc(n[k]);
        if (!p[k]) exit(2);
        touch(p[k], n[k], tag[k]);
    }
    for (int k = 0; k < LIVE; k++) if (p[k]) { verify(p[k], n[k], tag[k]); free(p[k]); }
    return NULL;
}

int main(int argc, char **argv) {
    iters = (long)(2000 * scale_arg(argc, argv));
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    return 0;
}
