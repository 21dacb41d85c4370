/*
 * sync_gate.c - an LD_PRELOAD library for e2e tests: while the file that
 * $POSTERN_SYNC_GATE names exists, fsync and fdatasync called from any
 * thread but the process's first wait for it to go (at most 60 s), so a
 * test holds a spool commit in flight for as long as it needs, while the
 * event loop runs on. Built by tests/CMakeLists.txt (POSTERN_SYNC_GATE_LIB);
 * used by test_smtp_commit.py.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void
wait_gate(void)
{
    const char *gate = getenv("POSTERN_SYNC_GATE");
    if (gate == NULL || syscall(SYS_gettid) == getpid())
        return;
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 60000 && access(gate, F_OK) == 0; i++)
        nanosleep(&ms, NULL);
}

int
fsync(int fd)
{
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    wait_gate();
    return real(fd);
}

int
fdatasync(int fd)
{
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    wait_gate();
    return real(fd);
}
