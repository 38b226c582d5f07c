/* Issue 12, scenario 2: fork() from a signal handler. A single-threaded
 * program allocates and frees in a loop (mixed sizes, a few of several MiB
 * so the allocator's global locks are taken often) while a sender process
 * sends it SIGUSR1 and SIGUSR2 at random moments. Each handler forks:
 *
 * - the child sets a flag and returns from the handler, so it finishes the
 *   malloc or free the signal interrupted; the main loop then sees the
 *   flag, does a few hundred more mallocs and frees and _exits(0);
 * - the parent waits for the child in the handler, counts it and tells the
 *   sender, which sleeps a random 0 to 1 ms before the next signal: one
 *   signal at a time, so the main loop runs between them however slow a
 *   fork is.
 *
 * Each handler blocks both signals, so handlers do not nest: the fork
 * interrupts only the main loop. An allocator whose fork prepare handler
 * waits for a lock the interrupted main thread holds never returns from
 * fork. glibc's fork takes no malloc lock in a single-threaded process.
 *
 * Stops after MAX_FORKS forks or MAX_SECONDS seconds, whichever comes
 * first, and prints "fork signal ok: N forks". A hang is the failure this
 * program exists to show: its caller kills it after a time limit, and
 * checks that all MAX_FORKS forks were made (a count, not a rate: the time
 * cap is far above what any allocator here needs, so a loaded machine
 * makes the run longer, not the test red). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FORKS 500
#define MAX_SECONDS 40.0

static volatile sig_atomic_t in_child = 0;
static volatile sig_atomic_t forks = 0;
static volatile sig_atomic_t failures = 0;
static volatile sig_atomic_t done = 0;
static int ack_fd = -1; /* the write end of the pipe to the sender */

static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    if (done) {
        errno = saved;
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        /* Back to whatever the signal interrupted; the main loop ends. */
        in_child = 1;
        errno = saved;
        return;
    }
    if (pid < 0) {
        failures = failures + 1;
    } else {
        int status = 0;
        pid_t r;
        while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
        }
        if (r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            forks = forks + 1;
        else
            failures = failures + 1;
    }
    if (forks >= MAX_FORKS) done = 1;
    char c = 0;
    if (write(ack_fd, &c, 1) != 1) done = 1;
    errno = saved;
}

/* Sizes from 1 byte to 6 MiB, most of them small. */
static size_t size_of(uint64_t x) {
    switch (x % 16) {
    case 0:
        return ((size_t)1 << 20) * (1 + (x >> 8) % 6); /* 1..6 MiB */
    case 1:
        return (size_t)(64 << 10) + (size_t)((x >> 8) % (960 << 10)); /* 64 KiB..1 MiB */
    case 2:
    case 3:
        return 1024 + (size_t)((x >> 8) % 30000);
    default:
        return 1 + (size_t)((x >> 8) % 1000);
    }
}

static uint64_t next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Churns through `rounds` rounds of 32 allocations; the slots keep some
 * blocks alive across rounds. */
static void churn(void **slot, uint64_t *seed, int rounds) {
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 32; i++) {
            uint64_t x = next(seed);
            int k = (int)(x % 64);
            free(slot[k]);
            size_t n = size_of(x >> 6);
            slot[k] = malloc(n);
            if (!slot[k]) _exit(4);
            ((char *)slot[k])[0] = (char)x;
            ((char *)slot[k])[n - 1] = (char)x;
        }
    }
}

/* A fork child, back in the main loop: a few hundred more mallocs and
 * frees (small ones, and one of 4 MiB), then out. */
static void child_work(uint64_t *seed) {
    void *keep[32] = {0};
    for (int i = 0; i < 300; i++) {
        uint64_t x = next(seed);
        int k = (int)(x % 32);
        free(keep[k]);
        keep[k] = malloc(1 + (size_t)((x >> 8) % 2000));
        if (!keep[k]) _exit(4);
    }
    char *big = malloc((size_t)4 << 20);
    if (!big) _exit(4);
    big[0] = 1;
    big[((size_t)4 << 20) - 1] = 1;
    free(big);
    for (int k = 0; k < 32; k++) free(keep[k]);
    _exit(0);
}

/* The sender process: a signal, then waits for the handler's byte, then
 * sleeps 0 to 1 ms. Calls only nanosleep, kill, read and _exit. */
static void sender(pid_t target, int ack) {
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    for (;;) {
        uint64_t x = next(&s);
        struct timespec ts = {0, (long)(x % 1000) * 1000};
        nanosleep(&ts, NULL);
        if (kill(target, (x >> 20) & 1 ? SIGUSR1 : SIGUSR2) != 0) _exit(0);
        char c;
        if (read(ack, &c, 1) != 1) _exit(0);
    }
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR1);
    sigaddset(&sa.sa_mask, SIGUSR2);
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || sigaction(SIGUSR2, &sa, NULL) != 0) {
        perror("sigaction");
        return 1;
    }
    int ack[2];
    if (pipe(ack) != 0) {
        perror("pipe");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Set before the sender exists: its first signal can come at once, and
     * a handler that found no pipe would end the run after one fork. */
    ack_fd = ack[1];
    pid_t self = getpid();
    pid_t send = fork();
    if (send < 0) {
        perror("fork");
        return 1;
    }
    if (send == 0) {
        close(ack[1]);
        sender(self, ack[0]);
    }
    close(ack[0]);

    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    void *slot[64] = {0};
    uint64_t seed = 0x2545f4914f6cdd1dull;
    double secs = 0;
    long rounds = 0;
    while (!done && secs < MAX_SECONDS) {
        churn(slot, &seed, 1);
        rounds++;
        if (in_child) child_work(&seed);
        clock_gettime(CLOCK_MONOTONIC, &now);
        secs = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
    }

    sigset_t both;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGUSR2);
    sigprocmask(SIG_BLOCK, &both, NULL);
    done = 1;
    kill(send, SIGKILL);
    waitpid(send, NULL, 0);
    for (int k = 0; k < 64; k++) free(slot[k]);
    if (failures) {
        fprintf(stderr, "%d children failed\n", (int)failures);
        return 1;
    }
    printf("fork signal ok: %d forks, %ld rounds, %.2f s\n", (int)forks, rounds, secs);
    return 0;
}
