#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

static int (*bump)(void);

static void *run(void *arg) {
    (void)arg;
    int v = 0;
    for (int i = 0; i < 1000; i++) v = bump();
    return (void *)(long)v;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
    bump = (int (*)(void))dlsym(h, "tls_bump");
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, run, NULL);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        if ((long)r != 1000) { fprintf(stderr, "bad tls count %ld\n", (long)r); return 1; }
    }
    if (run(NULL) != (void *)1000L) return 1;
    dlclose(h);
    printf("dlopen tls ok\n");
    return 0;
}
