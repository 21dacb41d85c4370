/*
 * cli_run.c - `postern -c FILE`: turn core dumps off (the config and the
 * files it names hold secrets), load the configuration, set up logging,
 * run the gateway in the foreground.
 */
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "core/log.h"
#include "gateway/cli.h"
#include "gateway/privs.h"
#include "gateway/server.h"

int
pst_cli_run(const char *config_path)
{
    struct pst_err err = {0};
    int rc = pst_privs_nodump();
    if (rc < 0) {
        fprintf(stderr, "postern: cannot turn core dumps off: %s\n",
                strerror(-rc));
        return 1;
    }
    struct pst_conf *conf = pst_conf_load(config_path, &err);
    if (conf == NULL) {
        for (unsigned i = 0; i < err.count && i < PST_ERR_MAX; i++)
            fprintf(stderr, "postern: %s\n", err.msgs[i]);
        pst_err_free(&err);
        return 1;
    }
    pst_log_open("postern", conf->log.syslog, conf->log.facility,
                 (enum pst_log_level)conf->log.level);
    pst_log_set_format((enum pst_log_format)conf->log.format);
    rc = pst_server_run(conf);
    pst_conf_unref(conf);
    return rc;
}
