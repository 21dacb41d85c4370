/*
 * control.h - the queue control socket (control.c), opened by the queue's
 * front after the manager it serves. Internal to queue/.
 */
#ifndef PST_QUEUE_CONTROL_H
#define PST_QUEUE_CONTROL_H

#include <uv.h>

#include "conf/conf.h"

struct pst_control;
struct pst_qmgr;

/*
 * pst__control_start - listen on the unix socket at path for `postern
 * queue` requests about qm's messages; members of group (NULL: none) may
 * use it besides root and postern's own user. 0 or -errno with err
 * filled.
 */
int pst__control_start(struct pst_control **ctl, uv_loop_t *loop,
                       struct pst_qmgr *qm, const char *path,
                       const char *group, struct pst_err *err);
/* pst__control_close - stop listening, close every client connection;
 * memory goes when the loop next runs. */
void pst__control_close(struct pst_control *ctl);

#endif
