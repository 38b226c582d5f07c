/* cfrac/espresso-like single-thread object churn: build a random binary
 * search tree of nodes with string payloads, tear half of it down, rebuild,
 * repeatedly. */
#include "common.h"

typedef struct node { struct node *l, *r; uint64_t key; size_t n; char *text; } node_t;

static node_t *insert(node_t *t, uint64_t key, uint64_t *s) {
    node_t **at = &t, *root = t;
    while (*at) at = key < (*at)->key ? &(*at)->l : &(*at)->r;
    node_t *n = malloc(sizeof *n);
    n->l = n->r = NULL; n->key = key;
    n->n = 4 + rnd(s) % 60;
    n->text = malloc(n->n);
    stamp((unsigned char *)n->text, n->n);
    *at = n;
    return root ? root : n;
}

static long destroy(node_t *t) {
    if (!t) return 0;
    long c = destroy(t->l) + destroy(t->r) + 1;
    check((unsigned char *)t->text, t->n);
    free(t->text);
    free(t);
    return c;
}

int main(int argc, char **argv) {
    long rounds = (long)(40 * scale_arg(argc, argv));
    uint64_t s = 42;
    long total = 0;
    for (long r = 0; r < rounds; r++) {
        node_t *t = NULL;
        for (int i = 0; i < 60000; i++) t = insert(t, rnd(&s), &s);
        total += destroy(t);
    }
    return total > 0 ? 0 : 1;
}
