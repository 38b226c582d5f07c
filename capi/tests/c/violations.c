/* One heap violation per run, chosen by argv[1]; under the hardened
 * library each must end in SIGABRT with fortalloc's message. Prints the
 * address involved as "addr=0x..." first. The bad writes go through
 * volatile pointers: a compiler may delete a store right before free() or
 * after it, since the program's behaviour is undefined. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

/* Where allocation results go, so the compiler cannot drop the calls or
 * assume what they return. */
static void *volatile sink;

static void say(void *p) { printf("addr=%p\n", p); fflush(stdout); }

static void *free_it(void *p) { free(p); return NULL; }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *c = argv[1];
    if (!strcmp(c, "double-free")) {
        char *p = malloc(40); free(p); say(p); free(p);
    } else if (!strcmp(c, "double-free-aba")) {
        char *a = malloc(40), *b = malloc(40); free(a); free(b); say(a); free(a);
    } else if (!strcmp(c, "double-free-thread")) {
        char *p = malloc(40); pthread_t t; pthread_create(&t, NULL, free_it, p); pthread_join(t, NULL); say(p); free(p);
    } else if (!strcmp(c, "overflow-1")) {
        char *p = malloc(20); say(p); ((volatile char *)p)[20] = 'x'; free(p);
    } else if (!strcmp(c, "overflow-8-large")) {
        char *p = malloc(200000); say(p); for (int i = 0; i < 8; i++) ((volatile char *)p)[200000 + i] = 'x'; free(p);
    } else if (!strcmp(c, "uaf-write")) {
        char *p = malloc(64); free(p); say(p); ((volatile char *)p)[20] = 'x';
        for (int i = 0; i < 100000; i++) sink = malloc(64);
    } else if (!strcmp(c, "realloc-freed")) {
        char *p = malloc(64); char *keep = malloc(64); (void)keep; free(p); say(p); p = realloc(p, 128);
    } else if (!strcmp(c, "poison")) {
        static uint64_t target[16];
        char *a = malloc(64); char *keep = malloc(64); (void)keep; free(a);
        *(volatile uintptr_t *)a = (uintptr_t)target; say(a);
        for (int i = 0; i < 10000; i++) {
            sink = malloc(64);
            if (sink == (void *)target) { puts("TARGET RETURNED"); return 7; }
        }
        puts("attack failed");
        return 0;
    } else {
        return 2;
    }
    puts("not detected");
    return 0;
}
