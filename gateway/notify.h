/*
 * notify.h - tell a service manager where postern is (sd_notify(3) from
 * libsystemd): READY=1 once it serves, RELOADING=1 then READY=1 around a
 * SIGHUP reload, STOPPING=1 when a drain begins, with a STATUS= line each
 * time. Without $NOTIFY_SOCKET (not started by systemd with Type=notify)
 * every call does nothing. contrib/postern.service is the unit.
 */
#ifndef PST_GATEWAY_NOTIFY_H
#define PST_GATEWAY_NOTIFY_H

/* pst_notify_ready - serving (at start, and after a reload). */
void pst_notify_ready(const char *status);
/* pst_notify_reloading - a reload has begun. */
void pst_notify_reloading(void);
/* pst_notify_stopping - a drain has begun. */
void pst_notify_stopping(const char *status);

#endif
