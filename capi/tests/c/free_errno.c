/* free and every other way of freeing keep errno, even when the process
 * has used up its kernel mappings (vm.max_map_count) and every mmap,
 * mprotect that splits a mapping, or munmap of part of one fails with
 * ENOMEM inside the allocator.
 *
 * Blocks of every kind (small, medium, large from 64 KiB to 2 MiB, huge
 * over 2 MiB) are allocated first; then the process maps one-page ranges
 * with alternating protections (so neighbours cannot merge) until mmap
 * fails. With no mapping to spare, half of the blocks are freed, each
 * with errno set to a sentinel just before and checked just after: by
 * free, free_sized, free_aligned_sized, the C++ deletes, realloc to 0
 * and a realloc that moves the block; a thread started before the limit
 * frees its share too. Then a few mappings are given back, new blocks
 * are allocated as far as they can be, and everything left is freed the
 * same way.
 *
 * Prints "ok <frees checked>" and exits 0, or one FAIL line per free that
 * changed errno and exits 1; "skip" (exit 0) where the limit is too high
 * to reach quickly. Run under LD_PRELOAD=libfortalloc.so. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { SENTINEL = 1789 };

/* The most one-page mappings this test makes before giving up. */
#define MAX_MAPS (1 << 20)
static void *maps[MAX_MAPS];
static size_t nmaps;

static int failures;
static int checked;

/* How a block is freed. */
enum how { FREE, FREE_SIZED, FREE_ALIGNED_SIZED, DELETE, SIZED_DELETE, REALLOC_ZERO, REALLOC_MOVE, HOWS };
static const char *const how_names[HOWS] = {
    "free", "free_sized", "free_aligned_sized", "delete", "sized delete", "realloc(p, 0)", "realloc(p, 2n)",
};

static void (*free_sized_fn)(void *, size_t);
static void (*free_aligned_sized_fn)(void *, size_t, size_t);
static void (*delete_fn)(void *);
static void (*sized_delete_fn)(void *, size_t);

struct block {
    void *p;
    size_t size;
    enum how how;
};

static const size_t sizes[] = {
    24, 1000, 6000,                  /* small */
    12000, 60000,                    /* medium */
    64 * 1024 + 1, 100000, 500000, 1 << 20, 2 << 20, /* large */
    (2 << 20) + 1, 3 << 20, 8 << 20, 40 << 20,       /* huge */
};
#define NSIZES (sizeof sizes / sizeof sizes[0])
/* Blocks of each size and way: enough large ones that freeing them runs
 * quarantine rounds (which free blocks that waited) where there is one. */
#define COPIES 3

/* A line to stdout without stdio (whose buffer would need malloc). */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 1)
        n = sizeof line - 1;
    if (n > 0 && write(1, line, (size_t)n) < 0)
        _exit(3);
}

static void *alloc(size_t size, enum how how) {
    void *p = how == FREE_ALIGNED_SIZED ? aligned_alloc(64, (size + 63) & ~(size_t)63) : malloc(size);
    if (p)
        memset(p, 0x5a, size < 4096 ? size : 4096);
    return p;
}

/* Frees `b` its way with errno at the sentinel; a changed errno is a
 * failure. A realloc that moves may fail, with ENOMEM. */
static void release(struct block *b, const char *phase) {
    if (!b->p)
        return;
    size_t n = b->size;
    if (b->how == FREE_ALIGNED_SIZED)
        n = (n + 63) & ~(size_t)63;
    errno = SENTINEL;
    switch (b->how) {
    case FREE: free(b->p); break;
    case FREE_SIZED: free_sized_fn(b->p, n); break;
    case FREE_ALIGNED_SIZED: free_aligned_sized_fn(b->p, 64, n); break;
    case DELETE: delete_fn(b->p); break;
    case SIZED_DELETE: sized_delete_fn(b->p, n); break;
    case REALLOC_ZERO:
        if (realloc(b->p, 0) != NULL) {
            say("FAIL %s: realloc(p, 0) of %zu bytes returned a block\n", phase, n);
            failures++;
        }
        break;
    case REALLOC_MOVE: {
        void *q = realloc(b->p, 2 * n);
        int e = errno;
        if (q == NULL) {
            /* Out of memory: the block is untouched and errno says so. */
            if (e != ENOMEM) {
                say("FAIL %s: realloc(p, %zu) failed with errno %d, not ENOMEM\n", phase, 2 * n, e);
                failures++;
            }
            errno = SENTINEL;
            free(b->p);
        } else {
            if (e != SENTINEL) {
                say("FAIL %s: realloc(p, %zu) of %zu bytes succeeded but changed errno to %d\n", phase, 2 * n,
                    n, e);
                failures++;
            }
            errno = SENTINEL;
            free(q);
        }
        break;
    }
    default: break;
    }
    int e = errno;
    checked++;
    if (e != SENTINEL) {
        say("FAIL %s: %s of %zu bytes changed errno from %d to %d (%s)\n", phase, how_names[b->how], n, SENTINEL,
            e, strerror(e));
        failures++;
    }
    b->p = NULL;
}

#define NBLOCKS (NSIZES * HOWS * COPIES)
static struct block before[NBLOCKS];
static struct block after[NBLOCKS];
/* The helper thread's own blocks, allocated before the limit. */
static struct block theirs[NSIZES * HOWS];

static void fill(struct block *bs, size_t count_per_way) {
    size_t k = 0;
    for (size_t s = 0; s < NSIZES; s++)
        for (int h = 0; h < HOWS; h++)
            for (size_t c = 0; c < count_per_way; c++) {
                bs[k].size = sizes[s];
                bs[k].how = (enum how)h;
                bs[k].p = alloc(sizes[s], (enum how)h);
                k++;
            }
}

static int go[2];

static void *helper(void *arg) {
    (void)arg;
    char c;
    if (read(go[0], &c, 1) != 1)
        return NULL;
    for (size_t i = 0; i < NSIZES * HOWS; i++)
        release(&theirs[i], "at the limit, another thread");
    return NULL;
}

/* Maps one-page ranges until the kernel refuses; false if the limit is
 * too high to reach here. */
static int use_up_mappings(void) {
    long ps = sysconf(_SC_PAGESIZE);
    for (;;) {
        if (nmaps == MAX_MAPS)
            return 0;
        int prot = nmaps % 2 ? PROT_READ : PROT_NONE;
        void *p = mmap(NULL, (size_t)ps, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            if (errno != ENOMEM) {
                say("FAIL: mmap failed with errno %d, not ENOMEM\n", errno);
                exit(1);
            }
            return 1;
        }
        maps[nmaps++] = p;
    }
}

int main(void) {
    if (!dlsym(RTLD_DEFAULT, "fortalloc_print_stats")) {
        say("FAIL: not running on fortalloc (LD_PRELOAD=libfortalloc.so)\n");
        return 1;
    }
    free_sized_fn = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    free_aligned_sized_fn = (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    delete_fn = (void (*)(void *))dlsym(RTLD_DEFAULT, "_ZdlPv");
    sized_delete_fn = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "_ZdlPvm");
    if (!free_sized_fn || !free_aligned_sized_fn || !delete_fn || !sized_delete_fn) {
        say("FAIL: fortalloc's free_sized, free_aligned_sized or operator delete missing\n");
        return 1;
    }

    fill(before, COPIES);
    fill(theirs, 1);
    for (size_t i = 0; i < NBLOCKS; i++)
        if (!before[i].p) {
            say("FAIL: malloc(%zu) failed before the limit\n", before[i].size);
            return 1;
        }
    pthread_t t;
    if (pipe(go) != 0 || pthread_create(&t, NULL, helper, NULL) != 0) {
        say("FAIL: no helper thread\n");
        return 1;
    }

    if (!use_up_mappings()) {
        say("skip: more than %d mappings allowed\n", MAX_MAPS);
        return 0;
    }
    /* Half of the blocks, with no mapping to spare. */
    for (size_t i = 0; i < NBLOCKS; i += 2)
        release(&before[i], "at the limit");
    if (write(go[1], "g", 1) != 1 || pthread_join(t, NULL) != 0) {
        say("FAIL: the helper thread did not run\n");
        return 1;
    }

    /* A few mappings back, so that the allocator can map again, if
     * barely: new blocks as far as they come, and all the rest. */
    for (int i = 0; i < 64 && nmaps > 0; i++)
        munmap(maps[--nmaps], (size_t)sysconf(_SC_PAGESIZE));
    fill(after, 1);
    for (size_t i = 1; i < NBLOCKS; i += 2)
        release(&before[i], "near the limit");
    for (size_t i = 0; i < NSIZES * HOWS; i++)
        release(&after[i], "near the limit, allocated there");

    while (nmaps > 0)
        munmap(maps[--nmaps], (size_t)sysconf(_SC_PAGESIZE));
    if (failures) {
        say("%d of %d frees changed errno\n", failures, checked);
        return 1;
    }
    say("ok %d\n", checked);
    return 0;
}
