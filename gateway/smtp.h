/*
 * smtp.h - one SMTP session on the server's loop: accept to close.
 */
#ifndef PST_GATEWAY_SMTP_H
#define PST_GATEWAY_SMTP_H

#include "gateway/server.h"

/* pst_session_sock_options - the socket options of a session's socket
 * (no Nagle; a fixed send buffer), set on each listener: Linux gives them
 * to every socket it accepts. 0 or a libuv error. */
int pst_session_sock_options(uv_tcp_t *t);
/* pst_session_accept - accept a connection waiting on l and greet it. */
void pst_session_accept(struct pst_listener *l);
/*
 * pst_session_shutdown - the server is stopping: say 421 to a session
 * waiting for a command and close it; a session inside DATA is closed
 * without a reply (the client will retry); a commit in flight finishes.
 */
void pst_session_shutdown(struct pst_session *s);
/*
 * pst_session_drain - the server drains (SIGTERM): an idle session (no
 * transaction begun) gets 421 4.3.2 and is closed now; one inside a
 * transaction goes on, and gets the 421 once the transaction has ended.
 */
void pst_session_drain(struct pst_session *s);
/* pst_session_drain_all - pst_session_drain for every live session. */
void pst_session_drain_all(struct pst_server *srv);
/* pst_session_shutdown_all - pst_session_shutdown for every live session. */
void pst_session_shutdown_all(struct pst_server *srv);
/* pst_session_spares_free - free the input buffers sessions gave back for
 * reuse (smtp.c keeps a few per loop thread); once no session is left. */
void pst_session_spares_free(void);
/*
 * pst_session_auth_done - the outcome of an AUTH check (auth.h) for the
 * session with id sid; dropped if that session has gone. arg is the server.
 */
void pst_session_auth_done(void *arg, uint64_t sid, const char *login,
                           bool ok);

#endif
