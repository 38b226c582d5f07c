/* A child forked from a multi-threaded parent, while other threads
 * allocate, can allocate and free. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop = 0;

static void *churn(void *arg) {
    (void)arg;
    while (!stop) {
        void *p[64];
        for (int i = 0; i < 64; i++) p[i] = malloc(16 + i * 100);
        for (int i = 0; i < 64; i++) free(p[i]);
    }
    return NULL;
}

int main(void) {
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, NULL);
    for (int k = 0; k < 50; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < 10000; i++) {
                void *p = malloc(1 + i % 3000);
                free(p);
            }
            void *big = malloc(10 << 20);
            free(big);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d failed: %d\n", k, status);
            return 1;
        }
    }
    stop = 1;
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    printf("fork ok\n");
    return 0;
}
