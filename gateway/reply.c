/*
 * reply.c - the reply table (cleanup_strerror.c style: one place for every
 * code, enhanced code and text).
 */
#include "gateway/reply.h"

#include <string.h>

static const struct {
    int code;
    const char *enh;                /* "" where RFC 2034 has none */
    const char *text;
} table[RP_COUNT] = {
    [RP_GREETING] = {220, "", "%s"},
    [RP_OK] = {250, "2.0.0", "Ok"},
    [RP_MAIL_OK] = {250, "2.1.0", "Ok"},
    [RP_RCPT_OK] = {250, "2.1.5", "Ok"},
    [RP_DATA_GO] = {354, "", "End data with <CR><LF>.<CR><LF>"},
    [RP_QUEUED] = {250, "2.0.0", "Ok: queued as %s"},
    [RP_BDAT_CHUNK] = {250, "2.0.0", "Ok: %s octets received"},
    [RP_BYE] = {221, "2.0.0", "Bye"},
    [RP_VRFY] = {252, "2.5.0",
                "Cannot VRFY user, but will accept message and attempt "
                "delivery"},
    [RP_HELP] = {214, "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT "
                "VRFY HELP"},
    [RP_UNKNOWN_CMD] = {500, "5.5.2", "Error: command not recognized"},
    [RP_LINE_TOO_LONG] = {500, "5.5.2", "Error: line too long"},
    [RP_NEED_HELO] = {503, "5.5.1", "Error: send HELO/EHLO first"},
    [RP_NEED_MAIL] = {503, "5.5.1", "Error: need MAIL command"},
    [RP_NEED_RCPT] = {503, "5.5.1", "Error: need RCPT command"},
    [RP_NO_VALID_RCPT] = {554, "5.5.1", "Error: no valid recipients"},
    [RP_NESTED_MAIL] = {503, "5.5.1", "Error: nested MAIL command"},
    [RP_SYNTAX_HELO] = {501, "5.5.4", "Syntax: EHLO hostname"},
    [RP_SYNTAX_MAIL] = {501, "5.5.4", "Syntax: MAIL FROM:<address>"},
    [RP_SYNTAX_RCPT] = {501, "5.5.4", "Syntax: RCPT TO:<address>"},
    [RP_SYNTAX_BDAT] = {501, "5.5.4", "Syntax: BDAT size [LAST]"},
    [RP_SYNTAX_VRFY] = {501, "5.5.4", "Syntax: VRFY address"},
    [RP_SYNTAX_NOARG] = {501, "5.5.4", "Syntax: %s takes no argument"},
    [RP_BAD_SENDER] = {501, "5.1.7", "Bad sender address syntax"},
    [RP_BAD_RCPT] = {501, "5.1.3", "Bad recipient address syntax"},
    [RP_SENDER_TOO_LONG] = {553, "5.1.7", "Sender address rejected: %s"},
    [RP_RCPT_TOO_LONG] = {553, "5.1.3", "Recipient address rejected: %s"},
    [RP_PARAM_UNKNOWN] = {555, "5.5.4", "Unsupported option: %s"},
    [RP_PARAM_BAD] = {501, "5.5.4", "Bad parameter syntax"},
    [RP_SIZE_EXCEEDED] = {552, "5.3.4", "Message size exceeds fixed limit"},
    [RP_NEED_SMTPUTF8] = {553, "5.6.7",
                         "Must declare SMTPUTF8 to send Unicode address"},
    [RP_TOO_MANY_RCPTS] = {452, "4.5.3", "Error: too many recipients"},
    [RP_LINE_TOO_LONG_DATA] = {552, "5.3.4", "Message line too long"},
    [RP_BARE_NEWLINE] = {550, "5.5.2", "Error: bare <CR> or <LF> received"},
    [RP_TOO_MANY_HOPS] = {554, "5.4.6", "Too many hops"},
    [RP_MIME_LIMIT] = {554, "5.6.0",
                       "Error: message structure exceeds the MIME limits"},
    [RP_WRITE_ERROR] = {451, "4.3.0", "Error: queue file write error"},
    [RP_NO_SPACE] = {452, "4.3.1", "Insufficient system storage"},
    [RP_DATA_AFTER_BDAT] = {503, "5.5.1", "Error: DATA after BDAT"},
    [RP_BDAT_AFTER_DATA] = {503, "5.5.1", "Error: BDAT after DATA"},
    [RP_BDAT_NO_SIZE] = {421, "4.5.4",
                         "%s Error: BDAT size unreadable, closing connection"},
    [RP_TIMEOUT] = {421, "4.4.2", "%s Error: timeout exceeded"},
    [RP_TOO_MANY_ERRORS] = {421, "4.7.0", "%s Error: too many errors"},
    [RP_SHUTDOWN] = {421, "4.3.2", "%s Service shutting down"},
    [RP_NOT_IMPLEMENTED] = {502, "5.5.1", "Error: command not implemented"},
    [RP_TOO_MANY_CONN] = {421, "4.7.0", "%s Error: too many connections"},
    [RP_RELAY_DENIED] = {554, "5.7.1", "%s: Relay access denied"},
    [RP_UNKNOWN_USER] = {550, "5.1.1",
                        "%s: Recipient address rejected: User unknown"},
    [RP_TLS_GO] = {220, "2.0.0", "Ready to start TLS"},
    [RP_TLS_ACTIVE] = {503, "5.5.1", "Error: TLS already active"},
    [RP_AUTH_CHALLENGE] = {334, "", "%s"},
    [RP_AUTH_OK] = {235, "2.7.0", "Authentication successful"},
    [RP_AUTH_FAILED] = {535, "5.7.8", "Authentication credentials invalid"},
    [RP_AUTH_ENCRYPT] = {538, "5.7.11",
                        "Encryption required for requested authentication "
                        "mechanism"},
    [RP_AUTH_REQUIRED] = {530, "5.7.0", "Authentication required"},
    [RP_AUTH_TEMP] = {454, "4.7.0", "Temporary authentication failure"},
    [RP_AUTH_LIMIT] = {454, "4.7.0",
                      "Too many authentication failures, try again later"},
    [RP_AUTH_CANCELLED] = {501, "5.7.0", "Authentication cancelled"},
    [RP_AUTH_BAD_B64] = {501, "5.5.2", "Cannot decode response"},
    [RP_AUTH_LINE_TOO_LONG] = {500, "5.5.6",
                              "Authentication exchange line is too long"},
    [RP_AUTH_NOT_ENABLED] = {503, "5.5.1", "Error: authentication not enabled"},
    [RP_AUTH_ALREADY] = {503, "5.5.1", "Error: already authenticated"},
    [RP_AUTH_IN_MAIL] = {503, "5.5.1", "Error: MAIL transaction in progress"},
    [RP_AUTH_MECH] = {504, "5.5.4", "Unrecognized authentication type"},
    [RP_SENDER_NOT_OWNED] = {553, "5.7.1",
                            "Sender address rejected: not owned by user %s"},
};

/* put - n octets of s at line[*o], as many as fit before end. */
static void
put(char *line, size_t *o, size_t end, const char *s, size_t n)
{
    if (n > end - *o)
        n = end - *o;
    memcpy(line + *o, s, n);
    *o += n;
}

void
pst_reply_add(struct pst_tbuf *out, enum pst_reply r, const char *arg)
{
    /* "CODE [ENH ]TEXT\r\n", the table's text with its one %s (if any)
     * replaced by arg, at most 511 octets of it; composed without printf
     * (a reply is sent after every command) */
    char line[600];
    size_t o = 0;
    int code = table[r].code;
    line[o++] = (char)('0' + code / 100);
    line[o++] = (char)('0' + code / 10 % 10);
    line[o++] = (char)('0' + code % 10);
    line[o++] = ' ';
    size_t el = strlen(table[r].enh);
    if (el > 0) {
        memcpy(line + o, table[r].enh, el);
        o += el;
        line[o++] = ' ';
    }
    size_t end = o + 511;
    const char *t = table[r].text, *pct = strstr(t, "%s");
    if (pct != NULL) {
        const char *a = arg ? arg : "";
        put(line, &o, end, t, (size_t)(pct - t));
        put(line, &o, end, a, strlen(a));
        t = pct + 2;
    }
    put(line, &o, end, t, strlen(t));
    line[o++] = '\r';
    line[o++] = '\n';
    pst_tbuf_add(out, line, o);
}

int
pst_reply_code(enum pst_reply r)
{
    return table[r].code;
}
