// The C++ operators: every new/delete form, sized and aligned, nothrow.
#include <cstdint>
#include <cstdio>
#include <map>
#include <new>
#include <string>
#include <vector>

struct alignas(64) Wide { char bytes[64]; };
struct alignas(4096) Paged { char bytes[100]; };

int main() {
    int failures = 0;
    auto check = [&](bool ok, const char *what) { if (!ok) { std::fprintf(stderr, "FAIL %s\n", what); failures++; } };
    int *a = new int(7);
    check(*a == 7, "new");
    delete a;
    int *arr = new int[1000]();
    check(arr[999] == 0, "new[] zeroed by ()");
    delete[] arr;
    Wide *w = new Wide;
    check(reinterpret_cast<std::uintptr_t>(w) % 64 == 0, "aligned new 64");
    delete w;
    Paged *pg = new Paged[3];
    check(reinterpret_cast<std::uintptr_t>(pg) % 4096 == 0, "aligned new[] 4096");
    delete[] pg;
    void *nt = ::operator new(100, std::nothrow);
    check(nt != nullptr, "nothrow new");
    ::operator delete(nt, std::nothrow);
    void *huge = ::operator new(SIZE_MAX / 4, std::nothrow);
    check(huge == nullptr, "nothrow new of an impossible size gives null");
    void *sz = ::operator new(333);
    ::operator delete(sz, 333);
    void *al = ::operator new(200, std::align_val_t(256));
    check(reinterpret_cast<std::uintptr_t>(al) % 256 == 0, "operator new align_val_t");
    ::operator delete(al, 200, std::align_val_t(256));
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 20000; i++) m[std::to_string(i)].push_back(i);
    check(m.size() == 20000 && m["123"][0] == 123, "containers");
    void *z = ::operator new(0);
    check(z != nullptr, "new of 0 bytes");
    ::operator delete(z);
    if (failures) return 1;
    std::printf("c++ ok\n");
    return 0;
}
