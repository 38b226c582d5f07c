/* Edge cases of every export, with glibc's conventions. Exits 0 when all
 * pass; prints the failing check and exits 1 otherwise. Built by
 * capi/tests/c_programs.rs, linked against libfortalloc.so and also run
 * under LD_PRELOAD. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Weak: the program also links without fortalloc and gets them from the
 * preloaded library at run time. */
void free_sized(void *p, size_t size) __attribute__((weak));
void free_aligned_sized(void *p, size_t align, size_t size) __attribute__((weak));
void fortalloc_print_stats(void) __attribute__((weak));

static int failures = 0;
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static int aligned(void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

int main(void) {
    /* It is fortalloc's library that is loaded (linked or preloaded). */
    CHECK(fortalloc_print_stats != NULL && free_sized != NULL && free_aligned_sized != NULL);
    if (!free_sized) return 1;

    /* malloc(0): unique, freeable. */
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 != NULL && z2 != NULL && z1 != z2);
    free(z1);
    free(z2);
    free(NULL);

    /* 16-byte alignment for every size, as glibc gives on x86_64. */
    for (size_t n = 0; n < 5000; n += n < 64 ? 1 : 7) {
        char *p = malloc(n);
        CHECK(p != NULL);
        CHECK(aligned(p, 16));
        char *c = calloc(1, n);
        CHECK(c != NULL && aligned(c, 16));
        c = realloc(c, n / 2);
        CHECK(n / 2 == 0 || (c != NULL && aligned(c, 16)));
        free(c);
        CHECK(malloc_usable_size(p) >= n);
        memset(p, 0x5a, malloc_usable_size(p));
        free(p);
    }

    /* Impossible sizes: NULL and ENOMEM. */
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM);

    /* calloc: zeroed; overflow gives NULL + ENOMEM. */
    for (size_t n = 1; n < 100000; n *= 3) {
        unsigned char *p = malloc(n);
        memset(p, 0xff, n);
        free(p);
        p = calloc(n, 1);
        CHECK(p != NULL);
        for (size_t i = 0; i < n; i++)
            if (p[i]) { CHECK(!"calloc not zero"); break; }
        free(p);
    }
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc((size_t)1 << 33, (size_t)1 << 33) == NULL && errno == ENOMEM);
    void *c0 = calloc(0, 10);
    CHECK(c0 != NULL);
    free(c0);

    /* realloc: NULL allocates; size 0 frees and returns NULL (glibc);
     * contents kept; failure leaves the block alone with ENOMEM. */
    char *r = realloc(NULL, 10);
    CHECK(r != NULL);
    strcpy(r, "fortalloc");
    r = realloc(r, 100000);
    CHECK(r != NULL && strcmp(r, "fortalloc") == 0);
    r = realloc(r, 5);
    CHECK(r != NULL && memcmp(r, "forta", 5) == 0);
    errno = 0;
    CHECK(realloc(r, SIZE_MAX) == NULL && errno == ENOMEM);
    CHECK(memcmp(r, "forta", 5) == 0);
    CHECK(realloc(r, 0) == NULL);

    /* reallocarray: overflow is ENOMEM and leaves the block alone. */
    int *ra = reallocarray(NULL, 10, sizeof(int));
    CHECK(ra != NULL);
    ra[9] = 42;
    errno = 0;
    CHECK(reallocarray(ra, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    CHECK(ra[9] == 42);
    ra = reallocarray(ra, 1000, sizeof(int));
    CHECK(ra != NULL && ra[9] == 42);
    free(ra);

    /* posix_memalign: EINVAL unless a power of two multiple of
     * sizeof(void*), *memptr untouched on error. */
    void *mp = (void *)0x1234;
    CHECK(posix_memalign(&mp, 3, 10) == EINVAL && mp == (void *)0x1234);
    CHECK(posix_memalign(&mp, 4, 10) == EINVAL && mp == (void *)0x1234);
    CHECK(posix_memalign(&mp, 0, 10) == EINVAL && mp == (void *)0x1234);
    CHECK(posix_memalign(&mp, 24, 10) == EINVAL && mp == (void *)0x1234);
    CHECK(posix_memalign(&mp, 64, SIZE_MAX - 100) == ENOMEM && mp == (void *)0x1234);
    for (size_t a = sizeof(void *); a <= ((size_t)1 << 24); a *= 2) {
        void *p = NULL;
        CHECK(posix_memalign(&p, a, 100) == 0 && p != NULL && aligned(p, a));
        free(p);
        p = aligned_alloc(a, 3 * a);
        CHECK(p != NULL && aligned(p, a));
        free_aligned_sized(p, a, 3 * a);
        p = memalign(a, 1);
        CHECK(p != NULL && aligned(p, a));
        free(p);
    }

    /* aligned_alloc: a non-power-of-two alignment is EINVAL (glibc 2.38). */
    errno = 0;
    CHECK(aligned_alloc(24, 48) == NULL && errno == EINVAL);
    /* memalign rounds a bad alignment up to a power of two. */
    void *m = memalign(24, 10);
    CHECK(m != NULL && aligned(m, 32));
    free(m);
    errno = 0;
    CHECK(memalign(SIZE_MAX, 10) == NULL && errno == EINVAL);

    /* valloc / pvalloc: page-aligned; pvalloc rounds to whole pages. */
    long ps = sysconf(_SC_PAGESIZE);
    void *v = valloc(10);
    CHECK(v != NULL && aligned(v, ps));
    free(v);
    void *pv = pvalloc(1);
    CHECK(pv != NULL && aligned(pv, ps) && malloc_usable_size(pv) >= (size_t)ps);
    memset(pv, 1, ps);
    free(pv);
    errno = 0;
    CHECK(pvalloc(SIZE_MAX - 10) == NULL && errno == ENOMEM);

    /* Sized frees with the right size. */
    void *s = malloc(100);
    free_sized(s, 100);
    s = malloc(5);
    free_sized(s, 5);

    /* malloc_trim and mallinfo2 report real figures. */
    void *big[64];
    /* Written through volatile pointers: the compiler may not elide them. */
    for (int i = 0; i < 64; i++) {
        big[i] = malloc(100000);
        ((volatile char *)big[i])[0] = 1;
    }
    struct mallinfo2 mi = mallinfo2();
    CHECK(mi.uordblks >= 64 * 100000);
    CHECK(mi.arena >= mi.uordblks);
    void *huge = malloc(50 << 20);
    ((volatile char *)huge)[0] = 1;
    mi = mallinfo2();
    CHECK(mi.hblks >= 1 && mi.hblkhd >= (50u << 20));
    free(huge);
    for (int i = 0; i < 64; i++) free(big[i]);
    CHECK(malloc_trim(0) == 1);

    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
