/*
 * privs.h - run as the configured user: started as root, postern binds
 * its listeners and reads its keys and password file, then gives the
 * spool (and the maildir routes) to the configured user and group and
 * drops to them for good. It refuses to go on as root.
 */
#ifndef PST_GATEWAY_PRIVS_H
#define PST_GATEWAY_PRIVS_H

#include <stdbool.h>
#include <sys/types.h>

#include "conf/conf.h"

struct pst_privs {
    bool drop;                      /* started as root: drop to uid/gid */
    uid_t uid;
    gid_t gid;
    gid_t groups[2];                /* gid, and queue.control_group */
    int ngroups;
    char user[64];
};

/*
 * pst_privs_nodump - this process dumps no core, and its user can neither
 * ptrace it nor read its memory through /proc (PR_SET_DUMPABLE 0): it
 * holds passwords (the AUTH file, route credentials) and private keys.
 * Done before they are loaded, and again by pst_privs_drop, since a change
 * of user resets the flag to the system's fs.suid_dumpable. Root (with
 * CAP_SYS_PTRACE) can still trace it. Returns 0 or -errno.
 */
int pst_privs_nodump(void);

/*
 * pst_privs_plan - decide what to drop to. Not root: nothing to do. Root:
 * conf user (and group, else the user's primary group) must exist and not
 * be root, or this fails with err filled.
 */
int pst_privs_plan(struct pst_privs *pv, const struct pst_conf *c,
                   struct pst_err *err);
/*
 * pst_privs_drop - hand the spool directory and every maildir route
 * to the user (created 0700 when missing; entries owned by someone else
 * get the user as owner), then setgroups/setgid/setuid, check that root
 * cannot be regained, and turn core dumps off again (pst_privs_nodump).
 * A no-op unless pv->drop.
 */
int pst_privs_drop(const struct pst_privs *pv, const struct pst_conf *c,
                   struct pst_err *err);

#endif
