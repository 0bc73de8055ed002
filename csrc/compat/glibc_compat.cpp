// Keeps every lst_fast module within glibc 2.28 (manylinux_2_28, torch's own tag) when it is built on a
// newer system. The modules link libstdc++ statically, and the CUDA modules the static CUDA runtime, so
// code compiled against this machine's glibc ends up inside them and asks for symbols under versions
// newer than 2.28: glibc 2.34 moved the pthread, semaphore, shm and dl functions into libc under a new
// version, 2.29 gave exp/log/pow new versions. The linker sends every reference to such a function here
// (-Wl,--wrap=NAME; setup.py reads the names from the LST_FAST_OLD lines below), and each __wrap_NAME
// jumps to NAME under the version it had before 2.28, which newer glibc still exports. A plain jump passes
// the arguments on untouched, whatever the signature. Only C types cross the stable ABI, so no C++ type
// of the static libstdc++ ever meets torch's.
#include <cstdint>
#include <sys/stat.h>
#include <unistd.h>  // getentropy (glibc 2.25)

#define LST_FAST_OLD(name, version)                                             \
  __asm__(".symver lst_fast_old_" #name ", " #name "@" #version "\n"           \
          ".pushsection .text\n"                                                \
          ".globl __wrap_" #name "\n"                                           \
          ".hidden __wrap_" #name "\n"                                          \
          ".type __wrap_" #name ", @function\n"                                 \
          "__wrap_" #name ":\n"                                                 \
          "  jmp lst_fast_old_" #name "@PLT\n"                                  \
          ".size __wrap_" #name ", .-__wrap_" #name "\n"                        \
          ".popsection\n");

// x86-64 versions, read from glibc's own symbol tables.
LST_FAST_OLD(exp, GLIBC_2.2.5)
LST_FAST_OLD(log, GLIBC_2.2.5)
LST_FAST_OLD(pow, GLIBC_2.2.5)
LST_FAST_OLD(dlopen, GLIBC_2.2.5)
LST_FAST_OLD(dlsym, GLIBC_2.2.5)
LST_FAST_OLD(dlclose, GLIBC_2.2.5)
LST_FAST_OLD(dlerror, GLIBC_2.2.5)
LST_FAST_OLD(pthread_once, GLIBC_2.2.5)
LST_FAST_OLD(dlmopen, GLIBC_2.3.4)
LST_FAST_OLD(dlvsym, GLIBC_2.2.5)
LST_FAST_OLD(pthread_condattr_setpshared, GLIBC_2.2.5)
LST_FAST_OLD(pthread_create, GLIBC_2.2.5)
LST_FAST_OLD(pthread_detach, GLIBC_2.2.5)
LST_FAST_OLD(pthread_getspecific, GLIBC_2.2.5)
LST_FAST_OLD(pthread_join, GLIBC_2.2.5)
LST_FAST_OLD(pthread_key_create, GLIBC_2.2.5)
LST_FAST_OLD(pthread_key_delete, GLIBC_2.2.5)
LST_FAST_OLD(pthread_kill, GLIBC_2.2.5)
LST_FAST_OLD(pthread_mutex_trylock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_mutexattr_destroy, GLIBC_2.2.5)
LST_FAST_OLD(pthread_mutexattr_init, GLIBC_2.2.5)
LST_FAST_OLD(pthread_mutexattr_setpshared, GLIBC_2.2.5)
LST_FAST_OLD(pthread_mutexattr_settype, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlock_destroy, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlock_init, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlock_rdlock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlock_timedrdlock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlock_timedwrlock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlock_tryrdlock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlock_trywrlock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlock_unlock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlock_wrlock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlockattr_destroy, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlockattr_init, GLIBC_2.2.5)
LST_FAST_OLD(pthread_rwlockattr_setpshared, GLIBC_2.2.5)
LST_FAST_OLD(pthread_setspecific, GLIBC_2.2.5)
LST_FAST_OLD(pthread_spin_destroy, GLIBC_2.2.5)
LST_FAST_OLD(pthread_spin_init, GLIBC_2.2.5)
LST_FAST_OLD(pthread_spin_lock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_spin_trylock, GLIBC_2.2.5)
LST_FAST_OLD(pthread_spin_unlock, GLIBC_2.2.5)
LST_FAST_OLD(sem_destroy, GLIBC_2.2.5)
LST_FAST_OLD(sem_init, GLIBC_2.2.5)
LST_FAST_OLD(sem_post, GLIBC_2.2.5)
LST_FAST_OLD(sem_timedwait, GLIBC_2.2.5)
LST_FAST_OLD(sem_trywait, GLIBC_2.2.5)
LST_FAST_OLD(sem_wait, GLIBC_2.2.5)
LST_FAST_OLD(shm_open, GLIBC_2.2.5)
LST_FAST_OLD(shm_unlink, GLIBC_2.2.5)

extern "C" {
// fstat64 became a function of its own in glibc 2.33; before, it was __fxstat64 with a layout version.
__asm__(".symver lst_fast_old_fxstat64, __fxstat64@GLIBC_2.2.5");
int lst_fast_old_fxstat64(int, int, struct stat64*);
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
