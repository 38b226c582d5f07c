/* A huge block whose pages cannot be opened fails its allocation, and
 * leaves the allocator as it was: run with guards made by mprotect,
 * without a quarantine, on a preset that seals freed huge blocks.
 *
 * A huge block of one slice is allocated, written and freed (its span,
 * sealed, goes back to its arena, its header left open); the process
 * then maps one-page ranges with alternating protections until mmap
 * fails. A huge block of the same size then takes that span, and opening
 * its pages must split the seal, which the kernel refuses: malloc must
 * return NULL with errno ENOMEM (not abort, not hand out a sealed block).
 * Some mappings are given back, and huge blocks must come again, usable
 * to their last byte, and be freed.
 *
 * Prints "refused" when the allocation at the limit failed with ENOMEM,
 * "taken" when it succeeded (a build or layout without a seal to split),
 * then "ok"; exits 1 after a FAIL line; "skip" where the limit is too
 * high to reach quickly. Run under LD_PRELOAD=libfortalloc.so. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_MAPS (1 << 20)
static void *maps[MAX_MAPS];
static size_t nmaps;

/* Three MiB and a bit: huge (over 2 MiB), one 4 MiB slice with its
 * header and guard. */
#define HUGE ((size_t)3 << 20 | 4096 | 100)

/* A line to stdout without stdio (whose buffer would need malloc). */
static void say(const char *s) {
    if (write(1, s, strlen(s)) < 0)
        _exit(3);
}

static void fill(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i += 4096)
        p[i] = (unsigned char)(i >> 12);
    p[n - 1] = 0xa5;
}

static int check(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i += 4096)
        if (p[i] != (unsigned char)(i >> 12))
            return 0;
    return p[n - 1] == 0xa5;
}

int main(void) {
    if (!dlsym(RTLD_DEFAULT, "fortalloc_print_stats")) {
        say("FAIL: not running on fortalloc (LD_PRELOAD=libfortalloc.so)\n");
        return 1;
    }
    long ps = sysconf(_SC_PAGESIZE);
    unsigned char *p = malloc(HUGE);
    if (!p) {
        say("FAIL: malloc of a huge block failed before the limit\n");
        return 1;
    }
    fill(p, HUGE);
    free(p);
    for (;;) {
        if (nmaps == MAX_MAPS) {
            say("skip: more mappings allowed than this test makes\n");
            return 0;
        }
        int prot = nmaps % 2 ? PROT_READ : PROT_NONE;
        void *m = mmap(NULL, (size_t)ps, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            break;
        maps[nmaps++] = m;
    }
    errno = 0;
    p = malloc(HUGE);
    int e = errno;
    if (p) {
        fill(p, HUGE);
        if (!check(p, HUGE)) {
            say("FAIL: the huge block taken at the limit does not keep its bytes\n");
            return 1;
        }
        free(p);
        say("taken\n");
    } else if (e == ENOMEM) {
        say("refused\n");
    } else {
        say("FAIL: malloc at the limit returned NULL without ENOMEM\n");
        return 1;
    }
    /* Mappings back: huge blocks come again, the span given back too. */
    for (int i = 0; i < 256 && nmaps > 0; i++)
        munmap(maps[--nmaps], (size_t)ps);
    unsigned char *q[4];
    for (int i = 0; i < 4; i++) {
        q[i] = malloc(HUGE);
        if (!q[i]) {
            say("FAIL: malloc of a huge block failed after mappings were given back\n");
            return 1;
        }
        fill(q[i], HUGE);
    }
    for (int i = 0; i < 4; i++) {
        if (!check(q[i], HUGE)) {
            say("FAIL: a huge block allocated after the limit does not keep its bytes\n");
            return 1;
        }
        free(q[i]);
    }
    while (nmaps > 0)
        munmap(maps[--nmaps], (size_t)ps);
    say("ok\n");
    return 0;
}
