/* Unit tests for lib/core: hashing, request helpers, matching primitives. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/model.h"
#include "gray/json.h"

static gray_str_t S(const char *s) {
  gray_str_t r = {s, strlen(s)};
  return r;
}

static void test_murmur3_vectors(void **state) {
  (void)state;
  /* DESIGN.md's vector, and the reference implementation's known values. */
  assert_int_equal(gray_murmur3_32("hello", 5, 0), 0x248bfa47u);
  assert_int_equal(gray_murmur3_32("", 0, 0), 0u);
  assert_int_equal(gray_murmur3_32("", 0, 1), 0x514e28b7u);
  assert_int_equal(gray_murmur3_32("The quick brown fox jumps over the lazy dog", 43, 0), 0x2e4ff723u);
}

static void test_percent_bucket_streams(void **state) {
  (void)state;
  /* The streaming bucket equals hashing the concatenation, for every split
   * of salt and value across the 4-byte block boundary. */
  const char *full = "order:1234567890abcdef";
  for (size_t cut = 0; cut < 10; cut++) {
    char salt[32], value[32];
    memcpy(salt, "order-service-x", cut);
    salt[cut] = '\0';
    snprintf(value, sizeof value, "v%zu-abcdef", cut);
    char cat[80];
    int n = snprintf(cat, sizeof cat, "%s:%s", salt, value);
    assert_int_equal(gray_percent_bucket(S(salt), S(value)), gray_murmur3_32(cat, (size_t)n, 0) % 10000);
  }
  assert_int_equal(gray_percent_bucket(S("order"), S("1234567890abcdef")),
                   gray_murmur3_32(full, strlen(full), 0) % 10000);
}

static void test_cookie_find(void **state) {
  (void)state;
  gray_str_t v;
  assert_true(gray_cookie_find(S("a=1; uid=42; b=\"x y\""), S("uid"), &v));
  assert_int_equal(v.len, 2);
  assert_memory_equal(v.p, "42", 2);
  assert_true(gray_cookie_find(S("a=1; b=\"x y\""), S("b"), &v));
  assert_int_equal(v.len, 3);
  assert_memory_equal(v.p, "x y", 3);
  assert_false(gray_cookie_find(S("auid=1; uidx=2"), S("uid"), &v));
  assert_true(gray_cookie_find(S("  k =  v  ;"), S("k"), &v));
  assert_int_equal(v.len, 1);
  assert_false(gray_cookie_find(S(""), S("k"), &v));
  assert_true(gray_cookie_find(S("e="), S("e"), &v));
  assert_int_equal(v.len, 0);
  assert_false(gray_cookie_find(S("noequals; k"), S("k"), &v));
  gray_str_t none = {NULL, 0};
  assert_false(gray_cookie_find(none, S("k"), &v));
}

static void test_cookie_next(void **state) {
  (void)state;
  /* Every pair in order, pairs without '=' skipped, quotes removed, and
   * resumable from *pos; an empty or absent header yields nothing. */
  const char *hdr = " a=1;junk; b = \"x y\" ;;c=;d=4";
  const char *names[] = {"a", "b", "c", "d"};
  const char *values[] = {"1", "x y", "", "4"};
  gray_str_t k, v;
  size_t pos = 0, n = 0;
  while (gray__cookie_next(S(hdr), &pos, &k, &v)) {
    assert_true(n < 4);
    assert_int_equal(k.len, strlen(names[n]));
    assert_memory_equal(k.p, names[n], k.len);
    assert_int_equal(v.len, strlen(values[n]));
    if (v.len) assert_memory_equal(v.p, values[n], v.len);
    assert_true(pos <= strlen(hdr));
    n++;
  }
  assert_int_equal(n, 4);
  assert_int_equal(pos, strlen(hdr));
  assert_false(gray__cookie_next(S(hdr), &pos, &k, &v)); /* stays at the end */
  pos = 0;
  assert_false(gray__cookie_next(S(""), &pos, &k, &v));
  gray_str_t none = {NULL, 0};
  pos = 0;
  assert_false(gray__cookie_next(none, &pos, &k, &v));
  /* gray_cookie_find is the first of that name */
  assert_true(gray_cookie_find(S("u=1; u=2"), S("u"), &v));
  assert_memory_equal(v.p, "1", 1);
}

static int trust_ten(void *ctx, const char *p, size_t len) {
  int *calls = ctx;
  (*calls)++;
  return len >= 3 && !memcmp(p, "10.", 3);
}

static void test_xff_client(void **state) {
  (void)state;
  struct {
    const char *v[3];
    const char *want; /* NULL: no element */
  } cases[] = {
      {{"1.1.1.1, 10.0.0.1"}, "1.1.1.1"},
      {{"10.0.0.2, 10.0.0.1"}, "10.0.0.2"},        /* all trusted: the leftmost */
      {{"1.1.1.1", "2.2.2.2, 10.0.0.1"}, "2.2.2.2"}, /* the last header is the right end */
      {{"1.1.1.1", "10.0.0.9"}, "1.1.1.1"},        /* ... and continues the earlier one */
      {{" , ,\t"}, NULL},
      {{"", ""}, NULL},
      {{" ,5.5.5.5 ,, "}, "5.5.5.5"},
      {{"not-an-ip, 10.0.0.1"}, "not-an-ip"},    /* as written: not trusted, so the answer */
      {{"a b , 10.1.1.1"}, "a b"},
      {{","}, NULL},
      {{"10.0.0.5,,\t 10.0.0.6"}, "10.0.0.5"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    gray_str_t vals[3];
    size_t n = 0;
    while (n < 3 && cases[c].v[n]) {
      vals[n] = S(cases[c].v[n]);
      n++;
    }
    gray_str_t out = {NULL, 0};
    int calls = 0;
    int found = gray__xff_client(vals, n, trust_ten, &calls, &out);
    if (!cases[c].want) {
      assert_int_equal(found, 0);
      assert_int_equal(calls, 0);
      continue;
    }
    assert_int_equal(found, 1);
    assert_int_equal(out.len, strlen(cases[c].want));
    assert_memory_equal(out.p, cases[c].want, out.len);
  }
  gray_str_t none = {NULL, 0}, out = {NULL, 0};
  int calls = 0;
  assert_int_equal(gray__xff_client(&none, 1, trust_ten, &calls, &out), 0);
  assert_int_equal(gray__xff_client(NULL, 0, trust_ten, &calls, &out), 0);
}

/* nginx's hash of a header name (ngx_hash_key over the lower-case name). */
static uint64_t ngx_hash_of(const char *s) {
  uint64_t h = 0;
  for (; *s; s++) h = h * 31 + (unsigned char)*s;
  return h;
}

/* The compiled policy's attribute slots: one per distinct attribute in order
 * of first use, `tag` last when no condition reads it, header hashes as nginx
 * computes them (0 for a name nginx does not hash), the shared marks. */
static void test_policy_slots(void **state) {
  (void)state;
  static const char text[] =
      "{\"service\": \"s\", \"default\": \"v1\", \"rules\": ["
      " {\"name\": \"a\", \"route\": \"v2\", \"when\": {\"any\": ["
      "   {\"attr\": \"header:User-Agent\", \"op\": \"exists\"},"
      "   {\"attr\": \"cookie:uid\", \"op\": \"eq\", \"value\": \"1\"},"
      "   {\"attr\": \"header:x_under\", \"op\": \"exists\"}]}},"
      " {\"name\": \"b\", \"route\": \"v3\", \"when\": {\"not\":"
      "   {\"attr\": \"header:user-agent\", \"op\": \"eq\", \"value\": \"x\"}}}]}";
  gray_policyset_t *set = NULL;
  gray_error_t err;
  assert_int_equal(gray_policyset_parse(text, sizeof text - 1, GRAY_PARSE_ONE, &set, &err), GRAY_OK);
  const gray_policy_t *p = gray_policyset_at(set, 0);
  assert_int_equal(p->nslots, 4);
  assert_int_equal(p->slots[0].attr, GRAY_ATTR_HEADER);
  assert_memory_equal(p->slots[0].name.p, "user-agent", 10);
  assert_true(p->slots[0].hash31 == ngx_hash_of("user-agent"));
  assert_int_equal(p->slots[1].attr, GRAY_ATTR_COOKIE);
  assert_true(p->slots[1].hash31 == 0);
  assert_int_equal(p->slots[2].attr, GRAY_ATTR_HEADER);
  assert_true(p->slots[2].hash31 == 0); /* '_' is not in nginx's hash */
  assert_int_equal(p->slots[3].attr, GRAY_ATTR_TAG);
  assert_int_equal(p->tag_slot, 3);
  assert_false(p->tag_shared);
  assert_int_equal(p->nheader_slots, 2);
  assert_int_equal(p->header_slots[0], 0);
  assert_int_equal(p->header_slots[1], 2);
  assert_int_equal(p->ncookie_slots, 1);
  assert_int_equal(p->cookie_slots[0], 1);
  assert_true(p->header_by_name);
  for (unsigned b = 0; b < 64; b++) {
    unsigned want = b == ngx_hash_of("user-agent") % 64 ? 1 : 0; /* slot 0 */
    if (b == 0) want = want ? 255 : 3; /* x_under: hash 0, slot 2 */
    assert_int_equal(p->header_owner[b], want);
  }
  for (unsigned len = 0; len < 64; len++)
    assert_int_equal(p->cookie_owner[len], len == 3 ? 2 : 0); /* uid: slot 1 */
  /* user-agent is tested by both rules */
  const gray__node *any = p->rules[0].when;
  assert_int_equal(any->kids[0]->slot, 0);
  assert_true(any->kids[0]->slot_shared);
  assert_false(any->kids[1]->slot_shared);
  assert_int_equal(p->rules[1].when->kids[0]->slot, 0);
  gray_policyset_release(set);

  /* many attributes, each tested twice: one slot per distinct one, every
   * condition pointing at its own */
  enum { N = 600 };
  static char many[64 * 1024];
  size_t o = (size_t)snprintf(many, sizeof many,
                              "{\"service\": \"s\", \"default\": \"v1\", \"rules\": [");
  for (int r = 0; r < 2; r++) {
    o += (size_t)snprintf(many + o, sizeof many - o,
                          "%s{\"name\": \"r%d\", \"route\": \"v2\", \"when\": {\"any\": [",
                          r ? "," : "", r);
    for (int i = 0; i < N; i++)
      o += (size_t)snprintf(many + o, sizeof many - o,
                            "%s{\"attr\": \"%s:n%d\", \"op\": \"exists\"}", i ? "," : "",
                            i % 2 ? "cookie" : "header", i);
    o += (size_t)snprintf(many + o, sizeof many - o, "]}}");
  }
  o += (size_t)snprintf(many + o, sizeof many - o, "]}");
  assert_true(o < sizeof many);
  assert_int_equal(gray_policyset_parse(many, o, GRAY_PARSE_ONE, &set, &err), GRAY_OK);
  p = gray_policyset_at(set, 0);
  assert_int_equal(p->nslots, N + 1); /* and `tag` */
  for (int r = 0; r < 2; r++) {
    const gray__node *w = p->rules[r].when;
    for (int i = 0; i < N; i++) {
      const gray__slot *sl = &p->slots[w->kids[i]->slot];
      char want[16];
      snprintf(want, sizeof want, "n%d", i);
      assert_int_equal(w->kids[i]->slot, (uint32_t)i);
      assert_int_equal(sl->attr, i % 2 ? GRAY_ATTR_COOKIE : GRAY_ATTR_HEADER);
      assert_int_equal(sl->name.len, strlen(want));
      assert_memory_equal(sl->name.p, want, sl->name.len);
      assert_int_equal(w->kids[i]->slot_shared, i < GRAY__SLOTS_CACHED);
    }
  }
  assert_int_equal(p->nheader_slots, N / 2);
  assert_int_equal(p->ncookie_slots, N / 2);
  gray_policyset_release(set);

  /* routes to one version share its text (with the default's) */
  static const char two[] =
      "{\"service\": \"s\", \"default\": \"v1\", \"rules\": ["
      " {\"name\": \"a\", \"route\": \"v2\"}, {\"name\": \"b\", \"route\": \"v1\"},"
      " {\"name\": \"c\", \"route\": \"v2\"}]}";
  assert_int_equal(gray_policyset_parse(two, sizeof two - 1, GRAY_PARSE_ONE, &set, &err), GRAY_OK);
  p = gray_policyset_at(set, 0);
  assert_ptr_equal(p->rules[1].route.p, p->def.p);
  assert_ptr_equal(p->rules[2].route.p, p->rules[0].route.p);
  assert_ptr_not_equal(p->rules[0].route.p, p->def.p);
  assert_string_equal(p->rules[2].route.p, "v2");
  gray_policyset_release(set);
}

static void test_query_find(void **state) {
  (void)state;
  char scratch[64];
  gray_str_t v;
  assert_true(gray_query_find(S("a=1&uid=x%20y+z&uid=2"), S("uid"), &v, scratch, sizeof scratch));
  assert_int_equal(v.len, 5);
  assert_memory_equal(v.p, "x y z", 5);
  assert_true(v.p == scratch); /* decoded */
  assert_true(gray_query_find(S("?u%69d=7"), S("uid"), &v, scratch, sizeof scratch));
  assert_memory_equal(v.p, "7", 1);
  /* nothing to decode: borrowed from the query string */
  static const char q[] = "a=1&uid=5000007&b=2";
  assert_true(gray_query_find((gray_str_t){q, sizeof q - 1}, S("uid"), &v, scratch, sizeof scratch));
  assert_true(v.p == q + 8);
  assert_int_equal(v.len, 7);
  assert_true(gray_query_find(S("flag&x=1"), S("flag"), &v, scratch, sizeof scratch));
  assert_int_equal(v.len, 0);
  assert_true(gray_query_find(S("p=%zz%4"), S("p"), &v, scratch, sizeof scratch));
  assert_int_equal(v.len, 5);
  assert_memory_equal(v.p, "%zz%4", 5);
  assert_false(gray_query_find(S("a=1"), S("b"), &v, scratch, sizeof scratch));
  /* A value that does not fit the scratch space is not returned cut. */
  assert_false(gray_query_find(S("a=0123456789"), S("a"), &v, scratch, 4));
  gray_str_t none = {NULL, 0};
  assert_false(gray_query_find(none, S("a"), &v, scratch, sizeof scratch));
}

static void test_ip_and_cidr(void **state) {
  (void)state;
  gray__cidr c;
  uint8_t ip[16];
  char msg[256];
  assert_int_equal(gray__cidr_parse(S("10.0.0.0/8"), &c, msg, sizeof msg), GRAY_OK);
  assert_true(gray__ip_parse("10.255.1.2", 10, ip));
  assert_true(gray__cidr_match(&c, ip));
  assert_true(gray__ip_parse("::ffff:10.1.2.3", 15, ip));
  assert_true(gray__cidr_match(&c, ip));
  assert_true(gray__ip_parse("11.0.0.1", 8, ip));
  assert_false(gray__cidr_match(&c, ip));
  assert_int_equal(gray__cidr_parse(S("2001:db8::/33"), &c, msg, sizeof msg), GRAY_OK);
  assert_true(gray__ip_parse("2001:db8:7fff::1", 16, ip));
  assert_true(gray__cidr_match(&c, ip));
  assert_true(gray__ip_parse("2001:db8:8000::1", 16, ip));
  assert_false(gray__cidr_match(&c, ip));
  assert_int_equal(gray__cidr_parse(S("0.0.0.0/0"), &c, msg, sizeof msg), GRAY_OK);
  assert_true(gray__ip_parse("1.2.3.4", 7, ip));
  assert_true(gray__cidr_match(&c, ip));
  /* An IPv4 /0 still means "any IPv4", not any IPv6. */
  assert_true(gray__ip_parse("2001:db8::1", 11, ip));
  assert_false(gray__cidr_match(&c, ip));
  assert_int_equal(gray__cidr_parse(S("10.1.0.0/8"), &c, msg, sizeof msg), GRAY_ESCHEMA);
  assert_non_null(strstr(msg, "host bits"));
  assert_int_equal(gray__cidr_parse(S("10.0.0.0/33"), &c, msg, sizeof msg), GRAY_ESCHEMA);
  assert_int_equal(gray__cidr_parse(S("10.0.0.0/08"), &c, msg, sizeof msg), GRAY_ESCHEMA);
  assert_int_equal(gray__cidr_parse(S("10.0.0.0/"), &c, msg, sizeof msg), GRAY_ESCHEMA);
  assert_int_equal(gray__cidr_parse(S("::1/129"), &c, msg, sizeof msg), GRAY_ESCHEMA);
  assert_int_equal(gray__cidr_parse(S("example.com"), &c, msg, sizeof msg), GRAY_ESCHEMA);
  assert_false(gray__ip_parse("1.2.3", 5, ip));
  assert_false(gray__ip_parse("1.2.3.4\0", 8, ip));
  assert_false(gray__ip_parse("", 0, ip));
  /* IPv4 as inet_pton reads it: each case against inet_pton itself */
  static const char *const v4[] = {
      "0.0.0.0",   "255.255.255.255", "01.2.3.4",         "1.2.3.04",        "1.2.3.0",
      "1.2.3.4.5", "256.1.1.1",       "1.2.3.256",        "1..2.3",          ".1.2.3",
      "1.2.3.",    "1.2.3.4 ",        " 1.2.3.4",         "1111.1.1.1",      "4294967297.1.1.1",
      "1.2.3.4:",  "1.2.3.-4",        "0000000000001.1.1.1", "1.2.3.4/8",    "a.b.c.d"};
  for (size_t i = 0; i < sizeof v4 / sizeof v4[0]; i++) {
    uint8_t want[4];
    int ok = inet_pton(AF_INET, v4[i], want) == 1;
    memset(ip, 0xaa, sizeof ip);
    int got = gray__ip_parse(v4[i], strlen(v4[i]), ip);
    if (got != ok) fprintf(stderr, "ip_parse(\"%s\"): %d, inet_pton: %d\n", v4[i], got, ok);
    assert_int_equal(got, ok);
    if (ok) assert_memory_equal(ip + 12, want, 4);
  }
}

static void test_numbers(void **state) {
  (void)state;
  double d;
  assert_true(gray__parse_number("42", 2, &d));
  assert_true(d == 42.0);
  assert_true(gray__parse_number("-1.5", 4, &d));
  assert_true(d == -1.5);
  assert_true(gray__parse_number("+.25", 4, &d));
  assert_true(d == 0.25);
  assert_true(gray__parse_number("0.1", 3, &d));
  assert_true(d == 0.1);
  assert_false(gray__parse_number("", 0, &d));
  assert_false(gray__parse_number("-", 1, &d));
  assert_false(gray__parse_number("1e3", 3, &d));
  assert_false(gray__parse_number("12a", 3, &d));
  assert_false(gray__parse_number(" 1", 2, &d));
  assert_false(gray__parse_number("1.2.3", 5, &d));
  /* 16+ significant digits round exactly as a JSON parser does. */
  assert_true(gray__parse_number("988701.8684863687", 17, &d));
  assert_true(d == 988701.8684863687);
  assert_true(gray__parse_number("0.30000000000000004", 19, &d));
  assert_true(d == 0.30000000000000004);
  assert_true(gray__parse_number("123456789012345678901234567890", 30, &d));
  assert_true(d > 1.2e29 && d < 1.3e29);
}

static void test_mod(void **state) {
  (void)state;
  uint64_t r;
  assert_true(gray__parse_mod("1234", 4, 100, &r));
  assert_int_equal(r, 34);
  /* 10^40 + 7 mod 97, computed digit by digit: no overflow at any length. */
  assert_true(gray__parse_mod("10000000000000000000000000000000000000007", 41, 97, &r));
  uint64_t want = 1;
  for (int i = 0; i < 40; i++) want = want * 10 % 97;
  assert_int_equal(r, (want + 7) % 97);
  assert_true(gray__parse_mod("18446744073709551615999", 23, 4294967295u, &r));
  assert_false(gray__parse_mod("-5", 2, 10, &r));
  assert_false(gray__parse_mod("", 0, 10, &r));
  assert_false(gray__parse_mod("12x", 3, 10, &r));
  assert_false(gray__parse_mod("1.0", 3, 10, &r));
  /* Past 2^59 the running value is reduced; the result must not change. */
  assert_true(gray__parse_mod("99999999999999999999999999999999", 32, 4294967291u, &r));
  uint64_t w = 0;
  for (int i = 0; i < 32; i++) w = (w * 10 + 9) % 4294967291u;
  assert_int_equal(r, w);
}

static void test_err_table(void **state) {
  (void)state;
  assert_string_equal(gray_strerror(GRAY_OK), "success");
  assert_string_equal(gray_strerror(GRAY_ESCHEMA), "invalid policy");
  assert_string_equal(gray_err_name(GRAY_ELIMIT), "ELIMIT");
  assert_string_equal(gray_err_name(-999), "EUNKNOWN");
  assert_string_equal(gray_strerror(12345), "unknown error");
  gray_error_t e;
  char buf[64];
  gray__error_set(&e, GRAY_ESCHEMA, "rules[0].name", "must not be empty");
  assert_string_equal(gray_error_format(&e, buf, sizeof buf), "rules[0].name: must not be empty");
  gray__error_set(&e, GRAY_EJSON, "", "bad");
  assert_string_equal(gray_error_format(&e, buf, sizeof buf), "bad");
  /* Truncates, never overflows. */
  gray__error_set(&e, GRAY_ESCHEMA, "a.very.long.path", "and a long message here");
  assert_int_equal(strlen(gray_error_format(&e, buf, 10)), 9);
}

static void test_quote(void **state) {
  (void)state;
  char out[128];
  gray__quote("a\"b\n", 4, out, sizeof out);
  assert_string_equal(out, "\"a\\\"b\\x0a\"");
  char big[200];
  memset(big, 'x', sizeof big);
  gray__quote(big, sizeof big, out, sizeof out);
  assert_non_null(strstr(out, "\"..."));
  assert_true(strlen(out) < sizeof out);
}

static void test_host_valid(void **state) {
  (void)state;
  static const char *const good[] = {"127.0.0.1", "::1", "fe80::1", "10.0.0.7", "order-dal", "a.b.example",
                                     "x1.internal", "A-b.C"};
  static const char *const bad[] = {"", "-a", "a-", "a..b", ".a", "a.", "a b", "a;b", "a{b", "a\nb", "a_b",
                                    "1.2.3.4:80", "[::1]", "a/b", "a$b"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    if (!gray__host_valid(good[i])) fail_msg("refused %s", good[i]);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (gray__host_valid(bad[i])) fail_msg("accepted \"%s\"", bad[i]);
  char label[80], name[300];
  memset(label, 'a', 63);
  label[63] = '\0';
  assert_true(gray__host_valid(label));
  memset(label, 'a', 64);
  label[64] = '\0';
  assert_false(gray__host_valid(label)); /* a label of 64 */
  /* 253 bytes at most: four labels of 63 and one of 1 = 256 with dots. */
  snprintf(name, sizeof name, "%.63s.%.63s.%.63s.%.61s", label, label, label, label);
  assert_int_equal(strlen(name), 253);
  assert_true(gray__host_valid(name));
  snprintf(name, sizeof name, "%.63s.%.63s.%.63s.%.62s", label, label, label, label);
  assert_false(gray__host_valid(name));
}

/* A regex's required literal (lib/core/rxlit.c): what it finds for known
 * patterns, and, for patterns and subjects built at random from pieces of
 * regex syntax, that every subject PCRE2 matches contains it. */
static void test_regex_literal(void **state) {
  (void)state;
  static const struct {
    const char *pattern, *lit; /* lit "": none */
  } cases[] = {
      {"(iPhone|Android).*AppVersion/5\\.", "AppVersion/5."},
      {"abc", "abc"},
      {"ab?c", "a"},           /* b optional: runs "a" and "c", the first kept */
      {"xa*bcd", "bcd"},
      {"foo+bar!", "bar!"},    /* o+ ends "foo" */
      {"a{0,2}bcd", "bcd"},
      {"\\d{2,3}ab", "ab"},
      {"x{3}yz", "yz"},
      {"^Mozilla/\\d", "Mozilla/"},
      {"\\bword\\b", "word"},
      {"a\\.b\\-c", "a.b-c"},
      {"[abc]def", "def"},
      {"[]a]bc", "bc"},
      {"[^]a]bc", "bc"},
      {"[[:alpha:]]xy", "xy"},
      {"[\\]]xy", "xy"},
      {"[\\c]c]yz", ""},       /* \c] is one member: the class ends at the second ']' */
      {"(?:ab)+cd", "cd"},
      {"(?=x)abc", "abc"},
      {"(?<n>a(b)c)de", "de"},
      {"caf\xc3\xa9+ lait", " lait"},
      {"ab*?cde", "cde"},
      {"ab++c", "ab"},
      {"xa+bcd", "bcd"},       /* not "xabcd": "xaabcd" matches */
      {"a|b", ""},             /* a top-level alternative */
      {"(?i)abc", ""},         /* options change what a letter matches */
      {"(?i:x)abc", ""},
      {"(*UCP)abc", ""},
      {"\\Qabc\\E", ""},
      {"\\x41BC", ""},         /* an escape it does not read */
      {"\\nabc", ""},
      {"a{,2}bcd", ""},        /* read differently by PCRE2 versions */
      {"a{x", ""},
      {"(ab", ""},
      {"", ""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char lit[GRAY__REGEX_LITERAL_MAX];
    size_t n = gray__regex_literal(cases[i].pattern, strlen(cases[i].pattern), lit, sizeof lit);
    if (n != strlen(cases[i].lit) || memcmp(lit, cases[i].lit, n))
      fail_msg("pattern %s: literal \"%.*s\", expected \"%s\"", cases[i].pattern, (int)n, lit,
               cases[i].lit);
  }
  /* At most GRAY__REGEX_LITERAL_MAX bytes (a prefix of the run). */
  char lit[GRAY__REGEX_LITERAL_MAX];
  const char *longp = "0123456789abcdefghijklmnopqrstuvwxyzABCDEF";
  assert_int_equal(gray__regex_literal(longp, strlen(longp), lit, sizeof lit), sizeof lit);
  assert_memory_equal(lit, longp, sizeof lit);

  static const char *const pieces[] = {
      "a", "b", "c", "\\.", ".", "a?", "b*", "c+", "(a|b)", "[ab]", "[^a]", "a{2}", "b{0,1}",
      "c{1,}", "\\d", "\\w+", "^", "$", "(?:ab)+", "(?=a)", "(?!b)", "\\b", "a*?", "b++",
      "(c)?", "x", "1", "[]a]", "\\K", "(?<=a)", ".*", "|", "a+", "b{2,3}",
  };
  /* subjects over few letters, so that patterns match often */
  static const char *const alphabets[] = {"abcx1.", "ab", "ac", "bc"};
  uint32_t seed = 12345;
#define NEXT() (seed = seed * 1103515245u + 12345u, (seed >> 16) & 0x7fff)
  gray_policyset_t *set = gray__set_new();
  assert_non_null(set);
  int with_literal = 0, matched_with_literal = 0;
  for (int k = 0; k < 4000; k++) {
    char pat[256];
    size_t pl = 0;
    int np = 1 + (int)(NEXT() % 8);
    for (int j = 0; j < np; j++) {
      const char *piece = pieces[NEXT() % (sizeof pieces / sizeof pieces[0])];
      size_t n = strlen(piece);
      assert_true(pl + n < sizeof pat); /* 8 pieces of at most 8 bytes */
      memcpy(pat + pl, piece, n);
      pl += n;
    }
    pat[pl] = '\0';
    gray__node node;
    memset(&node, 0, sizeof node);
    char msg[256];
    if (gray__regex_compile(set, &node, S(pat), msg, sizeof msg) != GRAY_OK) continue;
    if (node.lit.len == 0) continue;
    with_literal++;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(node.re, NULL);
    assert_non_null(md);
    for (int t = 0; t < 20; t++) {
      char subj[16];
      size_t sl = NEXT() % sizeof subj;
      const char *alphabet = alphabets[t % 4];
      for (size_t q = 0; q < sl; q++) subj[q] = alphabet[NEXT() % strlen(alphabet)];
      if (pcre2_match(node.re, (PCRE2_SPTR)subj, sl, 0, 0, md, node.mctx) < 0) continue;
      matched_with_literal++;
      int found = 0;
      for (size_t q = 0; q + node.lit.len <= sl && !found; q++)
        found = !memcmp(subj + q, node.lit.p, node.lit.len);
      if (!found)
        fail_msg("pattern %s matches \"%.*s\" without its literal \"%.*s\"", pat, (int)sl, subj,
                 (int)node.lit.len, node.lit.p);
    }
    pcre2_match_data_free(md);
  }
#undef NEXT
  gray_policyset_release(set);
  /* the check above must have had something to check */
  assert_true(with_literal > 500);
  assert_true(matched_with_literal > 500);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_murmur3_vectors), cmocka_unit_test(test_percent_bucket_streams),
      cmocka_unit_test(test_cookie_find), cmocka_unit_test(test_cookie_next), cmocka_unit_test(test_xff_client),     cmocka_unit_test(test_query_find), cmocka_unit_test(test_policy_slots),
      cmocka_unit_test(test_ip_and_cidr),     cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_mod),             cmocka_unit_test(test_err_table),
      cmocka_unit_test(test_quote),           cmocka_unit_test(test_host_valid),
      cmocka_unit_test(test_regex_literal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
