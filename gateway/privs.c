/*
 * privs.c - the privilege drop (privs.h).
 *
 * Order (server.c): load policy, password file and TLS keys, bind the
 * listeners, open the spool (recovery, and the delivery client's key),
 * all as root; then pst_privs_drop gives the spool tree (and the maildir
 * routes) to the user and drops. Every file the running gateway
 * creates afterwards belongs to the unprivileged user. setgid and setuid
 * in glibc apply to every thread of the process (the spool's and the auth
 * workers already run), so no thread keeps root.
 *
 * Core dumps: off for the whole run (pst_privs_nodump, from cli_run.c
 * before the config is read), and again after the drop, which resets
 * the flag.
 *
 * Supplementary groups: the user's group, plus queue.control_group when
 * set (the spool hands its directory and control socket to that group).
 *
 * The tree walk changes owners only (groups the spool chose stay), and
 * only of entries that are not the user's yet: a spool opened or copied in
 * as root, or written by an older run as root.
 */
#include "gateway/privs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

int
pst_privs_nodump(void)
{
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : -errno;
}

int
pst_privs_plan(struct pst_privs *pv, const struct pst_conf *c,
               struct pst_err *err)
{
    memset(pv, 0, sizeof(*pv));
    if (geteuid() != 0)
        return 0;
    if (c->user == NULL) {
        pst_err_add(err, c->path, 0,
                    "started as root: set \"user\" (and \"group\") for "
                    "postern to run as; it will not go on as root");
        return -EPERM;
    }
    struct passwd *pw = getpwnam(c->user);
    if (pw == NULL) {
        pst_err_add(err, c->path, 0, "user \"%s\" does not exist", c->user);
        return -ENOENT;
    }
    pv->uid = pw->pw_uid;
    pv->gid = pw->pw_gid;
    if (c->group) {
        struct group *gr = getgrnam(c->group);
        if (gr == NULL) {
            pst_err_add(err, c->path, 0, "group \"%s\" does not exist",
                        c->group);
            return -ENOENT;
        }
        pv->gid = gr->gr_gid;
    }
    pv->groups[0] = pv->gid;
    pv->ngroups = 1;
    if (c->queue.control_group && c->queue.control_group[0]) {
        /* the spool gives its directory and control socket to this
         * group: it must be one of ours */
        struct group *cg = getgrnam(c->queue.control_group);
        if (cg == NULL) {
            pst_err_add(err, c->path, 0, "group \"%s\" does not exist",
                        c->queue.control_group);
            return -ENOENT;
        }
        if (cg->gr_gid == 0) {
            pst_err_add(err, c->path, 0,
                        "queue.control_group must not be root (gid 0)");
            return -EPERM;
        }
        if (cg->gr_gid != pv->gid)
            pv->groups[pv->ngroups++] = cg->gr_gid;
    }
    if (pv->uid == 0 || pv->gid == 0) {
        pst_err_add(err, c->path, 0,
                    "user and group must not be root (uid/gid 0)");
        return -EPERM;
    }
    snprintf(pv->user, sizeof(pv->user), "%s", c->user);
    pv->drop = true;
    return 0;
}

static uid_t walk_uid;
static int walk_err;

/* The owner only: groups the spool chose (queue.control_group) stay. */
static int
chown_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    /* an entry that vanished during the walk (a delivery renamed or
     * removed it) needs no new owner */
    if (flag == FTW_NS || st->st_uid == walk_uid)
        return 0;
    if (lchown(path, walk_uid, (gid_t)-1) != 0 && errno != ENOENT &&
        walk_err == 0)
        walk_err = errno;
    return 0;
}

/* give_dir - dir exists (0700 if created) and all in it is the user's. */
static int
give_dir(const struct pst_privs *pv, const char *dir, struct pst_err *err)
{
    char *p = pst_xstrdup(dir);
    int rc = 0;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            rc = -errno;
        *s = '/';
    }
    if (rc == 0 && mkdir(p, 0700) != 0 && errno != EEXIST)
        rc = -errno;
    if (rc < 0) {
        pst_err_add(err, NULL, 0, "cannot create %s: %s", dir,
                    strerror(-rc));
        free(p);
        return rc;
    }
    walk_uid = pv->uid;
    walk_err = 0;
    if (nftw(p, chown_one, 32, FTW_PHYS | FTW_MOUNT) != 0 || walk_err) {
        pst_err_add(err, NULL, 0, "cannot give %s to %s: %s", dir, pv->user,
                    strerror(walk_err ? walk_err : errno));
        free(p);
        return -EPERM;
    }
    free(p);
    return 0;
}

int
pst_privs_drop(const struct pst_privs *pv, const struct pst_conf *c,
               struct pst_err *err)
{
    if (!pv->drop)
        return 0;
    if (c->queue.directory && give_dir(pv, c->queue.directory, err) < 0)
        return -EPERM;
    const char *r = c->delivery.default_route;
    if (r && strncmp(r, "maildir:", 8) == 0 && give_dir(pv, r + 8, err) < 0)
        return -EPERM;
    for (size_t i = 0; i < c->delivery.nroutes; i++) {
        r = c->delivery.routes[i].route;
        if (r && strncmp(r, "maildir:", 8) == 0 &&
            give_dir(pv, r + 8, err) < 0)
            return -EPERM;
    }
    if (setgroups((size_t)pv->ngroups, pv->groups) != 0 ||
        setgid(pv->gid) != 0 ||
        setuid(pv->uid) != 0) {
        pst_err_add(err, NULL, 0, "cannot drop to %s (uid %u gid %u): %s",
                    pv->user, (unsigned)pv->uid, (unsigned)pv->gid,
                    strerror(errno));
        return -EPERM;
    }
    /* refuse to go on if root can be regained */
    if (setuid(0) == 0 || seteuid(0) == 0 || getuid() == 0 ||
        geteuid() == 0 || getgid() == 0 || getegid() == 0) {
        pst_err_add(err, NULL, 0, "still root after dropping privileges");
        return -EPERM;
    }
    if (pst_privs_nodump() < 0) {
        pst_err_add(err, NULL, 0, "cannot turn core dumps off: %s",
                    strerror(errno));
        return -EPERM;
    }
    pst_info("event=privileges user=%s uid=%u gid=%u", pv->user,
             (unsigned)pv->uid, (unsigned)pv->gid);
    return 0;
}
