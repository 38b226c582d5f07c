/* Prints the file that defines the malloc this process calls: how the
 * harness checks that a preload took effect. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    Dl_info info;
    void *(*volatile m)(size_t) = malloc;
    if (!dladdr((void *)m, &info) || !info.dli_fname) return 1;
    printf("%s\n", info.dli_fname);
    return 0;
}
