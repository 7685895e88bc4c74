/* Internal: the evaluator's body. lib/core/eval.c includes it for
 * gray_decide and gray_explain; an executor may include it too, to have its
 * own lookup inlined into the loop over the conditions (the nginx module
 * does: nginx/ngx_http_gray_request.c). One inclusion per file. Define
 * before including:
 *
 *   GRAY_EVAL_LOOKUP(x, slot, value)  an int expression that looks slot
 *       `slot` of policy x->p up into *value for the request of x (x->ctx,
 *       or a member of GRAY_EVAL_EXTRA), with the gray_lookup_fn contract:
 *       1 present, 0 absent; a value may be decoded into x->scratch.
 *   GRAY_EVAL_EXTRA   more members of ectx (may be empty).
 *   GRAY_EVAL_TRACE   1: gray_explain's trace (the includer defines
 *       trace_item and struct gray_trace_s); 0: none, decisions only.
 *   GRAY_EVAL_MATCH_DATA()  optional: a pcre2_match_data * for one pair
 *       that this decision may use (a single-threaded executor keeps one),
 *       or NULL; without it a regex match builds its own on the stack.
 *   GRAY_EVAL_IP_PARSE(x, p, len, out)  optional: gray__ip_parse, for an
 *       executor that may have parsed that address already.
 *
 * What it defines (all static): ectx, ectx_init(x, p, ctx), eval_run(p, x,
 * out) (the rule loop: first matching rule wins; nothing allocated). */
#ifndef GRAY_EVAL_LOOKUP
#error "define GRAY_EVAL_LOOKUP before including core/eval_impl.h"
#endif

#include <string.h>

#include "core/model.h"

#ifndef GRAY_EVAL_IP_PARSE
#define GRAY_EVAL_IP_PARSE(x, p, len, out) gray__ip_parse(p, len, out)
#endif

#define GRAY_EVAL_INLINE static inline __attribute__((always_inline))
#define GRAY_EVAL_STATIC static __attribute__((unused))

/* Tracing this decision (never, when compiled without the trace). */
#define TRACING(x) (GRAY_EVAL_TRACE && (x)->trace != NULL)

/* A decision looks an attribute that several conditions test up once: the
 * values of such slots (among the first GRAY__SLOTS_CACHED) are kept for
 * the later conditions, unless the lookup decoded the value into the
 * scratch buffer, which the next lookup may overwrite. */
typedef struct ectx {
  const gray_policy_t *p;
  void *ctx; /* the includer's request */
  GRAY_EVAL_EXTRA
  gray_trace_t *trace; /* NULL: not tracing */
  int rule_index;
  const char *rule;
  uint64_t done, have; /* bit i: slot i */
  gray_str_t vals[GRAY__SLOTS_CACHED];
  char scratch[GRAY_SCRATCH_MAX];
} ectx;

GRAY_EVAL_INLINE void ectx_init(ectx *x, const gray_policy_t *p, void *ctx) {
  x->p = p;
  x->ctx = ctx;
  x->trace = NULL;
  x->done = x->have = 0;
}

/* The value of slot i of the policy; 1 present, 0 absent. shared: other
 * conditions read it too. */
GRAY_EVAL_INLINE int attr_value(ectx *x, uint32_t i, int shared, gray_str_t *v) {
  uint64_t bit = 0;
  if (shared && i < GRAY__SLOTS_CACHED) {
    bit = (uint64_t)1 << i;
    if (x->done & bit) {
      *v = x->vals[i];
      return (x->have & bit) != 0;
    }
  }
  gray_str_t r = {NULL, 0};
  int have = GRAY_EVAL_LOOKUP(x, i, &r);
  if (have && !r.p) r.p = "";
  *v = r;
  if (bit && !(r.p >= x->scratch && r.p < x->scratch + sizeof x->scratch)) {
    x->done |= bit;
    if (have) {
      x->have |= bit;
      x->vals[i] = r;
    }
  }
  return have;
}

#if GRAY_EVAL_TRACE
/* Reserve an entry; returns its index or (size_t)-1 when out of memory. */
GRAY_EVAL_STATIC size_t trace_push(ectx *x, gray_trace_kind_t kind, int depth) {
  gray_trace_t *t = x->trace;
  if (t->oom) return (size_t)-1;
  if (t->count == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 16;
    trace_item *n = gray__realloc(t->items, cap * sizeof(*n));
    if (!n) {
      t->oom = 1;
      return (size_t)-1;
    }
    t->items = n;
    t->cap = cap;
  }
  trace_item *it = &t->items[t->count];
  memset(&it->pub, 0, sizeof(it->pub));
  it->value[0] = it->note[0] = '\0';
  it->pub.kind = kind;
  it->pub.depth = depth;
  it->pub.rule_index = x->rule_index;
  it->pub.rule = x->rule;
  return t->count++;
}
#endif

GRAY_EVAL_INLINE int str_eq(gray_str_t a, gray_str_t b) {
  return a.len == b.len && (a.len == 0 || !memcmp(a.p, b.p, a.len));
}

GRAY_EVAL_STATIC const char *find_bytes(const char *h, size_t hl, const char *n, size_t nl) {
  if (nl == 0) return h;
  if (nl > hl) return NULL;
  const char *last = h + (hl - nl);
  for (const char *p = h; p <= last; p++) {
    p = memchr(p, n[0], (size_t)(last - p) + 1);
    if (!p) return NULL;
    if (!memcmp(p, n, nl)) return p;
  }
  return NULL;
}

/* Bump allocator over caller stack memory so PCRE2 never touches the heap
 * while matching. */
typedef struct rx_arena {
  unsigned char *buf;
  size_t used, cap;
} rx_arena;

GRAY_EVAL_STATIC void *rx_malloc(PCRE2_SIZE size, void *data) {
  rx_arena *a = data;
  size_t need = (size + 15) & ~(size_t)15;
  if (need > a->cap - a->used) return NULL;
  void *p = a->buf + a->used;
  a->used += need;
  return p;
}

GRAY_EVAL_STATIC void rx_free(void *p, void *data) {
  (void)p;
  (void)data;
}

/* A pcre2 match's result as 1 match, 0 no match, -1 limit or resource
 * failure. */
GRAY_EVAL_INLINE int rx_result(int rc) { return rc >= 0 ? 1 : rc == PCRE2_ERROR_NOMATCH ? 0 : -1; }

/* Returns 1 match, 0 no match, -1 limit or resource failure. */
GRAY_EVAL_STATIC int rx_run(const gray__node *n, gray_str_t v, unsigned char *buf, size_t cap) {
  _Alignas(16) rx_arena a = {buf, 0, cap};
  pcre2_general_context *g = pcre2_general_context_create(rx_malloc, rx_free, &a);
  if (!g) return -1;
  pcre2_match_data *md = pcre2_match_data_create(1, g);
  if (!md) return -1;
  PCRE2_SPTR subj = (PCRE2_SPTR)(v.p ? v.p : "");
  int rc = n->jit ? pcre2_jit_match(n->re, subj, v.len, 0, 0, md, n->mctx)
                  : pcre2_match(n->re, subj, v.len, 0, 0, md, n->mctx);
  /* Nothing to free: all of it lives in buf. */
  return rx_result(rc);
}

/* The interpreter (no JIT) needs room for its backtracking frames; keep that
 * large buffer out of the common path's stack frame. */
static __attribute__((noinline, unused)) int rx_match_interp(const gray__node *n, gray_str_t v) {
  _Alignas(16) unsigned char buf[48 * 1024];
  return rx_run(n, v, buf, sizeof buf);
}

GRAY_EVAL_STATIC int rx_match(const gray__node *n, gray_str_t v) {
#ifdef GRAY_EVAL_MATCH_DATA
  pcre2_match_data *md;
  if (n->jit && (md = GRAY_EVAL_MATCH_DATA()) != NULL) {
    return rx_result(
        pcre2_jit_match(n->re, (PCRE2_SPTR)(v.p ? v.p : ""), v.len, 0, 0, md, n->mctx));
  }
#endif
  if (n->jit) {
    _Alignas(16) unsigned char buf[1024];
    return rx_run(n, v, buf, sizeof buf);
  }
  return rx_match_interp(n, v);
}

/* Does the attribute's value v pass the condition n? */
GRAY_EVAL_INLINE int cond_test(ectx *x, const gray__node *n, gray_str_t v, const char **note) {
  switch (n->op) {
    case GRAY__OP_EQ:
      return str_eq(v, n->value);
    case GRAY__OP_NE:
      return !str_eq(v, n->value);
    case GRAY__OP_IN:
      return gray__strset_has(n->set, v.p, v.len);
    case GRAY__OP_PREFIX:
      return v.len >= n->value.len && !memcmp(v.p, n->value.p, n->value.len);
    case GRAY__OP_SUFFIX:
      return v.len >= n->value.len &&
             !memcmp(v.p + v.len - n->value.len, n->value.p, n->value.len);
    case GRAY__OP_CONTAINS:
      return find_bytes(v.p, v.len, n->value.p, n->value.len) != NULL;
    case GRAY__OP_REGEX: {
      /* a value without the pattern's required literal cannot match */
      if (n->lit.len && !find_bytes(v.p, v.len, n->lit.p, n->lit.len)) return 0;
      int r = rx_match(n, v);
      if (r < 0) *note = "regex match limit or resource failure: treated as no match";
      return r == 1;
    }
    case GRAY__OP_EXISTS:
      return 1;
    case GRAY__OP_LT:
    case GRAY__OP_LE:
    case GRAY__OP_GT:
    case GRAY__OP_GE: {
      double d;
      if (!gray__parse_number(v.p, v.len, &d)) {
        *note = "not a number";
        return 0;
      }
      switch (n->op) {
        case GRAY__OP_LT: return d < n->num;
        case GRAY__OP_LE: return d <= n->num;
        case GRAY__OP_GT: return d > n->num;
        default: return d >= n->num;
      }
    }
    case GRAY__OP_MOD: {
      uint64_t rem;
      if (!gray__parse_mod(v.p, v.len, n->divisor, &rem)) {
        *note = "not a non-negative integer";
        return 0;
      }
      if (n->mod_kind == GRAY__MOD_EQ) return rem == n->mod_value;
      if (n->mod_kind == GRAY__MOD_LT) return rem < n->mod_value;
      size_t lo = 0, hi = n->nmod_list;
      while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (n->mod_list[mid] == rem) return 1;
        if (n->mod_list[mid] < rem)
          lo = mid + 1;
        else
          hi = mid;
      }
      return 0;
    }
    case GRAY__OP_CIDR: {
      uint8_t ip[16];
      if (!GRAY_EVAL_IP_PARSE(x, v.p, v.len, ip)) {
        *note = "not an IP address";
        return 0;
      }
      for (uint32_t i = 0; i < n->ncidrs; i++)
        if (gray__cidr_match(&n->cidrs[i], ip)) return 1;
      return 0;
    }
    case GRAY__OP_PERCENT: {
      uint32_t b = gray_percent_bucket(n->salt, v);
      return b >= n->pct_from && b < n->pct_to;
    }
    default:
      return 0;
  }
}

#if GRAY_EVAL_TRACE
GRAY_EVAL_STATIC void trace_cond(ectx *x, size_t slot, const gray__node *n, gray_str_t v, int have,
                       const char *note) {
  trace_item *it = &x->trace->items[slot];
  it->pub.attr = n->attr_text;
  it->pub.op = gray__op_name(n->op);
  it->pub.present = have;
  if (have) {
    size_t len = v.len > GRAY_TRACE_VALUE_MAX ? GRAY_TRACE_VALUE_MAX : v.len;
    if (len) memcpy(it->value, v.p, len);
    it->value[len] = '\0';
    it->pub.truncated = v.len > len;
  }
  if (note) {
    size_t l = strlen(note);
    if (l >= sizeof it->note) l = sizeof it->note - 1;
    memcpy(it->note, note, l);
    it->note[l] = '\0';
  } else if (have && n->op == GRAY__OP_PERCENT) {
    /* The bucket is what an operator needs to see a sticky split. */
    uint32_t b = gray_percent_bucket(n->salt, v);
    char *o = it->note;
    memcpy(o, "bucket ", 7);
    o += 7;
    char digits[8];
    int nd = 0;
    do {
      digits[nd++] = (char)('0' + b % 10);
      b /= 10;
    } while (b);
    while (nd) *o++ = digits[--nd];
    *o = '\0';
  }
  if (!have) it->pub.note = NULL;
}
#endif

/* A condition without the trace. */
GRAY_EVAL_INLINE int cond_eval(ectx *x, const gray__node *n) {
  gray_str_t v;
  const char *note;
  return attr_value(x, n->slot, n->slot_shared, &v) && cond_test(x, n, v, &note);
}

/* eval_node and eval_traced are one function compiled twice: without the
 * trace's bookkeeping (gray_decide) and with it (gray_explain). */
static int eval_node(ectx *x, const gray__node *n, int depth);
#if GRAY_EVAL_TRACE
static int eval_traced(ectx *x, const gray__node *n, int depth);
#define trace_result(x, slot, r) \
  ((slot) != (size_t)-1 ? (void)((x)->trace->items[slot].pub.result = (r)) : (void)0)
#else
#define eval_traced eval_node
#define trace_push(x, kind, depth) ((void)(kind), (size_t)-1)
#define trace_cond(x, slot, n, v, have, note) ((void)(have), (void)(note))
#define trace_result(x, slot, r) ((void)(slot), (void)(r))
#endif

GRAY_EVAL_INLINE int eval_any(ectx *x, const gray__node *n, int depth, const int traced) {
  size_t slot = (size_t)-1;
  int r = 0;
  if (traced) {
    static const gray_trace_kind_t kinds[] = {0, GRAY_TRACE_ALL, GRAY_TRACE_ANY, GRAY_TRACE_NOT,
                                              GRAY_TRACE_COND};
    slot = trace_push(x, kinds[n->kind], depth);
  }
  switch (n->kind) {
    case GRAY__N_ALL:
      r = 1;
      for (uint32_t i = 0; i < n->nkids; i++)
        if (!(traced ? eval_traced : eval_node)(x, n->kids[i], depth + 1)) {
          r = 0;
          break;
        }
      break;
    case GRAY__N_ANY:
      for (uint32_t i = 0; i < n->nkids; i++)
        if ((traced ? eval_traced : eval_node)(x, n->kids[i], depth + 1)) {
          r = 1;
          break;
        }
      break;
    case GRAY__N_NOT:
      r = !(traced ? eval_traced : eval_node)(x, n->kids[0], depth + 1);
      break;
    case GRAY__N_COND: {
      if (!traced) {
        r = cond_eval(x, n);
        break;
      }
      gray_str_t v;
      const char *note = NULL;
      int have = attr_value(x, n->slot, n->slot_shared, &v);
      r = have && cond_test(x, n, v, &note);
      if (slot != (size_t)-1) trace_cond(x, slot, n, v, have, note);
      break;
    }
  }
  trace_result(x, slot, r);
  return r;
}

static int eval_node(ectx *x, const gray__node *n, int depth) { return eval_any(x, n, depth, 0); }

#if GRAY_EVAL_TRACE
static int eval_traced(ectx *x, const gray__node *n, int depth) {
  return eval_any(x, n, depth, 1);
}
#endif

GRAY_EVAL_INLINE int tag_valid(gray_str_t t) {
  if (t.len == 0 || t.len > GRAY_NAME_LEN_MAX) return 0;
  for (size_t i = 0; i < t.len; i++) {
    unsigned char c = (unsigned char)t.p[i];
    int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return 0;
  }
  return 1;
}

static void eval_run(const gray_policy_t *p, ectx *x, gray_decision_t *out) {
  out->service = p->service;
  out->fallback_fail = p->fallback_fail;
  out->rule_index = -1;
  out->rule.p = NULL;
  out->rule.len = 0;
  out->version = p->def;
  out->tag.p = NULL;
  out->tag.len = 0;
  for (uint32_t i = 0; i < p->nrules; i++) {
    const gray__rule *ru = &p->rules[i];
    const gray__node *w = ru->when;
    int m;
    if (TRACING(x)) {
      x->rule_index = (int)i;
      x->rule = ru->name.p;
      size_t slot = trace_push(x, GRAY_TRACE_RULE, 0);
      m = !w || eval_traced(x, w, 1);
      trace_result(x, slot, m);
    } else {
      /* most rules test one condition: no call for it */
      m = !w || (w->kind == GRAY__N_COND ? cond_eval(x, w) : eval_node(x, w, 1));
    }
    if (m) {
      out->rule_index = (int)i;
      out->rule = ru->name;
      out->version = ru->route;
      out->tag = ru->tag;
      break;
    }
  }
  if (!out->tag.p) {
    gray_str_t t;
    if (attr_value(x, p->tag_slot, p->tag_shared, &t) && tag_valid(t)) out->tag = t;
  }
}

#undef TRACING
#undef trace_result
