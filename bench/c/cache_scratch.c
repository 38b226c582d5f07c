/* cache-scratch: each thread receives a small object allocated by the main
 * thread, frees it, then repeatedly allocates and writes its own small
 * objects; an allocator that hands neighbouring bytes to different threads
 * makes them fight over cache lines. */
#include <pthread.h>
#include "common.h"

#define THREADS 2
static long iters;
static char *seed_obj[THREADS];

static void *run(void *arg) {
    long id = (long)arg;
    free(seed_obj[id]);
    for (long i = 0; i < iters; i++) {
        volatile char *p = malloc(8);
        for (int r = 0; r < 50; r++) p[r & 7] = (char)r;
        free((void *)p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    iters = (long)(10000000 * scale_arg(argc, argv));
    for (int i = 0; i < THREADS; i++) seed_obj[i] = malloc(8);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, run, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    return 0;
}
