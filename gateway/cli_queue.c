/*
 * cli_queue.c - "postern queue": inspect and manage the queue of a running
 * gateway through its control socket (queue/control.c has the protocol).
 *
 *   postern queue [-c FILE | -s SOCKET] list [--json]
 *   postern queue [-c FILE | -s SOCKET] show ID [--json]
 *   postern queue [-c FILE | -s SOCKET] flush | delete ID|all |
 *                                       hold ID | release ID
 *
 * The socket comes from FILE's queue.control_socket (default config
 * /etc/postern/postern.conf), or -s names it directly. Output: the
 * gateway's answer on stdout; errors on stderr. Exit 0 on success, 1 when
 * the gateway refused or could not be reached, PST_CLI_USAGE (2) on a
 * usage error.
 * Limits: an answer is read until the gateway closes, for at most 30 s.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/util.h"
#include "gateway/cli.h"

#define CLI_DEFAULT_CONF "/etc/postern/postern.conf"

static char *
socket_from_config(const char *path)
{
    struct pst_err err = {0};
    struct pst_conf *c = pst_conf_load(path, &err);
    char *s;

    if (c == NULL) {
        for (unsigned i = 0; i < err.count && i < PST_ERR_MAX; i++)
            fprintf(stderr, "%s\n", err.msgs[i]);
        if (err.count == 0)
            fprintf(stderr, "%s: cannot be loaded\n", path);
        pst_err_free(&err);
        return NULL;
    }
    if (c->queue.control_socket && c->queue.control_socket[0])
        s = pst_xstrdup(c->queue.control_socket);
    else
        s = pst_xasprintf("%s/control.sock", c->queue.directory);
    pst_conf_unref(c);
    return s;
}

/* Send one request line, collect the whole answer (bounded). */
static int
request(const char *sock, const char *line, char **out, size_t *outlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = 30};
    size_t cap = 65536, n = 0;
    char *b;
    int fd;

    if (strlen(sock) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "postern queue: socket path too long: %s\n", sock);
        return -1;
    }
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "postern queue: cannot connect to %s: %s (is "
                "postern running?)\n", sock, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len) {
        fprintf(stderr, "postern queue: write to %s: %s\n", sock,
                strerror(errno));
        close(fd);
        return -1;
    }
    b = pst_xmalloc(cap);
    for (;;) {
        if (n + 1 == cap) {
            if (cap >= (size_t)256 << 20) {
                fprintf(stderr, "postern queue: answer too large\n");
                break;
            }
            cap *= 2;
            b = pst_xrealloc(b, cap);
        }
        ssize_t k = read(fd, b + n, cap - 1 - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            fprintf(stderr, "postern queue: read from %s: %s\n", sock,
                    strerror(errno));
            free(b);
            close(fd);
            return -1;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    b[n] = '\0';
    *out = b;
    *outlen = n;
    return 0;
}

/* pst_cli_queue - argv: "queue" [-c FILE | -s SOCKET] CMD [ARGS]. */
int
pst_cli_queue(int argc, char **argv)
{
    const char *conf = NULL, *sock = NULL;
    char *sockbuf = NULL, *ans = NULL, line[128];
    size_t anslen;
    int i = 1, rc = 1;
    bool json = false;

    while (i + 1 < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "-c") == 0)
            conf = argv[i + 1];
        else if (strcmp(argv[i], "-s") == 0)
            sock = argv[i + 1];
        else
            return PST_CLI_USAGE;
        i += 2;
    }
    if (i >= argc)
        return PST_CLI_USAGE;
    const char *cmd = argv[i++];
    if (i < argc && strcmp(argv[argc - 1], "--json") == 0) {
        json = true;
        argc--;
    }
    int nargs = argc - i;
    const char *id = nargs == 1 ? argv[i] : NULL;
    if (json && strcmp(cmd, "list") != 0 && strcmp(cmd, "show") != 0)
        return PST_CLI_USAGE;
    if (strcmp(cmd, "list") == 0 && nargs == 0)
        snprintf(line, sizeof(line), "LIST%s\n", json ? " JSON" : "");
    else if (strcmp(cmd, "show") == 0 && id && strlen(id) < 64)
        snprintf(line, sizeof(line), "SHOW %s%s\n", id, json ? " JSON" : "");
    else if (strcmp(cmd, "flush") == 0 && nargs == 0)
        snprintf(line, sizeof(line), "FLUSH\n");
    else if (strcmp(cmd, "delete") == 0 && id && strlen(id) < 64)
        snprintf(line, sizeof(line), "DELETE %s\n",
                 strcmp(id, "all") == 0 ? "ALL" : id);
    else if (strcmp(cmd, "hold") == 0 && id && strlen(id) < 64 &&
             strcmp(id, "all") != 0)
        snprintf(line, sizeof(line), "HOLD %s\n", id);
    else if (strcmp(cmd, "release") == 0 && id && strlen(id) < 64 &&
             strcmp(id, "all") != 0)
        snprintf(line, sizeof(line), "RELEASE %s\n", id);
    else
        return PST_CLI_USAGE;
    if (id && strpbrk(id, " \t\r\n") != NULL)
        return PST_CLI_USAGE;

    if (sock == NULL) {
        sockbuf = socket_from_config(conf ? conf : CLI_DEFAULT_CONF);
        if (sockbuf == NULL)
            return 1;
        sock = sockbuf;
    }
    if (request(sock, line, &ans, &anslen) != 0)
        goto out;
    char *nl = memchr(ans, '\n', anslen);
    if (nl == NULL) {
        fprintf(stderr, "postern queue: no answer from %s\n", sock);
        goto out;
    }
    *nl = '\0';
    if (strncmp(ans, "OK", 2) == 0 && (ans[2] == '\0' || ans[2] == ' ')) {
        if (ans[2] == ' ')
            printf("%s\n", ans + 3);
        fwrite(nl + 1, 1, anslen - (size_t)(nl + 1 - ans), stdout);
        rc = fflush(stdout) == 0 ? 0 : 1;
    } else if (strncmp(ans, "ERR ", 4) == 0) {
        fprintf(stderr, "postern queue: %s\n", ans + 4);
    } else {
        fprintf(stderr, "postern queue: unexpected answer from %s\n", sock);
    }
out:
    free(ans);
    free(sockbuf);
    return rc;
}
