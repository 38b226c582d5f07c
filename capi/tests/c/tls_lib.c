/* A library with thread-local storage, dlopen'ed at run time: its TLS
 * block is allocated dynamically by glibc (with malloc). */
#include <stdlib.h>
static __thread int counter;
static __thread char buffer[4096];
int tls_bump(void) {
    buffer[counter % 4096] = (char)counter;
    return ++counter;
}
