/*
 * notify.c - sd_notify(3) messages for the service manager (notify.h).
 * RELOADING=1 carries MONOTONIC_USEC, which Type=notify-reload units need
 * (systemd 253) and older managers ignore. A failure to notify is logged
 * at debug level only: the manager, not postern, acts on a silence.
 */
#include "gateway/notify.h"

#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "core/log.h"

static void
notify(const char *state, const char *status)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s%s%s", state, status ? "\nSTATUS=" : "",
             status ? status : "");
    int rc = sd_notify(0, msg);
    if (rc < 0)
        pst_debug("event=notify_error state=%s error=\"%s\"", state,
                  strerror(-rc));
}

void
pst_notify_ready(const char *status)
{
    notify("READY=1", status);
}

void
pst_notify_reloading(void)
{
    struct timespec ts;
    char state[96];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL +
                 (unsigned long long)ts.tv_nsec / 1000ULL);
    notify(state, "reloading the configuration");
}

void
pst_notify_stopping(const char *status)
{
    notify("STOPPING=1", status);
}
