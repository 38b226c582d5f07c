/* Issue 12, scenario 1: fork() from several threads while others read long
 * lines with getline() from one shared FILE and others call fflush(NULL).
 *
 * glibc's fork runs the pthread_atfork prepare handlers first and takes the
 * stdio list lock after them; fflush(NULL) holds that list lock while it
 * waits for each FILE's lock; getline holds its FILE's lock while it grows
 * the line with realloc. An allocator whose prepare handler holds its locks
 * across that wait deadlocks: fork waits for fflush, fflush for getline,
 * and getline's realloc for the allocator lock the forking thread holds.
 *
 * Each child mallocs small blocks and one of a few MiB, frees them and
 * _exits; the parent waits for it. Stops after MAX_FORKS forks or
 * MAX_SECONDS seconds, whichever comes first, and prints
 * "fork stdio ok: N forks". A hang is the failure this program exists to
 * show: its caller kills it after a time limit, and checks that all
 * MAX_FORKS forks were made (a count, not a rate: the time cap is far above
 * what any allocator here needs). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FORKERS 4
#define READERS 2
#define FLUSHERS 2
#define MAX_FORKS 300
#define MAX_SECONDS 40.0

static atomic_int stop = 0;
static atomic_int forks = 0;
static atomic_int failures = 0;
static atomic_long lines_read = 0;
static FILE *shared;
static struct timespec start;

static double elapsed(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
}

/* In the child: allocate through whatever malloc this is, then leave. */
static void child_work(unsigned seed) {
    void *small[64];
    for (int i = 0; i < 64; i++) {
        small[i] = malloc(16 + (seed * 31 + (unsigned)i * 97) % 3000);
        if (!small[i]) _exit(2);
    }
    size_t big_size = ((size_t)1 << 20) * (1 + seed % 8); /* 1..8 MiB */
    char *big = malloc(big_size);
    if (!big) _exit(3);
    big[0] = 1;
    big[big_size - 1] = 1;
    for (int i = 0; i < 64; i += 2) free(small[i]);
    free(big);
    for (int i = 1; i < 64; i += 2) free(small[i]);
    _exit(0);
}

static void *forker(void *arg) {
    unsigned seed = (unsigned)(size_t)arg;
    while (!atomic_load(&stop)) {
        pid_t pid = fork();
        if (pid == 0) child_work(seed);
        if (pid < 0) {
            perror("fork");
            atomic_fetch_add(&failures, 1);
            break;
        }
        seed = seed * 1103515245u + 12345u;
        int status = 0;
        pid_t r;
        while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
        }
        if (r != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d: status %#x\n", (int)pid, status);
            atomic_fetch_add(&failures, 1);
        }
        int n = atomic_fetch_add(&forks, 1) + 1;
        if (n >= MAX_FORKS || elapsed() >= MAX_SECONDS) atomic_store(&stop, 1);
    }
    return NULL;
}

static void pause_us(long us) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

/* getline from the shared FILE, each call from a NULL or a tiny buffer so
 * it reallocates (to several MiB) while it holds the FILE's lock. The
 * short pauses between lines (0 to 1 ms) leave the FILE unlocked now and
 * then: without them fork, which needs the stdio list lock, starves even
 * with glibc's malloc. */
static void *reader(void *arg) {
    unsigned k = (unsigned)(size_t)arg;
    while (!atomic_load(&stop)) {
        char *line = NULL;
        size_t cap = 0;
        if (k++ % 2) {
            cap = 16;
            line = malloc(cap);
        }
        ssize_t n = getline(&line, &cap, shared);
        free(line);
        if (n < 0)
            rewind(shared);
        else
            atomic_fetch_add(&lines_read, 1);
        pause_us((long)(k * 7919u % 1000u));
    }
    return NULL;
}

static void *flusher(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        fflush(NULL);
        pause_us(100);
    }
    return NULL;
}

int main(void) {
    /* Lines of 64 KiB to 6 MiB: getline grows its buffer past the sizes
     * that take the allocator's global locks. */
    shared = tmpfile();
    if (!shared) {
        perror("tmpfile");
        return 1;
    }
    static const size_t lens[] = {3u << 20, 64u << 10, 6u << 20, 1u << 20, (5u << 20) / 2, 5u << 20};
    char *text = malloc(6u << 20);
    if (!text) return 1;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        memset(text, 'a' + (int)i, lens[i] - 1);
        text[lens[i] - 1] = '\n';
        if (fwrite(text, 1, lens[i], shared) != lens[i]) {
            perror("fwrite");
            return 1;
        }
    }
    free(text);
    rewind(shared);

    clock_gettime(CLOCK_MONOTONIC, &start);
    pthread_t f[FORKERS], r[READERS], l[FLUSHERS];
    for (int i = 0; i < READERS; i++) pthread_create(&r[i], NULL, reader, (void *)(size_t)(i * 500));
    for (int i = 0; i < FLUSHERS; i++) pthread_create(&l[i], NULL, flusher, NULL);
    for (int i = 0; i < FORKERS; i++) pthread_create(&f[i], NULL, forker, (void *)(size_t)(i + 1));
    for (int i = 0; i < FORKERS; i++) pthread_join(f[i], NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < READERS; i++) pthread_join(r[i], NULL);
    for (int i = 0; i < FLUSHERS; i++) pthread_join(l[i], NULL);
    fclose(shared);

    int failed = atomic_load(&failures);
    if (failed) {
        fprintf(stderr, "%d children failed\n", failed);
        return 1;
    }
    printf("fork stdio ok: %d forks, %ld lines, %.2f s\n", atomic_load(&forks), atomic_load(&lines_read),
           elapsed());
    return 0;
}
