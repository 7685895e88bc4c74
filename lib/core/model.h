/* Internal: the compiled policy model, shared by lib/core and lib/json.
 * The JSON front-end fills these structures through the helpers declared
 * here (each validates its piece and says what is wrong); once a set is
 * complete it is immutable. */
#ifndef GRAY_CORE_MODEL_H
#define GRAY_CORE_MODEL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdatomic.h>
#include <string.h>

#include "gray/policy.h"
#include "util/alloc.h"

typedef enum {
  GRAY__N_ALL = 1,
  GRAY__N_ANY,
  GRAY__N_NOT,
  GRAY__N_COND
} gray__node_kind;

/* Operators, in the order of their names in gray__op_names. */
#define GRAY__OP_MAP(X) \
  X(EQ, "eq")           \
  X(NE, "ne")           \
  X(IN, "in")           \
  X(PREFIX, "prefix")   \
  X(SUFFIX, "suffix")   \
  X(CONTAINS, "contains") \
  X(REGEX, "regex")     \
  X(EXISTS, "exists")   \
  X(LT, "lt")           \
  X(LE, "le")           \
  X(GT, "gt")           \
  X(GE, "ge")           \
  X(MOD, "mod")         \
  X(CIDR, "cidr")       \
  X(PERCENT, "percent")

typedef enum {
  GRAY__OP_NONE = 0,
#define GRAY__OP_ENUM(name, text) GRAY__OP_##name,
  GRAY__OP_MAP(GRAY__OP_ENUM)
#undef GRAY__OP_ENUM
  GRAY__OP_COUNT
} gray__op;

/* The operator named text, or GRAY__OP_NONE. */
gray__op gray__op_parse(const char *text, size_t len);
const char *gray__op_name(gray__op op);

/* A set of strings for `in`: open addressing over a hash of its own. A slot
 * holds the hash, the length and the bytes' address together, so a lookup
 * that finds nothing reads one cache line of the table. */
typedef struct gray__strset_slot {
  uint32_t hash;
  uint32_t len;
  const char *p; /* NULL: empty */
} gray__strset_slot;

typedef struct gray__strset {
  uint32_t mask; /* slots - 1 */
  uint32_t count;
  gray__strset_slot *slots;
} gray__strset;

typedef struct gray__cidr {
  uint8_t addr[16]; /* IPv4 as IPv4-mapped IPv6 */
  uint8_t bits;     /* prefix length over the 128-bit form */
  /* addr and the prefix mask as two words each, in memory order (set by
   * gray__cidr_finish): a match is two masked compares */
  uint64_t net[2], mask[2];
} gray__cidr;

typedef enum { GRAY__MOD_EQ = 1, GRAY__MOD_LT, GRAY__MOD_IN } gray__mod_kind;

typedef struct gray__node gray__node;
struct gray__node {
  gray__node_kind kind;
  /* ALL / ANY / NOT */
  gray__node **kids;
  uint32_t nkids;
  /* COND */
  gray__op op;
  gray_attr_t attr;
  gray_str_t attr_name;  /* header (lower-case), cookie, param name */
  const char *attr_text; /* "header:x-gray", for traces */
  gray_str_t value;      /* eq ne prefix suffix contains; regex source */
  gray__strset *set;     /* in */
  pcre2_code *re;
  pcre2_match_context *mctx;
  int jit;               /* re was JIT-compiled */
  gray_str_t lit;        /* regex: bytes every match contains (len 0: none known) */
  double num;            /* lt le gt ge */
  uint64_t divisor;      /* mod */
  gray__mod_kind mod_kind;
  uint64_t mod_value;    /* mod eq / lt */
  uint64_t *mod_list;    /* mod in, sorted */
  uint32_t nmod_list;
  gray__cidr *cidrs;
  uint32_t ncidrs;
  uint32_t pct_from, pct_to; /* basis points */
  gray_str_t salt;           /* percent */
  uint32_t slot;             /* index into the policy's slots (gray__set_finish) */
  int slot_shared;           /* another condition (or the tag) reads it too */
};

typedef struct gray__rule {
  gray_str_t name, route, tag, salt; /* tag.p / salt.p NULL when unset */
  gray__node *when;                  /* NULL: always */
} gray__rule;

/* One distinct attribute a policy reads (kind and name): its conditions
 * refer to it by index, so a decision looks each one up once however many
 * conditions test it, and an executor can find several in one pass over
 * its request (the header slots' names with their hashes). */
typedef struct gray__slot {
  gray_attr_t attr;
  gray_str_t name; /* header (lower-case), cookie, param name; else empty */
  /* header: the name's hash as nginx computes it for a request header
   * (h = h * 31 + c over the lower-case name, see ngx_hash), or 0 when the
   * name has a character outside a-z, 0-9 and '-', which nginx's parser
   * leaves out of its hash; 0 for the other kinds */
  uint64_t hash31;
} gray__slot;

/* Decisions cache the first GRAY__SLOTS_CACHED slots' values. */
#define GRAY__SLOTS_CACHED 64

struct gray_policy_s {
  gray_str_t service;
  gray_str_t def;
  int fallback_fail;
  gray__rule *rules;
  uint32_t nrules;
  uint32_t nconds;
  uint32_t order; /* position in the input, for error reports */
  gray__slot *slots; /* the distinct attributes, in order of first use */
  uint32_t nslots;
  uint32_t tag_slot;  /* `tag`, which every decision without a rule tag reads */
  int tag_shared;     /* a condition reads `tag` too */
  uint32_t *header_slots; /* indexes of the header slots, ascending */
  uint32_t nheader_slots;
  uint32_t *cookie_slots; /* indexes of the cookie slots, ascending */
  uint32_t ncookie_slots;
  /* by hash31 % 64: 0 no header slot has it, i + 1 header slot i alone
   * (i < 254), 255 several (or a later slot): a header whose nginx hash
   * maps to 0 is none of the slots (unless header_by_name) */
  uint8_t header_owner[64];
  int header_by_name; /* some header slot has hash31 0 */
  /* by a cookie name's length (63: 63 or more): 0 no cookie slot has it,
   * i + 1 cookie slot i alone (i < 254), 255 several (or a later slot) */
  uint8_t cookie_owner[64];
};

/* Enter item i into an owner table entry (header_owner, cookie_owner):
 * 0 becomes i + 1, anything else (or i >= 254) 255, "several". */
static inline void gray__owner_mark(uint8_t *o, uint32_t i) {
  *o = *o || i >= 254 ? 255 : (uint8_t)(i + 1);
}


typedef struct gray__regex_list gray__regex_list;

struct gray_policyset_s {
  atomic_int refs;
  int64_t revision;
  gray_policy_t *policies; /* sorted by service after gray__set_finish */
  size_t npolicies;
  gray__arena arena;
  gray__regex_list *regexes;  /* compiled patterns to free */
  pcre2_general_context *gctx;
};

/* Builder: a new empty set with one reference, or NULL. */
gray_policyset_t *gray__set_new(void);
/* Sort and freeze; on a duplicate service returns its index through *dup
 * and GRAY_ESCHEMA. */
int gray__set_finish(gray_policyset_t *set, size_t *dup);

/* Validation helpers. Each returns GRAY_OK or an error code and writes a
 * message (without the path) into msg. */
int gray__check_name(gray_str_t s, char *msg, size_t msgsz);
/* 1 when h is an IPv4 or IPv6 literal or a DNS host name (dot-separated
 * labels of letters, digits and '-', each 1..63 bytes, not starting or
 * ending with '-'; 253 bytes at most): what grayd accepts as an instance
 * address and what may be rendered into an upstream. */
int gray__host_valid(const char *h);
int gray__attr_parse(gray__arena *a, gray_str_t text, gray__node *n, char *msg, size_t msgsz);
int gray__cidr_parse(gray_str_t text, gray__cidr *out, char *msg, size_t msgsz);
/* The longest run of bytes (at most min(cap, GRAY__REGEX_LITERAL_MAX)) that
 * every match of pattern, compiled as gray__regex_compile does, contains;
 * copied to out, its length returned; 0 when none is known (lib/core/rxlit.c). */
#define GRAY__REGEX_LITERAL_MAX 32
size_t gray__regex_literal(const char *pattern, size_t len, char *out, size_t cap);
int gray__regex_compile(gray_policyset_t *set, gray__node *n, gray_str_t pattern,
                        char *msg, size_t msgsz);
/* Builds n->set from values (which must stay valid: they are arena copies).
 * Duplicates are allowed and collapse. */
int gray__strset_build(gray__arena *a, gray__node *n, const gray_str_t *values, size_t count);
int gray__strset_has(const gray__strset *s, const char *p, size_t len);
/* Parse a decimal number from an attribute value (at most
 * GRAY__NUMBER_TEXT_MAX bytes). 1 ok, 0 not a number. */
#define GRAY__NUMBER_TEXT_MAX 400
int gray__parse_number(const char *p, size_t len, double *out);
/* Value mod divisor for an all-digit string; 1 ok, 0 not a non-negative
 * integer. Any length. */
int gray__parse_mod(const char *p, size_t len, uint64_t divisor, uint64_t *rem);
/* Parse a textual IP literal; 1 ok. */
int gray__ip_parse(const char *p, size_t len, uint8_t out[16]);
/* Fill net and mask from addr and bits (gray__cidr_parse does). */
void gray__cidr_finish(gray__cidr *c);
static inline int gray__cidr_match(const gray__cidr *c, const uint8_t ip[16]) {
  uint64_t w[2];
  memcpy(w, ip, sizeof w);
  return (w[0] & c->mask[0]) == c->net[0] && (w[1] & c->mask[1]) == c->net[1];
}

/* The cookies of one Cookie header value, in order: *pos starts at 0 and
 * is advanced past the cookie returned. Returns 1 and sets *name and *value
 * (unquoted, borrowed from header), or 0 when no cookie is left. Pairs
 * without '=' are skipped. gray_cookie_find is the first cookie whose name
 * equals; an executor may parse a header once with this and search the
 * result. */
static inline int gray__is_ows(char c) { return c == ' ' || c == '\t'; }
/* (inline: the nginx module calls it once per cookie of a request) */
static inline int gray__cookie_next(gray_str_t header, size_t *pos, gray_str_t *name,
                                    gray_str_t *value) {
  if (!header.p) return 0;
  const char *p = header.p + *pos, *end = header.p + header.len;
  while (p < end) {
    while (p < end && (gray__is_ows(*p) || *p == ';')) p++;
    if (p == end) break;
    /* the pair ends at the next ';'; its name, at the first '=' in it */
    const char *semi = memchr(p, ';', (size_t)(end - p));
    if (!semi) semi = end;
    const char *k = p;
    const char *eq = memchr(p, '=', (size_t)(semi - p));
    p = eq ? eq : semi;
    const char *kend = p;
    while (kend > k && gray__is_ows(kend[-1])) kend--;
    if (eq) {
      const char *v = ++p;
      p = semi;
      const char *vend = p;
      while (vend > v && gray__is_ows(vend[-1])) vend--;
      while (v < vend && gray__is_ows(*v)) v++;
      /* RFC 6265 allows a quoted value; the quotes are not part of it. */
      if (vend - v >= 2 && *v == '"' && vend[-1] == '"') {
        v++;
        vend--;
      }
      name->p = k;
      name->len = (size_t)(kend - k);
      value->p = v;
      value->len = (size_t)(vend - v);
      *pos = (size_t)(p - header.p);
      return 1;
    }
  }
  *pos = header.len;
  return 0;
}

/* The client address from X-Forwarded-For values (each a comma-separated
 * list; a later header value continues the list): the rightmost element
 * that trusted(ctx, p, len) says is not a trusted proxy, else the leftmost
 * element. Elements are trimmed of spaces and tabs and taken as written
 * (an element that is no address is an answer too: it is not trusted).
 * Empty elements are skipped. Returns 1 and *out (borrowed from values),
 * or 0 when the values hold no element at all. Reads only within
 * values[i].p[0 .. len). */
int gray__xff_client(const gray_str_t *values, size_t n,
                     int (*trusted)(void *ctx, const char *p, size_t len), void *ctx,
                     gray_str_t *out);

/* Quote a user-supplied value for an error message: escapes control bytes
 * and quotes, truncates long values with "...". */
void gray__quote(const char *p, size_t len, char *out, size_t outsz);

/* snprintf into msg, never overflowing. */
void gray__msg(char *msg, size_t msgsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill a gray_error_t. */
void gray__error_set(gray_error_t *e, gray_err_t code, const char *path, const char *msg);

#endif
