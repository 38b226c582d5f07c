/* fortalloc.h: what libfortalloc exports beyond the C standard's and
 * POSIX's allocation functions and the C++ operators.
 *
 * The library also exports, and declares nowhere here:
 *   - malloc, free, calloc, realloc, posix_memalign, aligned_alloc,
 *     memalign, valloc, pvalloc, malloc_usable_size: see <stdlib.h> and
 *     <malloc.h>;
 *   - mallinfo and mallinfo2: see <malloc.h> (they return glibc's structs,
 *     which a second definition here would clash with);
 *   - cfree and glibc's internal aliases (__libc_malloc, __libc_free, ...,
 *     __posix_memalign): there for programs and libraries that call glibc
 *     by those names, not for new code;
 *   - operator new and delete in all their C++17 forms.
 *
 * Everything declared here may be called from any thread, before main and
 * in atexit handlers too. Like free, the functions that take a pointer require one
 * that this library handed out (or NULL): a pointer it does not own, or
 * one into the middle of a block, is reported on stderr and the process
 * aborts. The hardened build (`--features secure`) also aborts on a double
 * free and on a size or alignment the block was not allocated with.
 *
 * Use with either linking (-lfortalloc) or LD_PRELOAD: a program that must
 * also run without fortalloc can declare these weak and test for NULL.
 *
 * The declarations of functions that the C library may also declare
 * (reallocarray, malloc_trim, free_sized, free_aligned_sized) match
 * glibc's, so including this header before or after <stdlib.h> and
 * <malloc.h> is fine in C and in C++. */

#ifndef FORTALLOC_H
#define FORTALLOC_H

#include <stddef.h>

/* glibc declares its functions `noexcept` in C++; a redeclaration must say
 * the same. None of these functions throws. */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define FORTALLOC_NOTHROW noexcept(true)
#elif defined(__cplusplus)
#define FORTALLOC_NOTHROW throw()
#else
#define FORTALLOC_NOTHROW
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Writes fortalloc's statistics table to stderr: a heading line naming
 * this process (pid and program name), then one line per counter
 * (allocations, frees, live blocks, bytes in use, pages, huge objects,
 * segments, reserved bytes, purges, ...), every line starting with
 * "fortalloc: ". The same table that FORTALLOC_SHOW_STATS=1 prints at exit.
 *
 * Thread-safety: any thread; counters other threads are changing are read
 * one by one, so the figures are approximate while they run.
 * Errors: none reported; a failed write(2) (stderr closed) is dropped.
 * It allocates nothing. */
void fortalloc_print_stats(void) FORTALLOC_NOTHROW;

/* Returns memory fortalloc holds but does not use to the OS: the calling
 * thread's empty pages and cached blocks, and the segments of threads that
 * have exited (fortalloc's "collect"). `pad` is ignored. Returns 1, as
 * glibc does when memory may have been released.
 *
 * Thread-safety: any thread; other threads' caches are left to them.
 * Errors: none. */
int malloc_trim(size_t pad) FORTALLOC_NOTHROW;

/* realloc(p, nmemb * size), except that when the product overflows it
 * returns NULL with errno = ENOMEM and leaves `p` untouched. Otherwise as
 * realloc: NULL with errno = ENOMEM when memory runs out (`p` untouched).
 *
 * Thread-safety: any thread; `p` may come from any thread. */
void *reallocarray(void *p, size_t nmemb, size_t size) FORTALLOC_NOTHROW;

/* C23 free_sized: free(p) for a block allocated with malloc, calloc or
 * realloc with `size` bytes. NULL is a no-op.
 *
 * Thread-safety: any thread; `p` may come from any thread.
 * Errors: as free; the hardened build aborts when `size` does not belong
 * to the block (the plain one does not look at it). */
void free_sized(void *p, size_t size) FORTALLOC_NOTHROW;

/* C23 free_aligned_sized: free(p) for a block from aligned_alloc(align,
 * size). NULL is a no-op.
 *
 * Thread-safety: any thread; `p` may come from any thread.
 * Errors: as free_sized. */
void free_aligned_sized(void *p, size_t align, size_t size) FORTALLOC_NOTHROW;

#ifdef __cplusplus
}
#endif

#endif /* FORTALLOC_H */
