/* cbench's launcher: `launch PROGRAM [ARG...]` runs PROGRAM (looked up on
 * PATH when it has no '/') as its child, with this process's environment,
 * stdin and stdout, and stderr on /dev/null. When the child is done it
 * writes "maxrss_kb=N\n" to its own stderr, N being wait4's ru_maxrss of the
 * child, and exits with the child's exit code (128 + signal if killed, 127
 * if it could not start).
 *
 * Why it exists: at execve Linux folds the high-water RSS of the memory
 * image being replaced into the new program's ru_maxrss. A program cbench
 * started itself (posix_spawn, a vfork sharing cbench's memory) therefore
 * carried cbench's own peak, several MiB, as a floor under its peak RSS.
 * Here the program is forked from this launcher instead: fork gives the
 * child a fresh memory image whose high-water mark starts at the pages fork
 * copied, and this image has written only a page or two of stack, so that
 * is all execve carries into the program (a program that only exits
 * reports next to nothing). vfork would not do: the child would carry the
 * launcher's whole image.
 *
 * Built freestanding (-nostdlib -static, x86-64 Linux system calls; see
 * build_launcher in src/cbench.rs):
 * - no dynamic loader, so LD_PRELOAD never loads the allocator under test
 *   into the launcher and reaches the program unchanged, through the
 *   environment it inherits;
 * - no libc start-up: glibc's probes the CPU with dozens of cpuid
 *   instructions, each a trap to the hypervisor in a virtual machine, which
 *   made a static glibc launcher add about 0.7 ms to every timed run; this
 *   one adds well under 0.1 ms. */
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define EINTR 4

static long sys(long n, long a, long b, long c, long d) {
    register long r10 __asm__("r10") = d;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}

static __attribute__((noreturn)) void quit(int code) {
    for (;;) sys(SYS_exit_group, code, 0, 0, 0);
}

static void say(const char *s) {
    long n = 0;
    while (s[n]) n++;
    sys(SYS_write, 2, (long)s, n, 0);
}

/* execve(name), or execve of each PATH entry joined with name, as execvp
 * does; returns only if none starts. */
static void run(char **argv, char **envp) {
    const char *name = argv[0];
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *s = name; *s; s++)
        if (*s == '/') {
            sys(SYS_execve, (long)name, (long)argv, (long)envp, 0);
            return;
        }
    for (char **e = envp; *e; e++) {
        const char *v = *e;
        if (v[0] == 'P' && v[1] == 'A' && v[2] == 'T' && v[3] == 'H' && v[4] == '=') path = v + 5;
    }
    static char full[4096];
    while (*path) {
        long n = 0;
        while (*path && *path != ':' && n < 4000) full[n++] = *path++;
        if (*path == ':') path++;
        if (n == 0) full[n++] = '.';
        full[n++] = '/';
        for (const char *s = name; *s && n < 4095; s++) full[n++] = *s;
        full[n] = 0;
        sys(SYS_execve, (long)full, (long)argv, (long)envp, 0);
    }
}

__attribute__((used, noreturn)) void launch(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    if (argc < 2) {
        say("usage: launch PROGRAM [ARG...]\n");
        quit(2);
    }
    long pid = sys(SYS_fork, 0, 0, 0, 0);
    if (pid < 0) quit(127);
    if (pid == 0) {
        long null = sys(SYS_open, (long)"/dev/null", O_WRONLY, 0, 0);
        if (null >= 0) sys(SYS_dup2, null, 2, 0, 0);
        if (null > 2) sys(SYS_close, null, 0, 0, 0);
        run(argv + 1, envp);
        quit(127);
    }
    /* Only the program writes to stdout: its reader sees end of file when
     * the program is done. */
    sys(SYS_close, 1, 0, 0, 0);
    int status = 0;
    struct rusage usage;
    long r;
    do r = sys(SYS_wait4, pid, (long)&status, 0, (long)&usage);
    while (r == -EINTR);
    if (r < 0) quit(127);
    char line[40] = "maxrss_kb=";
    char digits[24];
    long k = usage.ru_maxrss, n = 0, at = 10;
    do digits[n++] = (char)('0' + k % 10);
    while ((k /= 10) > 0);
    while (n > 0) line[at++] = digits[--n];
    line[at++] = '\n';
    line[at] = 0;
    say(line);
    if (WIFEXITED(status)) quit(WEXITSTATUS(status));
    quit(128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0));
}

/* The kernel enters here with argc, argv, NULL, envp, NULL on the stack. */
__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call launch\n"
        "    hlt\n");
