// A sized delete with the wrong size: the hardened library refuses it.
#include <cstdio>
#include <new>
int main() {
    void *p = ::operator new(100);
    std::printf("addr=%p\n", p);
    std::fflush(stdout);
    ::operator delete(p, 5000);
    std::puts("not detected");
    return 0;
}
