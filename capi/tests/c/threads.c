/* Threads that come and go, allocating and freeing each other's blocks:
 * thread exit must abandon memory cleanly and others reclaim it. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 4096
static void *_Atomic slots[SLOTS];

static void *worker(void *arg) {
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    for (int i = 0; i < 50000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t n = (x % 100 < 95) ? 8 + x % 500 : 1000 + x % 200000;
        unsigned char *p = malloc(n);
        if (!p) { fprintf(stderr, "malloc failed\n"); exit(2); }
        p[0] = (unsigned char)n; p[n - 1] = (unsigned char)(n >> 3);
        /* Swap into a shared slot; free what was there (likely another
         * thread's block, possibly of a thread that has exited). */
        unsigned char *old = __atomic_exchange_n(&slots[x % SLOTS], p, __ATOMIC_ACQ_REL);
        if (old) free(old);
    }
    return NULL;
}

int main(void) {
    for (int round = 0; round < 10; round++) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(round * 4 + i + 1));
        for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    }
    for (int i = 0; i < SLOTS; i++) free(slots[i]);
    printf("threads ok\n");
    return 0;
}
