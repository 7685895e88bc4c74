/* graylane — ngx_http_gray_module: the policy file.
 *
 * The master reads and compiles the file while it reads the configuration
 * (an unusable file fails `nginx -t` and the reload). Each worker then runs
 * a timer: every gray_policies_check_interval it stat()s the file and, when
 * the identity (device, inode, size, mtime, ctime) changed, reads it (at
 * most GRAY_POLICY_FILE_MAX bytes) and compiles it: a small file in the
 * event loop, a big one in a compiler thread (below). A good file replaces
 * the worker's set between two events; requests already running keep the
 * set they started with (they hold a reference). A bad one leaves the
 * current set in place and is logged once. The bytes of the last file read
 * are kept, so a file rewritten with the same content changes nothing. */
#include "ngx_http_gray_module.h"

#include <pthread.h>

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


/* Compile bytes into a set, or an error text: touches nothing else, so
 * that the compiler thread may call it. */
static gray_policyset_t *
ngx_http_gray_policy_compile(const u_char *p, size_t len, u_char *err,
    size_t errsz, size_t *err_len)
{
    gray_error_t       gerr;
    gray_policyset_t  *set;

    set = NULL;

    if (gray_policyset_parse((const char *) p, len, GRAY_PARSE_ANY, &set,
                             &gerr)
        != GRAY_OK)
    {
        gray_error_format(&gerr, (char *) err, errsz);
        *err_len = ngx_strlen(err);
        return NULL;
    }

    return set;
}


/* A compiled set (or the error that stood in its way) becomes the
 * process's own: NGX_OK or NGX_ERROR, as ngx_http_gray_policy_load. */
static ngx_int_t
ngx_http_gray_policy_apply(ngx_http_gray_policy_t *pol, gray_policyset_t *set,
    const u_char *err, size_t err_len)
{
    if (set == NULL) {
        pol->error_len = ngx_min(err_len, sizeof(pol->error));
        ngx_memmove(pol->error, err, pol->error_len);
        return NGX_ERROR;
    }

    gray_policyset_release(pol->set);
    pol->set = set;
    pol->generation++;
    pol->error_len = 0;

    return NGX_OK;
}


/* Compiles pol->content where the caller runs and applies the result. */
static ngx_int_t
ngx_http_gray_policy_compile_here(ngx_http_gray_policy_t *pol)
{
    size_t             err_len = 0;
    gray_policyset_t  *set;

    set = ngx_http_gray_policy_compile(pol->content, pol->content_len,
                                       pol->error, sizeof(pol->error),
                                       &err_len);

    return ngx_http_gray_policy_apply(pol, set, pol->error, err_len);
}


ngx_int_t
ngx_http_gray_policy_load(ngx_http_gray_policy_t *pol, ngx_str_t *path,
    ngx_log_t *log, size_t inline_max)
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

    if (got >= inline_max) {
        rc = NGX_DONE;
        goto out;
    }

    rc = ngx_http_gray_policy_compile_here(pol);

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


/* ---- the compiler thread -------------------------------------------------
 *
 * A big set (thousands of policies, each regex JIT-compiled) takes tens of
 * milliseconds or more to compile; done in the worker's event loop, every
 * request of that worker would wait for it. So a file of
 * gray_policies_compile_thread bytes or more is compiled by a thread of its
 * own: the timer reads the new bytes (pol->content, left untouched until
 * the result is back), starts the thread and goes on serving; the thread
 * compiles, stores the set or the error, writes a byte to a pipe that the
 * worker's event loop watches, and ends; the pipe's handler joins it and
 * puts the set in place between two events, as before. The thread touches
 * nothing of nginx. When it cannot be started the worker compiles in its
 * event loop, as at configuration time.
 *
 * Smaller files are compiled in the event loop (milliseconds), and no
 * thread outlives its compile: while a process has a second thread, every
 * request costs more (glibc's locked malloc and cancellation wrappers around
 * recv and writev, and more system time: 3 % of a bare proxy's CPU with an
 * idle thread kept, docs/benchmarks.md run 9); once the thread has ended,
 * what remains is glibc's part, about 1 %. */

typedef struct {
    pthread_t                   tid;
    ngx_uint_t                  busy;      /* a thread compiles; result not yet applied */
    /* the job, set before the thread starts */
    const u_char               *in;
    size_t                      in_len;
    /* the result: written by the thread, read by the worker after it has
     * joined the thread */
    gray_policyset_t           *out;
    size_t                      err_len;
    u_char                      err[NGX_HTTP_GRAY_ERROR_MAX];
    ngx_msec_t                  took;      /* ms the compile took */
    /* the worker's side: the pipe, made for the first big file and kept */
    int                         fd[2];     /* [0] read, [1] write */
    ngx_connection_t           *c;
    ngx_http_gray_main_conf_t  *mcf;
} ngx_http_gray_compiler_t;

static ngx_http_gray_compiler_t  ngx_http_gray_compiler = { .fd = { -1, -1 } };


static ngx_msec_t
ngx_http_gray_monotonic_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngx_msec_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static void *
ngx_http_gray_compiler_thread(void *arg)
{
    char                       byte;
    ngx_msec_t                 t0;
    ngx_http_gray_compiler_t  *k = arg;

    t0 = ngx_http_gray_monotonic_ms();
    k->err_len = 0;
    k->out = ngx_http_gray_policy_compile(k->in, k->in_len, k->err,
                                          sizeof(k->err), &k->err_len);
    k->took = ngx_http_gray_monotonic_ms() - t0;

    /* the pipe is non-blocking and only this thread writes to it */
    byte = 1;
    if (write(k->fd[1], &byte, 1) == -1) {
        /* cannot be full: one byte per thread, read before the next */
    }

    return NULL;
}


static void
ngx_http_gray_policy_loaded(ngx_http_gray_main_conf_t *mcf, ngx_log_t *log,
    ngx_int_t rc, ngx_msec_t took, const char *where)
{
    if (rc == NGX_OK) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "gray_policies \"%V\": revision %L loaded (%uz policies, "
                      "compiled in %M ms %s)", &mcf->policy_path,
                      gray_policyset_revision(mcf->policy.set),
                      gray_policyset_count(mcf->policy.set), took, where);
        ngx_http_gray_status_worker(mcf);

    } else if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "gray_policies \"%V\": %*s; still serving revision %L",
                      &mcf->policy_path, mcf->policy.error_len,
                      mcf->policy.error,
                      mcf->policy.set
                          ? gray_policyset_revision(mcf->policy.set) : 0);
        ngx_http_gray_status_worker(mcf);
    }
}


/* The pipe's read handler: the compiler thread has its result. */
static void
ngx_http_gray_compiler_read(ngx_event_t *ev)
{
    char                       buf[64];
    ngx_int_t                  rc;
    ngx_connection_t          *c;
    ngx_http_gray_compiler_t  *k = &ngx_http_gray_compiler;

    c = ev->data;

    while (read(k->fd[0], buf, sizeof(buf)) > 0) {
        /* drain */
    }

    if (ngx_handle_read_event(ev, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "gray_policies: cannot watch the compiler's pipe");
    }

    if (!k->busy) {
        return;
    }

    /* the byte is the thread's last act: it has ended or is ending */
    pthread_join(k->tid, NULL);
    k->busy = 0;

    rc = ngx_http_gray_policy_apply(&k->mcf->policy, k->out, k->err,
                                    k->err_len);
    k->out = NULL;
    ngx_http_gray_policy_loaded(k->mcf, c->log, rc, k->took,
                                "in a compiler thread");
}


/* The pipe the compiler threads wake the event loop through, made once. */
static ngx_int_t
ngx_http_gray_compiler_pipe(ngx_log_t *log, ngx_http_gray_main_conf_t *mcf)
{
    ngx_connection_t          *c;
    ngx_http_gray_compiler_t  *k = &ngx_http_gray_compiler;

    if (k->c) {
        return NGX_OK;
    }

    k->mcf = mcf;

    if (pipe2(k->fd, O_NONBLOCK | O_CLOEXEC) == -1) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "gray_policies: pipe2() failed; the file is compiled "
                      "in the event loop");
        k->fd[0] = k->fd[1] = -1;
        return NGX_ERROR;
    }

    c = ngx_get_connection(k->fd[0], log);
    if (c == NULL) {
        goto failed;
    }

    c->read->handler = ngx_http_gray_compiler_read;
    c->read->log = log;
    k->c = c;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        goto failed;
    }

    return NGX_OK;

failed:

    if (k->c) {
        ngx_close_connection(k->c);   /* closes fd[0] */
        k->c = NULL;

    } else {
        close(k->fd[0]);
    }

    close(k->fd[1]);
    k->fd[0] = k->fd[1] = -1;

    return NGX_ERROR;
}


/* Starts a compiler thread for pol->content; NGX_ERROR leaves compiling to
 * the event loop (logged). */
static ngx_int_t
ngx_http_gray_compiler_start(ngx_log_t *log, ngx_http_gray_main_conf_t *mcf)
{
    int                        err;
    sigset_t                   all, old;
    ngx_http_gray_compiler_t  *k = &ngx_http_gray_compiler;

    if (ngx_http_gray_compiler_pipe(log, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    k->in = mcf->policy.content;
    k->in_len = mcf->policy.content_len;
    k->out = NULL;

    /* signals stay with the worker's own thread */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&k->tid, NULL, ngx_http_gray_compiler_thread, k);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (err != 0) {
        ngx_log_error(NGX_LOG_WARN, log, err,
                      "gray_policies: pthread_create() failed; the file is "
                      "compiled in the event loop");
        return NGX_ERROR;
    }

    k->busy = 1;

    return NGX_OK;
}


void
ngx_http_gray_policy_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_gray_compiler_t  *k = &ngx_http_gray_compiler;

    if (k->busy) {
        /* a compile under way finishes first; its set, never applied, is
         * released */
        pthread_join(k->tid, NULL);
        k->busy = 0;
        gray_policyset_release(k->out);
        k->out = NULL;
    }

    if (k->c) {
        /* before nginx counts the connections left open at exit */
        ngx_close_connection(k->c);   /* closes fd[0] */
        k->c = NULL;
        close(k->fd[1]);
        k->fd[0] = k->fd[1] = -1;
    }
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
    ngx_msec_t                  t0;
    ngx_http_gray_compiler_t   *k = &ngx_http_gray_compiler;
    ngx_http_gray_main_conf_t  *mcf;

    mcf = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (k->busy) {
        /* the bytes handed over stay as they are until the result is in */
        ngx_add_timer(ev, mcf->check_interval);
        return;
    }

    t0 = ngx_http_gray_monotonic_ms();
    rc = ngx_http_gray_policy_load(&mcf->policy, &mcf->policy_path, ev->log,
                                   mcf->compile_thread);

    if (rc == NGX_DONE && ngx_http_gray_compiler_start(ev->log, mcf) != NGX_OK)
    {
        rc = ngx_http_gray_policy_compile_here(&mcf->policy);
    }

    if (rc != NGX_DONE) {
        ngx_http_gray_policy_loaded(mcf, ev->log, rc,
                                    ngx_http_gray_monotonic_ms() - t0,
                                    "in the event loop");
    }

    ngx_add_timer(ev, mcf->check_interval);
}
