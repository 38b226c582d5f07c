/* realloc-strings: C code that grows arrays by one element at a time and
 * builds strings at their exact size. 2,000 live vectors (elements of 4,
 * 8, 12 or 16 bytes) each grow with realloc to len + 1 elements up to a
 * random length (uniform below 16 << k, k uniform in 0..8: up to 4,096,
 * most a few hundred), are checked whole, freed and started again;
 * between the pushes, strings are formatted into blocks of exactly
 * strlen + 1 bytes and concatenated into a fresh block of the joint length,
 * the old one freed. Every element and string is checked (exit 3). */
#include "common.h"

#define VECS 2000
#define STRS 4096
#define MAXSTR 600

typedef struct { unsigned char *p; uint32_t len, target, es, seed; } vec_t;
typedef struct { char *p; size_t len; uint64_t sum; } str_t;

static vec_t vecs[VECS];
static str_t strs[STRS];

static void fail(const char *what) {
    fprintf(stderr, "realloc-strings: %s corrupted\n", what);
    exit(3);
}

/* Element i of a vector: its index mixed with the vector's seed in the
 * first 4 bytes, then bytes counting up from it. */
static void put_elem(unsigned char *e, uint32_t es, uint32_t seed, uint32_t i) {
    uint32_t w = seed ^ (i * 2654435761u);
    memcpy(e, &w, 4);
    for (uint32_t b = 4; b < es; b++) e[b] = (unsigned char)(w + b);
}

static void check_elem(const unsigned char *e, uint32_t es, uint32_t seed, uint32_t i) {
    uint32_t w;
    memcpy(&w, e, 4);
    if (w != (seed ^ (i * 2654435761u))) fail("vector element");
    for (uint32_t b = 4; b < es; b++) if (e[b] != (unsigned char)(w + b)) fail("vector element");
}

static void restart(vec_t *v, uint64_t *s) {
    if (v->p) {
        for (uint32_t i = 0; i < v->len; i++) check_elem(v->p + (size_t)i * v->es, v->es, v->seed, i);
        free(v->p);
    }
    v->p = NULL;
    v->len = 0;
    uint32_t k = rnd(s) % 9;
    v->target = 1 + (uint32_t)(rnd(s) % (16u << k)); /* up to 4,096, most short */
    v->es = 4 * (1 + rnd(s) % 4);
    v->seed = (uint32_t)rnd(s);
}

static void push(vec_t *v, uint64_t *s) {
    unsigned char *q = realloc(v->p, (size_t)(v->len + 1) * v->es);
    if (!q) exit(2);
    v->p = q;
    if (v->len > 0) {
        check_elem(q, v->es, v->seed, 0);
        check_elem(q + (size_t)(v->len - 1) * v->es, v->es, v->seed, v->len - 1);
    }
    put_elem(q + (size_t)v->len * v->es, v->es, v->seed, v->len);
    if (++v->len == v->target) restart(v, s);
}

static uint64_t fnv(const char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h;
}

static void check_str(const str_t *t) {
    if (strlen(t->p) != t->len || fnv(t->p, t->len) != t->sum) fail("string");
}

static void set_str(str_t *t, char *p, size_t len) {
    if (t->p) { check_str(t); free(t->p); }
    t->p = p;
    t->len = len;
    t->sum = fnv(p, len);
}

static const char *const words[8] = {"key", "value", "request", "id", "user-agent", "path", "x", "content-length"};

static void format_str(str_t *t, uint64_t *s, long step) {
    char buf[96];
    uint64_t r = rnd(s);
    int n = snprintf(buf, sizeof buf, "%s=%ld/%llx:%u", words[r % 8], step,
                     (unsigned long long)(r >> 20 & 0xffffff), (unsigned)(r >> 50));
    char *p = malloc((size_t)n + 1);
    if (!p) exit(2);
    memcpy(p, buf, (size_t)n + 1);
    set_str(t, p, (size_t)n);
}

static void concat_str(str_t *a, const str_t *b) {
    check_str(b);
    size_t n = a->len + b->len;
    char *p = malloc(n + 1);
    if (!p) exit(2);
    memcpy(p, a->p, a->len);
    memcpy(p + a->len, b->p, b->len + 1);
    set_str(a, p, n);
}

int main(int argc, char **argv) {
    long steps = (long)(2000000 * scale_arg(argc, argv));
    uint64_t s = 0x1d8e4e27c47d124full;
    for (int i = 0; i < VECS; i++) restart(&vecs[i], &s);
    for (int i = 0; i < STRS; i++) format_str(&strs[i], &s, -1);
    for (long i = 0; i < steps; i++) {
        push(&vecs[rnd(&s) % VECS], &s);
        if (i % 3 == 0) {
            str_t *a = &strs[rnd(&s) % STRS];
            const str_t *b = &strs[rnd(&s) % STRS];
            if (rnd(&s) % 2 == 0 && a != b && a->len + b->len <= MAXSTR) concat_str(a, b);
            else format_str(a, &s, i);
        }
    }
    for (int i = 0; i < VECS; i++) restart(&vecs[i], &s); /* checks and frees */
    for (int i = 0; i < STRS; i++) { check_str(&strs[i]); free(strs[i].p); }
    return 0;
}
