/* hold-small-blocks: holds GiB of live 64-byte blocks (argument, default
 * 8), frees every other one and refills the holes, then counts the
 * process's mappings and maps 1 MiB itself. Checks that a hardened build
 * keeps its guards without running the process out of kernel mappings:
 *   cc -O2 bench/c/hold_small_blocks.c -o /tmp/hold
 *   LD_PRELOAD=target/secure/release/libfortalloc.so /tmp/hold 8
 * Not a timed workload (it needs about 12 GiB of memory). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    size_t gib = argc > 1 ? strtoul(argv[1], 0, 10) : 8;
    size_t n = gib * (1ul << 30) / 64;
    void **v = mmap(0, n * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (v == MAP_FAILED) { printf("cannot map the block table\n"); return 1; }
    for (size_t i = 0; i < n; i++) {
        v[i] = malloc(64);
        if (!v[i]) { printf("malloc failed at block %zu\n", i); return 1; }
        memset(v[i], (int)i, 64);
    }
    for (size_t i = 0; i < n; i += 2) free(v[i]);
    for (size_t i = 0; i < n; i += 2) {
        v[i] = malloc(64);
        if (!v[i]) { printf("refill failed at block %zu\n", i); return 1; }
        memset(v[i], 1, 64);
    }
    FILE *f = fopen("/proc/self/maps", "r");
    int lines = 0, c;
    while ((c = fgetc(f)) != EOF) if (c == '\n') lines++;
    fclose(f);
    void *m = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mappings %d, program mmap %s\n", lines, m == MAP_FAILED ? "FAILED" : "ok");
    return m == MAP_FAILED;
}
