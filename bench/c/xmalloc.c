/* xmalloc-test-like: producer threads allocate, consumer threads free,
 * through a locked ring of batches. */
#include <pthread.h>
#include "common.h"

#define BATCH 256
#define RING 64

typedef struct { unsigned char *p[BATCH]; size_t n[BATCH]; } batch_t;
static batch_t *ring[RING];
static int head, tail, count;
static long batches;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER, not_empty = PTHREAD_COND_INITIALIZER;

static void *producer(void *arg) {
    uint64_t s = 12345 + (long)arg;
    for (long b = 0; b < batches; b++) {
        batch_t *bt = malloc(sizeof *bt);
        for (int i = 0; i < BATCH; i++) {
            bt->n[i] = 16 + rnd(&s) % 300;
            bt->p[i] = malloc(bt->n[i]);
            stamp(bt->p[i], bt->n[i]);
        }
        pthread_mutex_lock(&mu);
        while (count == RING) pthread_cond_wait(&not_full, &mu);
        ring[head] = bt; head = (head + 1) % RING; count++;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    for (long b = 0; b < batches; b++) {
        pthread_mutex_lock(&mu);
        while (count == 0) pthread_cond_wait(&not_empty, &mu);
        batch_t *bt = ring[tail]; tail = (tail + 1) % RING; count--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&mu);
        for (int i = 0; i < BATCH; i++) { check(bt->p[i], bt->n[i]); free(bt->p[i]); }
        free(bt);
    }
    return NULL;
}

int main(int argc, char **argv) {
    batches = (long)(8000 * scale_arg(argc, argv));
    pthread_t p[2], c[2];
    for (long i = 0; i < 2; i++) { pthread_create(&p[i], NULL, producer, (void *)i); pthread_create(&c[i], NULL, consumer, NULL); }
    for (int i = 0; i < 2; i++) { pthread_join(p[i], NULL); pthread_join(c[i], NULL); }
    return 0;
}
