/* Shared by the C workloads: a fast PRNG, a pattern stamped into blocks and
 * checked before they are freed (exit 3 on corruption), and a timer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}

static inline void stamp(unsigned char *p, size_t n) {
    p[0] = (unsigned char)n;
    p[n - 1] = (unsigned char)(n >> 3) ^ 0x5a;
}

static inline void check(const unsigned char *p, size_t n) {
    if (p[0] != (unsigned char)n || p[n - 1] != ((unsigned char)(n >> 3) ^ 0x5a)) {
        fprintf(stderr, "corrupted block %p (%zu bytes)\n", (void *)p, n);
        exit(3);
    }
}

static inline double scale_arg(int argc, char **argv) {
    return argc > 1 ? atof(argv[1]) : 1.0;
}
