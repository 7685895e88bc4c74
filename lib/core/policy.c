/* Policy sets: lifecycle, lookup, accessors and name validation. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"

struct gray__regex_list {
  gray__regex_list *next;
  pcre2_code *re;
  pcre2_match_context *mctx;
};

static void *pcre_malloc(PCRE2_SIZE size, void *data) {
  (void)data;
  return gray__malloc(size);
}

static void pcre_free(void *p, void *data) {
  (void)data;
  gray__free(p);
}

gray_policyset_t *gray__set_new(void) {
  gray_policyset_t *set = gray__calloc(1, sizeof(*set));
  if (!set) return NULL;
  atomic_init(&set->refs, 1);
  gray__arena_init(&set->arena);
  set->gctx = pcre2_general_context_create(pcre_malloc, pcre_free, NULL);
  if (!set->gctx) {
    gray__free(set);
    return NULL;
  }
  return set;
}

gray_policyset_t *gray_policyset_ref(gray_policyset_t *set) {
  if (set) atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
  return set;
}

void gray_policyset_release(gray_policyset_t *set) {
  if (!set) return;
  if (atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1) return;
  gray__regex_list *r = set->regexes;
  while (r) {
    gray__regex_list *next = r->next;
    pcre2_code_free(r->re);
    pcre2_match_context_free(r->mctx);
    gray__free(r);
    r = next;
  }
  pcre2_general_context_free(set->gctx);
  gray__arena_free(&set->arena);
  gray__free(set);
}

static int str_cmp(gray_str_t a, gray_str_t b) {
  size_t n = a.len < b.len ? a.len : b.len;
  int c = n ? memcmp(a.p, b.p, n) : 0;
  if (c) return c;
  return a.len < b.len ? -1 : a.len > b.len;
}

static int policy_cmp(const void *a, const void *b) {
  const gray_policy_t *x = a, *y = b;
  int c = str_cmp(x->service, y->service);
  if (c) return c;
  return x->order < y->order ? -1 : x->order > y->order;
}

/* ---- attribute slots ------------------------------------------------------ */

typedef struct slot_builder {
  gray__arena *arena;
  gray_policy_t *p;
  uint32_t cap;
  uint32_t *uses; /* per slot, while building (at most GRAY__SLOTS_CACHED counted) */
  uint32_t *index; /* open addressing over (attr, name): slot + 1, 0 empty */
  uint32_t mask;
} slot_builder;

static uint64_t header_hash31(gray_str_t name) {
  uint64_t h = 0;
  for (size_t i = 0; i < name.len; i++) {
    unsigned char c = (unsigned char)name.p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return 0;
    h = h * 31 + c;
  }
  return h;
}

/* The index of (attr, name) in p->slots, added when new; UINT32_MAX when
 * out of memory. */
static uint32_t slot_of(slot_builder *b, gray_attr_t attr, gray_str_t name) {
  gray_policy_t *p = b->p;
  uint32_t h = gray_murmur3_32(name.p, name.len, (uint32_t)attr) & b->mask;
  for (;; h = (h + 1) & b->mask) {
    uint32_t i = b->index[h];
    if (i == 0) break;
    const gray__slot *sl = &p->slots[i - 1];
    if (sl->attr == attr && sl->name.len == name.len &&
        (name.len == 0 || !memcmp(sl->name.p, name.p, name.len)))
      return i - 1;
  }
  b->index[h] = p->nslots + 1;
  if (p->nslots == b->cap) {
    uint32_t cap = b->cap ? b->cap * 2 : 8;
    gray__slot *n = gray__arena_alloc(b->arena, cap * sizeof(*n));
    if (!n) return UINT32_MAX;
    if (p->nslots) memcpy(n, p->slots, p->nslots * sizeof(*n));
    p->slots = n;
    b->cap = cap;
  }
  gray__slot *s = &p->slots[p->nslots];
  s->attr = attr;
  s->name = name;
  s->hash31 = attr == GRAY_ATTR_HEADER ? header_hash31(name) : 0;
  return p->nslots++;
}

/* pass 0 assigns slots and counts their uses; pass 1 marks the shared. */
static int slots_of_node(slot_builder *b, gray__node *n, int pass) {
  if (n->kind != GRAY__N_COND) {
    for (uint32_t i = 0; i < n->nkids; i++)
      if (slots_of_node(b, n->kids[i], pass) != GRAY_OK) return GRAY_ENOMEM;
    return GRAY_OK;
  }
  if (pass == 1) {
    n->slot_shared = n->slot < GRAY__SLOTS_CACHED && b->uses[n->slot] > 1;
    return GRAY_OK;
  }
  n->slot = slot_of(b, n->attr, n->attr_name);
  if (n->slot == UINT32_MAX) return GRAY_ENOMEM;
  if (n->slot < GRAY__SLOTS_CACHED) b->uses[n->slot]++;
  return GRAY_OK;
}

/* Rules that route to the same version share its text with the default
 * (or the first such rule), so an executor can tell a decision's version
 * by its address (the nginx module keeps per-version answers that way). */
static void share_versions(gray_policy_t *p) {
  gray_str_t seen[64];
  size_t n = 0;
  seen[n++] = p->def;
  for (uint32_t i = 0; i < p->nrules; i++) {
    gray_str_t *r = &p->rules[i].route;
    size_t j = 0;
    while (j < n && !(seen[j].len == r->len && !memcmp(seen[j].p, r->p, r->len))) j++;
    if (j < n)
      *r = seen[j];
    else if (n < sizeof seen / sizeof seen[0])
      seen[n++] = *r;
  }
}

static int policy_slots(gray__arena *a, gray_policy_t *p) {
  static const gray_str_t none = {"", 0};
  uint32_t uses[GRAY__SLOTS_CACHED] = {0};
  /* the index: at most nconds + 1 slots, at most half full */
  uint32_t size = 16;
  while (size < 2 * (p->nconds + 1)) size *= 2;
  slot_builder b = {a, p, 0, uses, gray__calloc(size, sizeof(uint32_t)), size - 1};
  if (!b.index) return GRAY_ENOMEM;
  p->slots = NULL;
  p->nslots = 0;
  int rc = GRAY_OK;
  for (int pass = 0; pass < 2 && rc == GRAY_OK; pass++) {
    for (uint32_t i = 0; i < p->nrules && rc == GRAY_OK; i++)
      if (p->rules[i].when) rc = slots_of_node(&b, p->rules[i].when, pass);
    if (pass == 1 || rc != GRAY_OK) break;
    /* a decision without a rule's tag reads `tag` once more */
    p->tag_slot = slot_of(&b, GRAY_ATTR_TAG, none);
    if (p->tag_slot == UINT32_MAX) rc = GRAY_ENOMEM;
    else if (p->tag_slot < GRAY__SLOTS_CACHED) uses[p->tag_slot]++;
  }
  gray__free(b.index);
  if (rc != GRAY_OK) return rc;
  p->tag_shared = p->tag_slot < GRAY__SLOTS_CACHED && uses[p->tag_slot] > 1;
  p->nheader_slots = p->ncookie_slots = 0;
  memset(p->header_owner, 0, sizeof p->header_owner);
  memset(p->cookie_owner, 0, sizeof p->cookie_owner);
  p->header_by_name = 0;
  p->header_slots = gray__arena_alloc(a, p->nslots * sizeof(*p->header_slots));
  p->cookie_slots = gray__arena_alloc(a, p->nslots * sizeof(*p->cookie_slots));
  if (!p->header_slots || !p->cookie_slots) return GRAY_ENOMEM;
  for (uint32_t i = 0; i < p->nslots; i++) {
    if (p->slots[i].attr == GRAY_ATTR_HEADER) {
      p->header_slots[p->nheader_slots++] = i;
      gray__owner_mark(&p->header_owner[p->slots[i].hash31 % 64], i);
      if (!p->slots[i].hash31) p->header_by_name = 1;
    }
    if (p->slots[i].attr == GRAY_ATTR_COOKIE) {
      p->cookie_slots[p->ncookie_slots++] = i;
      size_t len = p->slots[i].name.len;
      gray__owner_mark(&p->cookie_owner[len < 63 ? len : 63], i);
    }
  }
  return GRAY_OK;
}

int gray__set_finish(gray_policyset_t *set, size_t *dup) {
  size_t n = set->npolicies;
  for (size_t i = 0; i < n; i++) {
    share_versions(&set->policies[i]);
    if (policy_slots(&set->arena, &set->policies[i]) != GRAY_OK) return GRAY_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) set->policies[i].order = (uint32_t)i;
  if (n > 1) qsort(set->policies, n, sizeof(*set->policies), policy_cmp);
  /* Report the later of two policies for the same service: that is the
   * one the user added by mistake. */
  size_t best = (size_t)-1;
  for (size_t i = 1; i < n; i++) {
    if (!str_cmp(set->policies[i].service, set->policies[i - 1].service)) {
      size_t later = set->policies[i].order;
      if (later < best) best = later;
    }
  }
  if (best != (size_t)-1) {
    if (dup) *dup = best;
    return GRAY_ESCHEMA;
  }
  return GRAY_OK;
}

int64_t gray_policyset_revision(const gray_policyset_t *set) { return set ? set->revision : 0; }

size_t gray_policyset_count(const gray_policyset_t *set) { return set ? set->npolicies : 0; }

const gray_policy_t *gray_policyset_at(const gray_policyset_t *set, size_t i) {
  return set && i < set->npolicies ? &set->policies[i] : NULL;
}

const gray_policy_t *gray_policyset_find(const gray_policyset_t *set, const char *service,
                                         size_t len) {
  if (!set || !service) return NULL;
  gray_str_t key = {service, len};
  size_t lo = 0, hi = set->npolicies;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = str_cmp(set->policies[mid].service, key);
    if (c == 0) return &set->policies[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

const char *gray_policy_service(const gray_policy_t *p) { return p->service.p; }
const char *gray_policy_default(const gray_policy_t *p) { return p->def.p; }
int gray_policy_fallback_fail(const gray_policy_t *p) { return p->fallback_fail; }
size_t gray_policy_rule_count(const gray_policy_t *p) { return p->nrules; }

const char *gray_policy_rule_name(const gray_policy_t *p, size_t i) {
  return i < p->nrules ? p->rules[i].name.p : NULL;
}
const char *gray_policy_rule_route(const gray_policy_t *p, size_t i) {
  return i < p->nrules ? p->rules[i].route.p : NULL;
}
const char *gray_policy_rule_tag(const gray_policy_t *p, size_t i) {
  return i < p->nrules ? p->rules[i].tag.p : NULL;
}

static const char *const op_names[GRAY__OP_COUNT] = {
    NULL,
#define GRAY__OP_TEXT(name, text) text,
    GRAY__OP_MAP(GRAY__OP_TEXT)
#undef GRAY__OP_TEXT
};

gray__op gray__op_parse(const char *text, size_t len) {
  for (int i = 1; i < GRAY__OP_COUNT; i++) {
    if (strlen(op_names[i]) == len && !memcmp(op_names[i], text, len)) return (gray__op)i;
  }
  return GRAY__OP_NONE;
}

const char *gray__op_name(gray__op op) {
  return op > GRAY__OP_NONE && op < GRAY__OP_COUNT ? op_names[op] : "?";
}

/* [A-Za-z0-9][A-Za-z0-9._-]{0,62} */
int gray__host_valid(const char *h) {
  unsigned char buf[16];
  size_t n = strlen(h), label = 0;
  if (inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1) return 1;
  if (n == 0 || n > 253) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = h[i];
    if (ch == '.') {
      if (label == 0 || h[i - 1] == '-') return 0;
      label = 0;
      continue;
    }
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-';
    if (!ok || (label == 0 && ch == '-') || ++label > 63) return 0;
  }
  return label > 0 && h[n - 1] != '-';
}

int gray__check_name(gray_str_t s, char *msg, size_t msgsz) {
  char q[96];
  if (s.len == 0) {
    gray__msg(msg, msgsz, "must not be empty");
    return GRAY_ESCHEMA;
  }
  if (s.len > GRAY_NAME_LEN_MAX) {
    gray__quote(s.p, s.len, q, sizeof q);
    gray__msg(msg, msgsz, "name %s is longer than %d characters", q, GRAY_NAME_LEN_MAX);
    return GRAY_ESCHEMA;
  }
  for (size_t i = 0; i < s.len; i++) {
    unsigned char c = (unsigned char)s.p[i];
    int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) {
      gray__quote(s.p, s.len, q, sizeof q);
      gray__msg(msg, msgsz,
                "invalid name %s: use letters, digits, '.', '_' and '-', starting with a "
                "letter or digit",
                q);
      return GRAY_ESCHEMA;
    }
  }
  return GRAY_OK;
}

/* RFC 9110 token characters, the legal bytes of header and cookie names. */
static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static const struct {
  const char *text;
  gray_attr_t attr;
  int named;
} attr_kinds[] = {
    {"header:", GRAY_ATTR_HEADER, 1}, {"cookie:", GRAY_ATTR_COOKIE, 1},
    {"param:", GRAY_ATTR_PARAM, 1},   {"ip", GRAY_ATTR_IP, 0},
    {"tag", GRAY_ATTR_TAG, 0},        {"path", GRAY_ATTR_PATH, 0},
    {"method", GRAY_ATTR_METHOD, 0},  {"host", GRAY_ATTR_HOST, 0},
};

int gray__attr_parse(gray__arena *a, gray_str_t text, gray__node *n, char *msg, size_t msgsz) {
  char q[96];
  for (size_t k = 0; k < sizeof(attr_kinds) / sizeof(attr_kinds[0]); k++) {
    size_t kl = strlen(attr_kinds[k].text);
    if (!attr_kinds[k].named) {
      if (text.len != kl || memcmp(text.p, attr_kinds[k].text, kl)) continue;
      n->attr = attr_kinds[k].attr;
      n->attr_text = attr_kinds[k].text;
      return GRAY_OK;
    }
    if (text.len < kl || memcmp(text.p, attr_kinds[k].text, kl)) continue;
    const char *name = text.p + kl;
    size_t len = text.len - kl;
    if (len == 0) {
      gray__msg(msg, msgsz, "attribute \"%s\" needs a name after the colon", attr_kinds[k].text);
      return GRAY_ESCHEMA;
    }
    if (len > GRAY_ATTR_NAME_LEN_MAX) {
      gray__msg(msg, msgsz, "attribute name is longer than %d bytes", GRAY_ATTR_NAME_LEN_MAX);
      return GRAY_ESCHEMA;
    }
    for (size_t i = 0; i < len; i++) {
      unsigned char c = (unsigned char)name[i];
      int ok = attr_kinds[k].attr == GRAY_ATTR_PARAM
                   ? (c >= 0x20 && c != 0x7f && c != '&' && c != '=' && c != '#')
                   : is_tchar(c);
      if (!ok) {
        gray__quote(text.p, text.len, q, sizeof q);
        gray__msg(msg, msgsz, "invalid character in attribute name %s", q);
        return GRAY_ESCHEMA;
      }
    }
    char *copy = gray__arena_strndup(a, text.p, text.len);
    if (!copy) return GRAY_ENOMEM;
    if (attr_kinds[k].attr == GRAY_ATTR_HEADER) {
      for (size_t i = kl; i < text.len; i++)
        if (copy[i] >= 'A' && copy[i] <= 'Z') copy[i] = (char)(copy[i] - 'A' + 'a');
    }
    n->attr = attr_kinds[k].attr;
    n->attr_text = copy;
    n->attr_name.p = copy + kl;
    n->attr_name.len = len;
    return GRAY_OK;
  }
  gray__quote(text.p, text.len, q, sizeof q);
  gray__msg(msg, msgsz,
            "unknown attribute %s (expected header:NAME, cookie:NAME, param:NAME, ip, tag, "
            "path, method or host)",
            q);
  return GRAY_ESCHEMA;
}

int gray__regex_compile(gray_policyset_t *set, gray__node *n, gray_str_t pattern, char *msg,
                        size_t msgsz) {
  int errcode = 0;
  PCRE2_SIZE erroff = 0;
  /* the required literal first: nothing to undo when its copy fails */
  char lit[GRAY__REGEX_LITERAL_MAX];
  size_t ll = gray__regex_literal(pattern.p, pattern.len, lit, sizeof lit);
  if (ll) {
    n->lit.p = gray__arena_strndup(&set->arena, lit, ll);
    if (!n->lit.p) return GRAY_ENOMEM;
    n->lit.len = ll;
  }
  gray__regex_list *item = gray__calloc(1, sizeof(*item));
  if (!item) return GRAY_ENOMEM;
  pcre2_compile_context *cctx = pcre2_compile_context_create(set->gctx);
  if (!cctx) {
    gray__free(item);
    return GRAY_ENOMEM;
  }
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern.p, pattern.len, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                                 &errcode, &erroff, cctx);
  pcre2_compile_context_free(cctx);
  if (!re) {
    gray__free(item);
    if (errcode == PCRE2_ERROR_NOMEMORY || errcode == PCRE2_ERROR_HEAP_FAILED) return GRAY_ENOMEM;
    PCRE2_UCHAR buf[160];
    if (pcre2_get_error_message(errcode, buf, sizeof buf) < 0) memcpy(buf, "error", 6);
    gray__msg(msg, msgsz, "invalid regex at offset %zu: %s", (size_t)erroff, (char *)buf);
    return GRAY_ESCHEMA;
  }
  /* JIT is an optimisation: a failure (for example no JIT on this CPU, or
   * out of executable memory) leaves the interpreter in charge. */
  n->jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
  pcre2_match_context *mctx = pcre2_match_context_create(set->gctx);
  if (!mctx) {
    pcre2_code_free(re);
    gray__free(item);
    return GRAY_ENOMEM;
  }
  pcre2_set_match_limit(mctx, GRAY_REGEX_MATCH_LIMIT);
  pcre2_set_depth_limit(mctx, GRAY_REGEX_DEPTH_LIMIT);
  item->re = re;
  item->mctx = mctx;
  item->next = set->regexes;
  set->regexes = item;
  n->re = re;
  n->mctx = mctx;
  return GRAY_OK;
}
