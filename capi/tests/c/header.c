/* fortalloc.h from a C11 program built with -Wall -Wextra -Werror and
 * linked against libfortalloc: every function it declares called once.
 * The header comes before and after the C library's own, whose
 * declarations of the same functions must agree with it. Prints "header
 * ok" and exits 0 when every check passes; the test reads the statistics
 * table that fortalloc_print_stats writes to stderr. */
#include "fortalloc.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fortalloc.h"

static int failures = 0;
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
            failures++;                                                      \
        }                                                                    \
    } while (0)

int main(void) {
    /* Blocks the statistics must count: some live while they print. */
    void *live[100];
    for (int i = 0; i < 100; i++) {
        live[i] = malloc(16 + (size_t)i * 24);
        CHECK(live[i] != NULL);
    }

    /* reallocarray: a real resize keeps the contents; an overflowing
     * product is NULL and ENOMEM, the block untouched. */
    unsigned *a = reallocarray(NULL, 10, sizeof(unsigned));
    CHECK(a != NULL);
    for (unsigned i = 0; a && i < 10; i++) a[i] = i * 7;
    unsigned *b = reallocarray(a, 1000, sizeof(unsigned));
    CHECK(b != NULL && b[9] == 63);
    errno = 0;
    CHECK(reallocarray(b, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    CHECK(b[0] == 0 && b[9] == 63);
    free(b);

    /* The C23 sized frees, with the sizes the blocks were made with. */
    char *s = malloc(200);
    CHECK(s != NULL);
    memset(s, 1, 200);
    free_sized(s, 200);
    free_sized(NULL, 0);
    void *al = aligned_alloc(256, 512);
    CHECK(al != NULL && (uintptr_t)al % 256 == 0);
    free_aligned_sized(al, 256, 512);
    free_aligned_sized(NULL, 64, 0);

    fortalloc_print_stats();

    for (int i = 0; i < 100; i++) free(live[i]);
    /* fortalloc's collect: the freed pages go back; it says it may have
     * released memory, and allocation works after it. */
    CHECK(malloc_trim(0) == 1);
    void *after = malloc(64);
    CHECK(after != NULL);
    free(after);

    if (failures) return 1;
    printf("header ok\n");
    return 0;
}
