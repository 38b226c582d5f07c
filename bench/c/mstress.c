/* mstress: the shape of mimalloc's own stress test (test/test-stress.c),
 * written anew. ROUNDS rounds of THREADS fresh threads; each thread
 * allocates mixed sizes (mostly 24 B..1 KiB, 1 in 100 up to 1 MiB, 1 in
 * 20,000 up to 4 MiB, every page written), frees, reallocs and replaces
 * blocks of its own working set at random, and swaps blocks with a shared
 * transfer array: a block allocated by one thread is freed (or realloc'd)
 * by another, often after the thread that allocated it has exited, and
 * the transfer array lives on from round to round. Each block carries its
 * size and a check word at its start, a stamp at its end and one byte per
 * page, checked before every free and realloc (exit 3). */
#include <pthread.h>
#include "common.h"

#define ROUNDS 10
#define THREADS 8
#define LOCAL 1000
#define TRANSFER 1024
#define PAGE 4096

static long steps;
static void *_Atomic transfer[TRANSFER];

static uint64_t word(size_t n) { return (uint64_t)n * 0x9e3779b97f4a7c15ull ^ 0xa5a5a5a5a5a5a5a5ull; }

static void mark(unsigned char *p, size_t n) {
    uint64_t w[2] = {n, word(n)};
    memcpy(p, w, sizeof w);
    for (size_t i = PAGE; i < n - 1; i += PAGE) p[i] = (unsigned char)(i / PAGE + n);
    p[n - 1] = (unsigned char)(n >> 3) ^ 0x5a;
}

/* The block's size, after checking its marks. */
static size_t verify(const unsigned char *p) {
    uint64_t w[2];
    memcpy(w, p, sizeof w);
    size_t n = (size_t)w[0];
    int ok = n >= 24 && n <= (4u << 20) && w[1] == word(n) && p[n - 1] == ((unsigned char)(n >> 3) ^ 0x5a);
    for (size_t i = PAGE; ok && i < n - 1; i += PAGE) ok = p[i] == (unsigned char)(i / PAGE + n);
    if (!ok) {
        fprintf(stderr, "mstress: corrupted block %p\n", (const void *)p);
        exit(3);
    }
    return n;
}

static size_t pick(uint64_t *s) {
    uint64_t r = rnd(s) % 20000;
    if (r == 0) return (1u << 20) + rnd(s) % (3u << 20);
    if (r % 100 == 1) return 1024 + rnd(s) % (1u << 20);
    uint64_t k = rnd(s) % 7;
    return 24 + rnd(s) % (16u << k);
}

static unsigned char *make(size_t n) {
    unsigned char *p = malloc(n);
    if (!p) exit(2);
    mark(p, n);
    return p;
}

static void release(unsigned char *p) {
    if (p) { verify(p); free(p); }
}

static void *run(void *arg) {
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)((long)arg + 1);
    unsigned char **mine = calloc(LOCAL, sizeof *mine);
    if (!mine) exit(2);
    for (long i = 0; i < steps; i++) {
        unsigned char **slot = &mine[rnd(&s) % LOCAL];
        uint64_t r = rnd(&s) % 100;
        if (r < 45) {
            release(*slot);
            *slot = make(pick(&s));
        } else if (r < 65) {
            release(*slot);
            *slot = NULL;
        } else if (r < 85) {
            if (!*slot) *slot = make(pick(&s));
            *slot = __atomic_exchange_n(&transfer[rnd(&s) % TRANSFER], *slot, __ATOMIC_ACQ_REL);
        } else if (r < 90) {
            if (*slot) {
                size_t old = verify(*slot), n = pick(&s);
                unsigned char *q = realloc(*slot, n);
                if (!q) exit(2);
                uint64_t w[2];
                memcpy(w, q, sizeof w);
                if (w[0] != old || w[1] != word(old)) { fprintf(stderr, "mstress: realloc lost data\n"); exit(3); }
                mark(q, n);
                *slot = q;
            }
        } else {
            release(make(pick(&s)));
        }
    }
    for (int k = 0; k < LOCAL; k++) release(mine[k]);
    free(mine);
    return NULL;
}

int main(int argc, char **argv) {
    steps = (long)(40000 * scale_arg(argc, argv));
    for (long round = 0; round < ROUNDS; round++) {
        pthread_t t[THREADS];
        for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, run, (void *)(round * THREADS + i));
        for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    }
    for (int i = 0; i < TRANSFER; i++) release(transfer[i]);
    return 0;
}
