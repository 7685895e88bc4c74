/* JSON → compiled policy set. Every refusal names the JSON path. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "core/model.h"
#include "gray/json.h"
#include "json/internal.h"

typedef struct pctx {
  gray_policyset_t *set;
  gray_error_t *err;
  gray__jpath path;
  gray_policy_t *pol;
  gray_str_t salt; /* salt for percent conditions of the current rule */
  uint32_t nconds;
} pctx;

static int fail(pctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(pctx *c, int code, const char *fmt, ...) {
  char msg[GRAY_ERROR_TEXT_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  gray__error_set(c->err, (gray_err_t)code, c->path.buf, msg);
  return code;
}

/* A failure from a core helper that already wrote its message. */
static int fail_msg(pctx *c, int code, const char *msg) {
  if (code == GRAY_ENOMEM) return fail(c, code, "out of memory");
  gray__error_set(c->err, (gray_err_t)code, c->path.buf, msg);
  return code;
}

static const char *type_name(const json_t *j) {
  switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
  }
  return "?";
}

static int want(pctx *c, const json_t *j, json_type t, const char *what) {
  if (json_typeof(j) == t || (t == JSON_TRUE && json_is_boolean(j))) return GRAY_OK;
  return fail(c, GRAY_ESCHEMA, "must be %s, not %s", what, type_name(j));
}

/* Refuse keys not in `allowed` (NULL-terminated). The path of the error is
 * the unknown key itself. */
static int check_keys(pctx *c, json_t *obj, const char *const *allowed, const char *hint) {
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    int ok = 0;
    for (const char *const *a = allowed; *a; a++)
      if (!strcmp(*a, key)) ok = 1;
    if (!ok) {
      char q[96];
      gray__quote(key, strlen(key), q, sizeof q);
      size_t mark = gray__jpath_key(&c->path, key);
      int rc = fail(c, GRAY_ESCHEMA, "unknown key %s (allowed: %s)", q, hint);
      gray__jpath_pop(&c->path, mark);
      return rc;
    }
  }
  return GRAY_OK;
}

/* Copy a JSON string into the set's arena. */
static int get_str(pctx *c, json_t *j, size_t maxlen, gray_str_t *out) {
  int rc = want(c, j, JSON_STRING, "a string");
  if (rc) return rc;
  size_t len = json_string_length(j);
  if (len > maxlen) return fail(c, GRAY_ELIMIT, "string of %zu bytes is longer than %zu", len, maxlen);
  char *p = gray__arena_strndup(&c->set->arena, json_string_value(j), len);
  if (!p) return fail(c, GRAY_ENOMEM, "out of memory");
  out->p = p;
  out->len = len;
  return GRAY_OK;
}

static int get_name(pctx *c, json_t *j, gray_str_t *out) {
  char msg[GRAY_ERROR_TEXT_MAX];
  int rc = want(c, j, JSON_STRING, "a string");
  if (rc) return rc;
  gray_str_t s = {json_string_value(j), json_string_length(j)};
  rc = gray__check_name(s, msg, sizeof msg);
  if (rc) return fail_msg(c, rc, msg);
  return get_str(c, j, GRAY_NAME_LEN_MAX, out);
}

/* Fetch a member, descending the path into it. Required members that are
 * missing are reported at the object. */
static json_t *member(pctx *c, json_t *obj, const char *key, int required, int *rc) {
  json_t *v = json_object_get(obj, key);
  if (!v && required) *rc = fail(c, GRAY_ESCHEMA, "missing required key \"%s\"", key);
  return v;
}

static int parse_node(pctx *c, json_t *j, int depth, gray__node **out);

static int parse_kids(pctx *c, json_t *arr, gray__node *n, int depth) {
  int rc = want(c, arr, JSON_ARRAY, "an array of conditions");
  if (rc) return rc;
  size_t count = json_array_size(arr);
  if (count == 0) return fail(c, GRAY_ESCHEMA, "must hold at least one condition");
  n->kids = gray__arena_alloc(&c->set->arena, count * sizeof(*n->kids));
  if (!n->kids) return fail(c, GRAY_ENOMEM, "out of memory");
  for (size_t i = 0; i < count; i++) {
    size_t mark = gray__jpath_index(&c->path, i);
    rc = parse_node(c, json_array_get(arr, i), depth + 1, &n->kids[i]);
    if (rc) return rc;
    gray__jpath_pop(&c->path, mark);
  }
  n->nkids = (uint32_t)count;
  return GRAY_OK;
}

/* Keys each operator takes besides attr and op. */
static const char *const keys_value[] = {"attr", "op", "value", NULL};
static const char *const keys_none[] = {"attr", "op", NULL};
static const char *const keys_mod[] = {"attr", "op", "divisor", "eq", "lt", "in", NULL};
static const char *const keys_pct[] = {"attr", "op", "from", "to", NULL};

static int parse_percent_bound(pctx *c, json_t *j, uint32_t *bp) {
  if (!json_is_number(j)) return want(c, j, JSON_REAL, "a number from 0 to 100");
  double v = json_number_value(j);
  if (!(v >= 0 && v <= 100)) return fail(c, GRAY_ESCHEMA, "must be between 0 and 100, not %g", v);
  double b = v * 100.0;
  double r = floor(b + 0.5);
  if (fabs(b - r) > 1e-6) return fail(c, GRAY_ESCHEMA, "must be a multiple of 0.01 (one basis point), not %g", v);
  *bp = (uint32_t)r;
  return GRAY_OK;
}

static int parse_u64(pctx *c, json_t *j, uint64_t lo, uint64_t hi, uint64_t *out) {
  int rc = want(c, j, JSON_INTEGER, "an integer");
  if (rc) return rc;
  json_int_t v = json_integer_value(j);
  if (v < 0 || (uint64_t)v < lo || (uint64_t)v > hi)
    return fail(c, GRAY_ESCHEMA, "must be an integer from %llu to %llu, not %lld",
                (unsigned long long)lo, (unsigned long long)hi, (long long)v);
  *out = (uint64_t)v;
  return GRAY_OK;
}

static int u64_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int parse_mod(pctx *c, json_t *j, gray__node *n) {
  int rc = 0;
  size_t mark;
  json_t *d = member(c, j, "divisor", 1, &rc);
  if (!d) return rc;
  mark = gray__jpath_key(&c->path, "divisor");
  if ((rc = parse_u64(c, d, 1, UINT32_MAX, &n->divisor))) return rc;
  gray__jpath_pop(&c->path, mark);
  json_t *eq = json_object_get(j, "eq"), *lt = json_object_get(j, "lt"), *in = json_object_get(j, "in");
  if ((eq != NULL) + (lt != NULL) + (in != NULL) != 1)
    return fail(c, GRAY_ESCHEMA, "operator \"mod\" needs exactly one of \"eq\", \"lt\" or \"in\"");
  if (eq) {
    mark = gray__jpath_key(&c->path, "eq");
    n->mod_kind = GRAY__MOD_EQ;
    if ((rc = parse_u64(c, eq, 0, n->divisor - 1, &n->mod_value))) return rc;
  } else if (lt) {
    mark = gray__jpath_key(&c->path, "lt");
    n->mod_kind = GRAY__MOD_LT;
    if ((rc = parse_u64(c, lt, 1, n->divisor, &n->mod_value))) return rc;
  } else {
    mark = gray__jpath_key(&c->path, "in");
    n->mod_kind = GRAY__MOD_IN;
    if ((rc = want(c, in, JSON_ARRAY, "an array of integers"))) return rc;
    size_t count = json_array_size(in);
    if (count == 0) return fail(c, GRAY_ESCHEMA, "must hold at least one value");
    if (count > GRAY_VALUES_MAX)
      return fail(c, GRAY_ELIMIT, "has %zu values, more than the limit of %d", count, GRAY_VALUES_MAX);
    n->mod_list = gray__arena_alloc(&c->set->arena, count * sizeof(uint64_t));
    if (!n->mod_list) return fail(c, GRAY_ENOMEM, "out of memory");
    for (size_t i = 0; i < count; i++) {
      size_t m2 = gray__jpath_index(&c->path, i);
      if ((rc = parse_u64(c, json_array_get(in, i), 0, n->divisor - 1, &n->mod_list[i]))) return rc;
      gray__jpath_pop(&c->path, m2);
    }
    qsort(n->mod_list, count, sizeof(uint64_t), u64_cmp);
    n->nmod_list = (uint32_t)count;
  }
  gray__jpath_pop(&c->path, mark);
  return GRAY_OK;
}

static int parse_list(pctx *c, json_t *v, int allow_single, gray_str_t **out, size_t *count) {
  int rc;
  if (allow_single && json_is_string(v)) {
    *out = gray__arena_alloc(&c->set->arena, sizeof(gray_str_t));
    if (!*out) return fail(c, GRAY_ENOMEM, "out of memory");
    *count = 1;
    return get_str(c, v, GRAY_VALUE_LEN_MAX, &(*out)[0]);
  }
  if ((rc = want(c, v, JSON_ARRAY, allow_single ? "a string or an array of strings" : "an array of strings")))
    return rc;
  size_t n = json_array_size(v);
  if (n == 0) return fail(c, GRAY_ESCHEMA, "must hold at least one value");
  if (n > GRAY_VALUES_MAX) return fail(c, GRAY_ELIMIT, "has %zu values, more than the limit of %d", n, GRAY_VALUES_MAX);
  *out = gray__arena_alloc(&c->set->arena, n * sizeof(gray_str_t));
  if (!*out) return fail(c, GRAY_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    size_t mark = gray__jpath_index(&c->path, i);
    if ((rc = get_str(c, json_array_get(v, i), GRAY_VALUE_LEN_MAX, &(*out)[i]))) return rc;
    gray__jpath_pop(&c->path, mark);
  }
  *count = n;
  return GRAY_OK;
}

static int parse_leaf(pctx *c, json_t *j, gray__node *n) {
  char msg[GRAY_ERROR_TEXT_MAX];
  int rc = 0;
  size_t mark;
  json_t *attr = member(c, j, "attr", 1, &rc);
  if (!attr) return rc;
  json_t *op = member(c, j, "op", 1, &rc);
  if (!op) return rc;
  n->kind = GRAY__N_COND;

  mark = gray__jpath_key(&c->path, "attr");
  if ((rc = want(c, attr, JSON_STRING, "a string"))) return rc;
  gray_str_t at = {json_string_value(attr), json_string_length(attr)};
  if ((rc = gray__attr_parse(&c->set->arena, at, n, msg, sizeof msg))) return fail_msg(c, rc, msg);
  gray__jpath_pop(&c->path, mark);

  mark = gray__jpath_key(&c->path, "op");
  if ((rc = want(c, op, JSON_STRING, "a string"))) return rc;
  n->op = gray__op_parse(json_string_value(op), json_string_length(op));
  if (n->op == GRAY__OP_NONE) {
    char q[96];
    gray__quote(json_string_value(op), json_string_length(op), q, sizeof q);
    return fail(c, GRAY_ESCHEMA,
                "unknown operator %s (expected eq, ne, in, prefix, suffix, contains, regex, exists, "
                "lt, le, gt, ge, mod, cidr or percent)", q);
  }
  gray__jpath_pop(&c->path, mark);

  const char *const *keys = keys_value;
  const char *hint = "attr, op, value";
  switch (n->op) {
    case GRAY__OP_EXISTS: keys = keys_none; hint = "attr, op"; break;
    case GRAY__OP_MOD: keys = keys_mod; hint = "attr, op, divisor, eq, lt, in"; break;
    case GRAY__OP_PERCENT: keys = keys_pct; hint = "attr, op, from, to"; break;
    default: break;
  }
  if ((rc = check_keys(c, j, keys, hint))) return rc;

  json_t *v = NULL;
  if (keys == keys_value) {
    if (!(v = member(c, j, "value", 1, &rc))) return rc;
  }
  mark = gray__jpath_key(&c->path, "value");
  switch (n->op) {
    case GRAY__OP_EQ:
    case GRAY__OP_NE:
    case GRAY__OP_PREFIX:
    case GRAY__OP_SUFFIX:
    case GRAY__OP_CONTAINS:
      if ((rc = get_str(c, v, GRAY_VALUE_LEN_MAX, &n->value))) return rc;
      break;
    case GRAY__OP_REGEX:
      if ((rc = get_str(c, v, GRAY_VALUE_LEN_MAX, &n->value))) return rc;
      if ((rc = gray__regex_compile(c->set, n, n->value, msg, sizeof msg))) return fail_msg(c, rc, msg);
      break;
    case GRAY__OP_IN: {
      gray_str_t *vals;
      size_t count;
      if ((rc = parse_list(c, v, 0, &vals, &count))) return rc;
      if (gray__strset_build(&c->set->arena, n, vals, count)) return fail(c, GRAY_ENOMEM, "out of memory");
      break;
    }
    case GRAY__OP_CIDR: {
      gray_str_t *vals;
      size_t count;
      if ((rc = parse_list(c, v, 1, &vals, &count))) return rc;
      n->cidrs = gray__arena_alloc(&c->set->arena, count * sizeof(*n->cidrs));
      if (!n->cidrs) return fail(c, GRAY_ENOMEM, "out of memory");
      for (size_t i = 0; i < count; i++) {
        size_t m2 = json_is_array(v) ? gray__jpath_index(&c->path, i) : c->path.len;
        if ((rc = gray__cidr_parse(vals[i], &n->cidrs[i], msg, sizeof msg))) return fail_msg(c, rc, msg);
        gray__jpath_pop(&c->path, m2);
      }
      n->ncidrs = (uint32_t)count;
      break;
    }
    case GRAY__OP_LT:
    case GRAY__OP_LE:
    case GRAY__OP_GT:
    case GRAY__OP_GE:
      if (!json_is_number(v)) return want(c, v, JSON_REAL, "a number");
      n->num = json_number_value(v);
      break;
    case GRAY__OP_EXISTS:
      break;
    case GRAY__OP_MOD:
      gray__jpath_pop(&c->path, mark);
      if ((rc = parse_mod(c, j, n))) return rc;
      break;
    case GRAY__OP_PERCENT: {
      gray__jpath_pop(&c->path, mark);
      json_t *from = json_object_get(j, "from"), *to = member(c, j, "to", 1, &rc);
      if (!to) return rc;
      n->pct_from = 0;
      if (from) {
        mark = gray__jpath_key(&c->path, "from");
        if ((rc = parse_percent_bound(c, from, &n->pct_from))) return rc;
        gray__jpath_pop(&c->path, mark);
      }
      mark = gray__jpath_key(&c->path, "to");
      if ((rc = parse_percent_bound(c, to, &n->pct_to))) return rc;
      if (n->pct_to < n->pct_from)
        return fail(c, GRAY_ESCHEMA, "\"to\" (%g) is below \"from\" (%g)", n->pct_to / 100.0,
                    n->pct_from / 100.0);
      n->salt = c->salt;
      break;
    }
    default:
      break;
  }
  gray__jpath_pop(&c->path, mark);
  return GRAY_OK;
}

static int parse_node(pctx *c, json_t *j, int depth, gray__node **out) {
  int rc = want(c, j, JSON_OBJECT, "an object (a condition, or all/any/not)");
  if (rc) return rc;
  if (depth > GRAY_DEPTH_MAX)
    return fail(c, GRAY_ELIMIT, "conditions are nested deeper than the limit of %d levels", GRAY_DEPTH_MAX);
  if (++c->nconds > GRAY_CONDITIONS_MAX)
    return fail(c, GRAY_ELIMIT, "policy has more than the limit of %d conditions", GRAY_CONDITIONS_MAX);
  gray__node *n = gray__arena_alloc(&c->set->arena, sizeof(*n));
  if (!n) return fail(c, GRAY_ENOMEM, "out of memory");
  *out = n;
  static const char *const comb[] = {"all", "any", "not"};
  for (int k = 0; k < 3; k++) {
    json_t *v = json_object_get(j, comb[k]);
    if (!v) continue;
    if (json_object_size(j) != 1) {
      /* Report the first key that does not belong. */
      const char *key;
      json_t *x;
      json_object_foreach(j, key, x) {
        if (strcmp(key, comb[k])) {
          size_t mark = gray__jpath_key(&c->path, key);
          rc = fail(c, GRAY_ESCHEMA, "\"%s\" cannot be combined with other keys in one condition",
                    comb[k]);
          gray__jpath_pop(&c->path, mark);
          return rc;
        }
      }
    }
    size_t mark = gray__jpath_key(&c->path, comb[k]);
    if (k == 2) {
      n->kind = GRAY__N_NOT;
      n->kids = gray__arena_alloc(&c->set->arena, sizeof(*n->kids));
      if (!n->kids) return fail(c, GRAY_ENOMEM, "out of memory");
      n->nkids = 1;
      if ((rc = parse_node(c, v, depth + 1, &n->kids[0]))) return rc;
    } else {
      n->kind = k == 0 ? GRAY__N_ALL : GRAY__N_ANY;
      if ((rc = parse_kids(c, v, n, depth))) return rc;
    }
    gray__jpath_pop(&c->path, mark);
    return GRAY_OK;
  }
  if (!json_object_get(j, "attr") && !json_object_get(j, "op") && json_object_size(j) > 0) {
    const char *key = json_object_iter_key(json_object_iter(j));
    char q[96];
    gray__quote(key, strlen(key), q, sizeof q);
    size_t mark = gray__jpath_key(&c->path, key);
    rc = fail(c, GRAY_ESCHEMA, "unknown key %s (a condition has attr and op, or one of all, any, not)", q);
    gray__jpath_pop(&c->path, mark);
    return rc;
  }
  return parse_leaf(c, j, n);
}

static int parse_rule(pctx *c, json_t *j, gray__rule *r) {
  static const char *const keys[] = {"name", "route", "tag", "salt", "when", NULL};
  int rc = want(c, j, JSON_OBJECT, "an object (a rule)");
  if (rc) return rc;
  if ((rc = check_keys(c, j, keys, "name, route, tag, salt, when"))) return rc;
  json_t *name = member(c, j, "name", 1, &rc);
  if (!name) return rc;
  json_t *route = member(c, j, "route", 1, &rc);
  if (!route) return rc;
  size_t mark = gray__jpath_key(&c->path, "name");
  if ((rc = get_name(c, name, &r->name))) return rc;
  gray__jpath_pop(&c->path, mark);
  mark = gray__jpath_key(&c->path, "route");
  if ((rc = get_name(c, route, &r->route))) return rc;
  gray__jpath_pop(&c->path, mark);
  json_t *v;
  if ((v = json_object_get(j, "tag"))) {
    mark = gray__jpath_key(&c->path, "tag");
    if ((rc = get_name(c, v, &r->tag))) return rc;
    gray__jpath_pop(&c->path, mark);
  }
  c->salt = c->pol->service;
  if ((v = json_object_get(j, "salt"))) {
    mark = gray__jpath_key(&c->path, "salt");
    if ((rc = get_str(c, v, GRAY_NAME_LEN_MAX * 4, &r->salt))) return rc;
    if (r->salt.len == 0) return fail(c, GRAY_ESCHEMA, "must not be empty");
    gray__jpath_pop(&c->path, mark);
    c->salt = r->salt;
  }
  if ((v = json_object_get(j, "when"))) {
    mark = gray__jpath_key(&c->path, "when");
    if ((rc = parse_node(c, v, 1, &r->when))) return rc;
    gray__jpath_pop(&c->path, mark);
  }
  return GRAY_OK;
}

static int parse_policy(pctx *c, json_t *j, gray_policy_t *p) {
  static const char *const keys[] = {"service", "default", "fallback", "description", "rules", NULL};
  int rc = want(c, j, JSON_OBJECT, "an object (a policy)");
  if (rc) return rc;
  if ((rc = check_keys(c, j, keys, "service, default, fallback, description, rules"))) return rc;
  c->pol = p;
  c->nconds = 0;
  json_t *svc = member(c, j, "service", 1, &rc);
  if (!svc) return rc;
  json_t *def = member(c, j, "default", 1, &rc);
  if (!def) return rc;
  size_t mark = gray__jpath_key(&c->path, "service");
  if ((rc = get_name(c, svc, &p->service))) return rc;
  gray__jpath_pop(&c->path, mark);
  mark = gray__jpath_key(&c->path, "default");
  if ((rc = get_name(c, def, &p->def))) return rc;
  gray__jpath_pop(&c->path, mark);
  json_t *v;
  if ((v = json_object_get(j, "fallback"))) {
    mark = gray__jpath_key(&c->path, "fallback");
    if ((rc = want(c, v, JSON_STRING, "a string"))) return rc;
    if (!strcmp(json_string_value(v), "fail"))
      p->fallback_fail = 1;
    else if (strcmp(json_string_value(v), "default"))
      return fail(c, GRAY_ESCHEMA, "must be \"default\" or \"fail\"");
    gray__jpath_pop(&c->path, mark);
  }
  if ((v = json_object_get(j, "description"))) {
    gray_str_t ignored;
    mark = gray__jpath_key(&c->path, "description");
    if ((rc = get_str(c, v, 1024, &ignored))) return rc;
    gray__jpath_pop(&c->path, mark);
  }
  if ((v = json_object_get(j, "rules"))) {
    mark = gray__jpath_key(&c->path, "rules");
    if ((rc = want(c, v, JSON_ARRAY, "an array of rules"))) return rc;
    size_t n = json_array_size(v);
    if (n > GRAY_RULES_MAX)
      return fail(c, GRAY_ELIMIT, "has %zu rules, more than the limit of %d", n, GRAY_RULES_MAX);
    p->rules = gray__arena_alloc(&c->set->arena, (n ? n : 1) * sizeof(*p->rules));
    if (!p->rules) return fail(c, GRAY_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
      size_t m2 = gray__jpath_index(&c->path, i);
      if ((rc = parse_rule(c, json_array_get(v, i), &p->rules[i]))) return rc;
      for (size_t k = 0; k < i; k++) {
        if (p->rules[k].name.len == p->rules[i].name.len &&
            !memcmp(p->rules[k].name.p, p->rules[i].name.p, p->rules[i].name.len)) {
          gray__jpath_key(&c->path, "name");
          return fail(c, GRAY_ESCHEMA, "duplicate rule name \"%s\" (also rules[%zu])",
                      p->rules[i].name.p, k);
        }
      }
      gray__jpath_pop(&c->path, m2);
    }
    p->nrules = (uint32_t)n;
    gray__jpath_pop(&c->path, mark);
  }
  p->nconds = c->nconds;
  return GRAY_OK;
}

static int parse_doc(pctx *c, json_t *root, int flags) {
  int rc;
  if (!json_is_object(root)) return fail(c, GRAY_ESCHEMA, "must be an object (a policy, or a set with \"policies\"), not %s", type_name(root));
  int is_set = json_object_get(root, "policies") != NULL;
  if (flags == GRAY_PARSE_ONE && is_set)
    return fail(c, GRAY_ESCHEMA, "expected one policy object, not a set with \"policies\"");
  if (flags == GRAY_PARSE_SET && !is_set)
    return fail(c, GRAY_ESCHEMA, "missing required key \"policies\"");
  if (!is_set) {
    c->set->policies = gray__arena_alloc(&c->set->arena, sizeof(gray_policy_t));
    if (!c->set->policies) return fail(c, GRAY_ENOMEM, "out of memory");
    if ((rc = parse_policy(c, root, &c->set->policies[0]))) return rc;
    c->set->npolicies = 1;
    rc = gray__set_finish(c->set, NULL);
    return rc ? fail(c, rc, "out of memory") : GRAY_OK;
  }
  static const char *const keys[] = {"revision", "policies", NULL};
  if ((rc = check_keys(c, root, keys, "revision, policies"))) return rc;
  json_t *rev = json_object_get(root, "revision");
  if (rev) {
    size_t mark = gray__jpath_key(&c->path, "revision");
    if ((rc = want(c, rev, JSON_INTEGER, "an integer"))) return rc;
    if (json_integer_value(rev) < 0) return fail(c, GRAY_ESCHEMA, "must not be negative");
    c->set->revision = json_integer_value(rev);
    gray__jpath_pop(&c->path, mark);
  }
  json_t *pols = json_object_get(root, "policies");
  size_t mark = gray__jpath_key(&c->path, "policies");
  if ((rc = want(c, pols, JSON_ARRAY, "an array of policies"))) return rc;
  size_t n = json_array_size(pols);
  if (n > GRAY_POLICIES_MAX)
    return fail(c, GRAY_ELIMIT, "has %zu policies, more than the limit of %d", n, GRAY_POLICIES_MAX);
  c->set->policies = gray__arena_alloc(&c->set->arena, (n ? n : 1) * sizeof(gray_policy_t));
  if (!c->set->policies) return fail(c, GRAY_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    size_t m2 = gray__jpath_index(&c->path, i);
    if ((rc = parse_policy(c, json_array_get(pols, i), &c->set->policies[i]))) return rc;
    gray__jpath_pop(&c->path, m2);
  }
  c->set->npolicies = n;
  size_t dup = 0;
  rc = gray__set_finish(c->set, &dup);
  if (rc == GRAY_ENOMEM) return fail(c, rc, "out of memory");
  if (rc) {
    gray__jpath_index(&c->path, dup);
    gray__jpath_key(&c->path, "service");
    /* After sorting the policy at `dup` moved; find its name by order. */
    const char *name = "";
    for (size_t i = 0; i < n; i++)
      if (c->set->policies[i].order == dup) name = c->set->policies[i].service.p;
    return fail(c, GRAY_ESCHEMA, "duplicate service \"%s\": a set holds one policy per service", name);
  }
  gray__jpath_pop(&c->path, mark);
  return GRAY_OK;
}

int gray_policyset_parse(const char *buf, size_t len, int flags, gray_policyset_t **out,
                         gray_error_t *err) {
  pctx c;
  json_error_t jerr;
  int rc;
  memset(&c, 0, sizeof c);
  c.err = err;
  *out = NULL;
  if (!buf) return fail(&c, GRAY_EINVAL, "no input");
  if (len > GRAY_POLICY_FILE_MAX)
    return fail(&c, GRAY_ETOOBIG, "document is %zu bytes, over the limit of %d bytes", len, GRAY_POLICY_FILE_MAX);
  json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) return gray__json_syntax_error(buf, len, &jerr, err);
  c.set = gray__set_new();
  if (!c.set) {
    json_decref(root);
    return fail(&c, GRAY_ENOMEM, "out of memory");
  }
  rc = parse_doc(&c, root, flags);
  json_decref(root);
  if (rc) {
    gray_policyset_release(c.set);
    return rc;
  }
  *out = c.set;
  if (err) memset(err, 0, sizeof *err);
  return GRAY_OK;
}

int gray_policyset_load_file(const char *path, int flags, gray_policyset_t **out, gray_error_t *err) {
  char *buf = NULL;
  size_t len = 0;
  int rc = gray__read_file(path, GRAY_POLICY_FILE_MAX, &buf, &len, err);
  *out = NULL;
  if (rc) return rc;
  rc = gray_policyset_parse(buf, len, flags, out, err);
  gray__free(buf);
  return rc;
}
