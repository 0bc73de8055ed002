// Keeps every lst_fast module within glibc 2.28 (manylinux_2_28, torch's own tag) when it is built on a
// newer system. The modules link libstdc++ statically (setup.py), so the libstdc++ and the CUDA runtime
// code inside them was compiled against this machine's glibc and asks for a few symbols of newer glibc
// versions. The linker redirects those references here (-Wl,--wrap=NAME, listed in setup.py), and each
// wrapper calls the same function under the version glibc 2.28 already had. Only C types cross here.
#include <cstddef>
#include <cstdint>
#include <sys/stat.h>
#include <unistd.h>  // getentropy (glibc 2.25)

// The versions glibc gave these symbols before 2.28, on x86-64.
__asm__(".symver lst_fast_old_exp, exp@GLIBC_2.2.5");
__asm__(".symver lst_fast_old_log, log@GLIBC_2.2.5");
__asm__(".symver lst_fast_old_pow, pow@GLIBC_2.2.5");
__asm__(".symver lst_fast_old_dlsym, dlsym@GLIBC_2.2.5");
__asm__(".symver lst_fast_old_dlopen, dlopen@GLIBC_2.2.5");
__asm__(".symver lst_fast_old_dlclose, dlclose@GLIBC_2.2.5");
__asm__(".symver lst_fast_old_dlerror, dlerror@GLIBC_2.2.5");
__asm__(".symver lst_fast_old_pthread_once, pthread_once@GLIBC_2.2.5");
__asm__(".symver lst_fast_old_fxstat64, __fxstat64@GLIBC_2.2.5");

extern "C" {
double lst_fast_old_exp(double);
double lst_fast_old_log(double);
double lst_fast_old_pow(double, double);
void* lst_fast_old_dlsym(void*, const char*);
void* lst_fast_old_dlopen(const char*, int);
int lst_fast_old_dlclose(void*);
char* lst_fast_old_dlerror(void);
int lst_fast_old_pthread_once(void*, void (*)(void));
int lst_fast_old_fxstat64(int, int, struct stat64*);

__attribute__((visibility("hidden"))) double __wrap_exp(double x) { return lst_fast_old_exp(x); }
__attribute__((visibility("hidden"))) double __wrap_log(double x) { return lst_fast_old_log(x); }
__attribute__((visibility("hidden"))) double __wrap_pow(double x, double y) { return lst_fast_old_pow(x, y); }
__attribute__((visibility("hidden"))) void* __wrap_dlsym(void* handle, const char* name) {
  return lst_fast_old_dlsym(handle, name);
}
__attribute__((visibility("hidden"))) void* __wrap_dlopen(const char* file, int mode) {
  return lst_fast_old_dlopen(file, mode);
}
__attribute__((visibility("hidden"))) int __wrap_dlclose(void* handle) { return lst_fast_old_dlclose(handle); }
__attribute__((visibility("hidden"))) char* __wrap_dlerror(void) { return lst_fast_old_dlerror(); }
__attribute__((visibility("hidden"))) int __wrap_pthread_once(void* once, void (*init)(void)) {
  return lst_fast_old_pthread_once(once, init);
}
// fstat64 became a function of its own in glibc 2.33; before, it was __fxstat64 with a layout version.
__attribute__((visibility("hidden"))) int __wrap_fstat64(int fd, struct stat64* buf) {
  return lst_fast_old_fxstat64(1 /* _STAT_VER_LINUX */, fd, buf);
}
__attribute__((visibility("hidden"))) int __wrap_fstat(int fd, struct stat64* buf) {
  return lst_fast_old_fxstat64(1 /* _STAT_VER_LINUX */, fd, buf);
}

// glibc 2.36 added arc4random, which libstdc++'s std::random_device uses; 2.28 had getentropy.
__attribute__((visibility("hidden"))) uint32_t __wrap_arc4random(void) {
  uint32_t value = 0;
  if (getentropy(&value, sizeof value) != 0) __builtin_trap();  // never hand out a predictable value
  return value;
}

// glibc 2.32 added this flag, which libstdc++ reads to skip atomic reference counts in a program with one
// thread. Our own copy says "maybe several threads" (0), so the static libstdc++ always takes the atomic,
// always-correct path; the version script keeps the symbol local to the module.
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
}
