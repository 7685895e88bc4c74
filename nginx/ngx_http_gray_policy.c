/* graylane — ngx_http_gray_module: the policy file.
 *
 * The master reads and compiles the file while it reads the configuration
 * (an unusable file fails `nginx -t` and the reload). Each worker then runs
 * a timer: every gray_policies_check_interval it stat()s the file and, when
 * the identity (device, inode, size, mtime, ctime) changed, reads it (at
 * most GRAY_POLICY_FILE_MAX bytes) and compiles it. A good file replaces the
 * worker's set between two events; requests already running keep the set
 * they started with (they hold a reference). A bad one leaves the current
 * set in place and is logged once. The bytes of the last file read are
 * kept, so a file rewritten with the same content changes nothing. */
#include "ngx_http_gray_module.h"

#include "gray/json.h"

static void ngx_http_gray_policy_tick(ngx_event_t *ev);


static void
ngx_http_gray_file_id(struct stat *st, ngx_http_gray_file_id_t *id)
{
    ngx_memzero(id, sizeof(*id));
    id->dev = st->st_dev;
    id->ino = st->st_ino;
    id->size = st->st_size;
    id->mtime_sec = st->st_mtim.tv_sec;
    id->mtime_nsec = st->st_mtim.tv_nsec;
    id->ctime_sec = st->st_ctim.tv_sec;
    id->ctime_nsec = st->st_ctim.tv_nsec;
}


static ngx_uint_t
ngx_http_gray_file_id_eq(ngx_http_gray_file_id_t *a, ngx_http_gray_file_id_t *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size
           && a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec
           && a->ctime_sec == b->ctime_sec && a->ctime_nsec == b->ctime_nsec
           && a->err == b->err;
}


static void
ngx_http_gray_policy_forget(ngx_http_gray_policy_t *pol)
{
    if (pol->content) {
        ngx_free(pol->content);
    }

    pol->content = NULL;
    pol->content_len = 0;
}


/* A failure before the bytes could be compared: the next readable file is
 * parsed whatever it holds. */
static void
ngx_http_gray_policy_fail(ngx_http_gray_policy_t *pol, const char *what,
    ngx_err_t err)
{
    u_char  *p, *last;

    p = pol->error;
    last = pol->error + sizeof(pol->error);

    p = ngx_slprintf(p, last, "%s", what);

    if (err) {
        p = ngx_slprintf(p, last, ": ");
        p = ngx_strerror(err, p, last - p);
    }

    pol->error_len = p - pol->error;
    ngx_http_gray_policy_forget(pol);
}


void
ngx_http_gray_policy_release(void *data)
{
    ngx_http_gray_policy_t  *pol = data;

    gray_policyset_release(pol->set);
    pol->set = NULL;
    ngx_http_gray_policy_forget(pol);
}


ngx_int_t
ngx_http_gray_policy_load(ngx_http_gray_policy_t *pol, ngx_str_t *path,
    ngx_log_t *log)
{
    int                       fd;
    char                      more;
    u_char                   *buf;
    size_t                    got;
    time_t                    now;
    ssize_t                   n;
    ngx_err_t                 err;
    ngx_int_t                 rc;
    ngx_uint_t                tries;
    struct stat               st;
    gray_error_t              gerr;
    gray_policyset_t         *set;
    ngx_http_gray_file_id_t   id, after;

    if (stat((const char *) path->data, &st) == -1) {
        err = ngx_errno;
        ngx_memzero(&id, sizeof(id));
        id.err = err;

        if (pol->seen && ngx_http_gray_file_id_eq(&pol->id, &id)) {
            return NGX_DECLINED;
        }

        pol->id = id;
        pol->seen = 1;
        pol->racy = 0;
        ngx_http_gray_policy_fail(pol, "cannot stat the file", err);
        return NGX_ERROR;
    }

    ngx_http_gray_file_id(&st, &id);

    if (pol->seen && !pol->racy && ngx_http_gray_file_id_eq(&pol->id, &id)) {
        return NGX_DECLINED;
    }

    /* O_NONBLOCK: a FIFO in place of the file must not block the worker. */
    fd = open((const char *) path->data, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd == -1) {
        err = ngx_errno;
        pol->id = id;
        pol->seen = 1;
        pol->racy = 0;
        ngx_http_gray_policy_fail(pol, "cannot open the file", err);
        return NGX_ERROR;
    }

    buf = NULL;

    if (fstat(fd, &st) == -1) {
        err = ngx_errno;
        pol->id = id;
        pol->seen = 1;
        pol->racy = 0;
        ngx_http_gray_policy_fail(pol, "cannot stat the file", err);
        rc = NGX_ERROR;
        goto out;
    }

    ngx_http_gray_file_id(&st, &id);
    pol->id = id;
    pol->seen = 1;
    pol->racy = 0;

    if (!S_ISREG(st.st_mode)) {
        ngx_http_gray_policy_fail(pol, "not a regular file", 0);
        rc = NGX_ERROR;
        goto out;
    }

    if (st.st_size > GRAY_POLICY_FILE_MAX) {
        ngx_http_gray_policy_fail(pol, "", 0);
        pol->error_len = ngx_snprintf(pol->error, sizeof(pol->error),
                             "the file has %O bytes, over the limit of %d",
                             st.st_size, GRAY_POLICY_FILE_MAX)
                         - pol->error;
        rc = NGX_ERROR;
        goto out;
    }

    buf = ngx_alloc((size_t) st.st_size + 1, log);
    if (buf == NULL) {
        ngx_http_gray_policy_fail(pol, "out of memory", 0);
        pol->seen = 0; /* try again on the next tick */
        rc = NGX_ERROR;
        goto out;
    }

    got = 0;

    for (tries = 0; got < (size_t) st.st_size && tries < 1000; tries++) {
        n = read(fd, buf + got, (size_t) st.st_size - got);

        if (n == -1) {
            err = ngx_errno;
            if (err == NGX_EINTR) {
                continue;
            }
            ngx_http_gray_policy_fail(pol, "cannot read the file", err);
            rc = NGX_ERROR;
            goto out;
        }

        if (n == 0) {
            break;
        }

        got += n;
    }

    /* Written in place while we read (not replaced by rename): shorter,
     * longer or touched. Leave `seen` unset and read it again later. */
    n = read(fd, &more, 1);

    if (got != (size_t) st.st_size || n > 0 || fstat(fd, &st) == -1) {
        pol->seen = 0;
        rc = NGX_AGAIN;
        goto out;
    }

    ngx_http_gray_file_id(&st, &after);

    if (!ngx_http_gray_file_id_eq(&id, &after)) {
        pol->seen = 0;
        rc = NGX_AGAIN;
        goto out;
    }

    /* File times are as coarse as the kernel's clock tick: a rewrite
     * within the same tick, with the same size and a reused inode, would
     * look unchanged. While the file is that young, read it on every
     * check and compare the bytes (what git does with racy entries). */
    now = ngx_time();
    pol->racy = id.mtime_sec >= now - 1 || id.ctime_sec >= now - 1;

    if (pol->content && pol->content_len == got
        && ngx_memcmp(pol->content, buf, got) == 0)
    {
        /* the bytes already loaded (or already refused) */
        rc = NGX_DECLINED;
        goto out;
    }

    ngx_http_gray_policy_forget(pol);
    pol->content = buf;
    pol->content_len = got;
    buf = NULL;

    set = NULL;

    if (gray_policyset_parse((const char *) pol->content, got, GRAY_PARSE_ANY,
                             &set, &gerr)
        != GRAY_OK)
    {
        gray_error_format(&gerr, (char *) pol->error, sizeof(pol->error));
        pol->error_len = ngx_strlen(pol->error);
        rc = NGX_ERROR;
        goto out;
    }

    gray_policyset_release(pol->set);
    pol->set = set;
    pol->generation++;
    pol->error_len = 0;
    rc = NGX_OK;

out:

    if (buf) {
        ngx_free(buf);
    }

    if (close(fd) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "gray_policies \"%V\": close() failed", path);
    }

    return rc;
}


ngx_int_t
ngx_http_gray_policy_init_process(ngx_cycle_t *cycle,
    ngx_http_gray_main_conf_t *mcf)
{
    ngx_event_t  *ev;

    if (mcf->policy_path.len == 0) {
        return NGX_OK;
    }

    ev = &mcf->timer;
    ngx_memzero(ev, sizeof(ngx_event_t));
    ev->handler = ngx_http_gray_policy_tick;
    ev->data = mcf;
    ev->log = cycle->log;
    /* a pending check never holds up a graceful shutdown */
    ev->cancelable = 1;

    ngx_add_timer(ev, mcf->check_interval);

    return NGX_OK;
}


static void
ngx_http_gray_policy_tick(ngx_event_t *ev)
{
    ngx_int_t                   rc;
    ngx_http_gray_main_conf_t  *mcf;

    mcf = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    rc = ngx_http_gray_policy_load(&mcf->policy, &mcf->policy_path, ev->log);

    if (rc == NGX_OK) {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "gray_policies \"%V\": revision %L loaded (%uz policies)",
                      &mcf->policy_path,
                      gray_policyset_revision(mcf->policy.set),
                      gray_policyset_count(mcf->policy.set));
        ngx_http_gray_status_worker(mcf);

    } else if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "gray_policies \"%V\": %*s; still serving revision %L",
                      &mcf->policy_path, mcf->policy.error_len,
                      mcf->policy.error,
                      mcf->policy.set
                          ? gray_policyset_revision(mcf->policy.set) : 0);
        ngx_http_gray_status_worker(mcf);
    }

    ngx_add_timer(ev, mcf->check_interval);
}
