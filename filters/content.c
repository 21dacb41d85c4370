/*
 * content.c - reading a part's decoded body for filters (filter.h
 * CONTENT): a core/mime.h reader over the message's stored text.
 *
 * Nothing here touches the session: a reader holds only positions, the
 * decoder and a pointer to the text source, which the caller keeps
 * referenced, so a job reads on a worker thread whatever the session does.
 */
#include "filters/filter.h"

#include <string.h>

/* pst_fbody_of - where part's body is and how it is encoded. */
struct pst_fbody
pst_fbody_of(const struct pst_mime_part *part)
{
    struct pst_fbody b = {part->body_start, part->body_end,
                          part->container ? PST_CTE_7BIT : part->cte};
    return b;
}

static ssize_t
src_read(void *arg, void *buf, size_t len, uint64_t off)
{
    return pst_textsrc_read(arg, buf, len, off);
}

/* pst_fbody_open - see filter.h. */
struct pst_mime_reader *
pst_fbody_open(struct pst_textsrc *t, const struct pst_fbody *b)
{
    struct pst_mime_part p;
    if (t == NULL || b == NULL)
        return NULL;
    memset(&p, 0, sizeof(p));
    p.body_start = b->start;
    p.body_end = b->end < b->start ? b->start : b->end;
    p.cte = b->cte;
    return pst_mime_reader_open_fn(src_read, t, &p);
}
