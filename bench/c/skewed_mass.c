/* skewed-mass: a working set of 32K blocks with a skewed size mix (80% of
 * 16..64 B, 15% up to 512 B, 5% up to 8 KiB) replaced one at random per
 * step, and every PERIOD steps a mass free: three times in four half of
 * the blocks (every other slot, so the survivors are spread over every
 * page), the fourth time all of them; the freed slots are then refilled
 * at once. */
#include "common.h"

#define SLOTS 32768
#define PERIOD 200000

static unsigned char *p[SLOTS];
static size_t n[SLOTS];

static size_t pick(uint64_t *s) {
    uint64_t r = rnd(s) % 100;
    if (r < 80) return 16 + rnd(s) % 49;
    if (r < 95) return 65 + rnd(s) % 448;
    return 513 + rnd(s) % (8192 - 512);
}

static void fill(int k, uint64_t *s) {
    n[k] = pick(s);
    p[k] = malloc(n[k]);
    if (!p[k]) exit(2);
    stamp(p[k], n[k]);
}

static void drop(int k) {
    check(p[k], n[k]);
    free(p[k]);
    p[k] = NULL;
}

int main(int argc, char **argv) {
    long steps = (long)(8000000 * scale_arg(argc, argv));
    uint64_t s = 0x853c49e6748fea9bull;
    for (int k = 0; k < SLOTS; k++) fill(k, &s);
    for (long i = 1; i <= steps; i++) {
        int k = rnd(&s) % SLOTS;
        drop(k);
        fill(k, &s);
        if (i % PERIOD == 0) {
            long phase = i / PERIOD;
            int all = phase % 4 == 0;
            int first = all ? 0 : (int)(phase & 1);
            int stride = all ? 1 : 2;
            for (int j = first; j < SLOTS; j += stride) drop(j);
            for (int j = first; j < SLOTS; j += stride) fill(j, &s);
        }
    }
    for (int k = 0; k < SLOTS; k++) drop(k);
    return 0;
}
