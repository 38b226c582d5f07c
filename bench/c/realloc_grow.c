/* Vectors grown by realloc one element at a time, as C code grows arrays. */
#include "common.h"

int main(int argc, char **argv) {
    long rounds = (long)(20000 * scale_arg(argc, argv));
    uint64_t s = 9;
    for (long r = 0; r < rounds; r++) {
        size_t cap = 0, len = 0, target = 1000 + rnd(&s) % 60000;
        uint32_t *v = NULL;
        while (len < target) {
            if (len == cap) {
                cap = cap ? cap + cap / 8 + 1 : 1;
                v = realloc(v, cap * sizeof *v);
                if (!v) return 2;
            }
            v[len] = (uint32_t)(len * 2654435761u);
            len++;
        }
        for (size_t i = 0; i < len; i += 97)
            if (v[i] != (uint32_t)(i * 2654435761u)) { fprintf(stderr, "realloc lost data\n"); return 3; }
        free(v);
    }
    return 0;
}
