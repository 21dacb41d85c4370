/*
 * smtp_gate.c - the filter gate of the SMTP session: a filter phase is run
 * (filters/chain.h), its verdict applied to the session, and the step that
 * waits for it (the greeting, a command's proceed, the commit) carried out
 * once: at once when the chain answers at once, or when a pending verdict
 * arrives. Nothing is run again to learn a verdict.
 *
 * Verdicts: REJECT and TEMPFAIL answer with the filter's reply (checked by
 * the chain: class, no CR/LF) and undo what the refused step began: no
 * greeting after CONNECT (the session ends), no transaction after MAIL or
 * at the end of data. DISCARD (end of data) answers 250 and drops the
 * message. QUARANTINE holds it. The headers phase runs while the text
 * still streams: its verdict is the chain's to keep and apply at the end,
 * so here it only pauses the text while pending.
 *
 * Ids, not pointers: the chain finds the session by id and drops an answer
 * for one that has gone (pst_fsess_free at close).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "gateway/smtp_filters.h"
#include "gateway/smtp_int.h"
#include "gateway/stats.h"

/* set_str - *dst becomes a copy of src (or NULL). */
static void
set_str(char **dst, const char *src)
{
    if (*dst == src || (*dst && src && strcmp(*dst, src) == 0))
        return;
    free(*dst);
    *dst = src ? pst_xstrdup(src) : NULL;
}

/* facts_for - what the filters read of the client for phase ph, outside a
 * transaction (in one, its envelope has them): at HELO the name being
 * given, the AUTH login once there is one. */
static void
facts_for(struct pst_session *s, enum pst_fphase ph, const char *arg)
{
    if (s->tx != NULL)
        return;
    s->facts.trusted = s->trusted;
    set_str(&s->facts.helo, ph == PST_FP_HELO ? arg : s->helo);
    set_str(&s->facts.auth_login, s->auth_login);
}

/* apply - the verdict in s->fres of phase ph: refusals answered here,
 * otherwise next goes on. */
static void
apply(struct pst_session *s, enum pst_fphase ph, pst__next_fn next)
{
    const struct pst_fres *r = &s->fres;
    const char *who = r->filter ? r->filter : "-";
    uint64_t bytes = s->tx ? s->tx->dot.out_bytes : 0;

    if (ph == PST_FP_HEADERS)
        return;                     /* the chain keeps it for the end */
    switch (r->verdict) {
    case PST_REJECT:
    case PST_TEMPFAIL:
        SLOG(PST_LOG_INFO, s, "event=reject phase=%s filter=%s code=%d",
             pst_sf_phase_name(ph), who, r->code);
        pst_sf_reply(&s->out, r);
        s->errors++;
        if (ph == PST_FP_CONNECT)
            s->quitting = true;
        if (ph == PST_FP_EOM)
            pst_stats_message(r->verdict == PST_REJECT ? PST_MSG_REFUSED
                                                       : PST_MSG_TEMPFAILED,
                              "filter", bytes);
        if (ph == PST_FP_MAIL || ph == PST_FP_EOM) {
            pst__tx_free(s);
            if (ph == PST_FP_EOM)
                pst__smtp_state(s, ST_CMD);
        }
        return;
    case PST_DISCARD:
        SLOG(PST_LOG_INFO, s, "event=discarded filter=%s rcpts=%zu", who,
             s->tx ? s->tx->env.nrcpts : 0);
        pst_stats_message(PST_MSG_ACCEPTED, "discarded", bytes);
        pst__smtp_reply(s, RP_QUEUED, s->tx ? s->tx->qid : "");
        pst__tx_free(s);
        pst__smtp_state(s, ST_CMD);
        return;
    case PST_QUARANTINE: {
        char why[120];
        snprintf(why, sizeof(why), "quarantined by filter %s", who);
        pst_spool_msg_set_hold(s->tx->msg, why);
        s->tx->held = true;
        SLOG(PST_LOG_INFO, s, "event=quarantine filter=%s", who);
        break;
    }
    default:
        break;
    }
    if (next)
        next(s);
}

void
pst__gate(struct pst_session *s, enum pst_fphase ph, const char *arg,
          pst__next_fn next)
{
    memset(&s->fres, 0, sizeof(s->fres));
    s->fres.verdict = PST_CONTINUE;
    if (s->fs == NULL) {
        if (next)
            next(s);
        return;
    }
    facts_for(s, ph, arg);
    int rc = pst_fsess_run(s->fs, ph, arg, &s->fres);
    if (rc == 1) {                  /* pending: wait, reading nothing */
        s->gate_phase = ph;
        s->gate_next = next;
        s->gate_saved = s->st;
        pst__smtp_state(s, ST_FILTER);
        return;
    }
    if (rc < 0)
        pst_sf_internal_error(&s->fres);
    apply(s, ph, next);
}

/* A pending verdict arrived: finish what waited for it, then go on with
 * whatever the client pipelined behind. */
void
pst__gate_verdict(void *arg, const struct pst_fres *r)
{
    struct pst_session *s = arg;
    if (s->closing || s->st != ST_FILTER)
        return;
    pst__smtp_state(s, s->gate_saved);
    s->fres = *r;
    apply(s, s->gate_phase, s->gate_next);
    pst__smtp_process(s);
}
