/* gray-agent's renderer (agent/render.c): what reaches the upstream file,
 * straight from state documents that bypass grayd's and the SDK's checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent.h"

static const ga_render_opts OPTS = {16, NULL, NULL};

/* A document with the given policies array and services array (JSON text). */
static char *doc(long long rev, const char *policies, const char *services) {
  size_t n = strlen(policies) + strlen(services) + 200;
  char *d = malloc(n);
  assert_non_null(d);
  snprintf(d, n,
           "{\"store_id\":\"0123456789abcdef0123456789abcdef\",\"revision\":%lld,"
           "\"policies\":{\"revision\":%lld,\"policies\":%s},\"services\":%s}",
           rev, rev, policies, services);
  return d;
}

static int render(const char *d, ga_rendered *r, const ga_render_opts *o) {
  char err[GA_ERROR_MAX];
  int rc = ga_render(d, strlen(d), o ? o : &OPTS, r, err, sizeof err);
  if (rc) fprintf(stderr, "render: %s\n", err);
  return rc;
}

/* Every line of an upstream body is one the agent writes. */
static void assert_only_agent_lines(const char *body) {
  const char *l = body;
  while (*l) {
    const char *e = strchr(l, '\n');
    assert_non_null(e);
    size_t n = (size_t)(e - l);
    char line[600];
    assert_true(n < sizeof line);
    memcpy(line, l, n);
    line[n] = '\0';
    int ok = line[0] == '#' || !strcmp(line, "}") || !strncmp(line, "upstream ", 9) ||
             !strncmp(line, "    server ", 11) || !strncmp(line, "    keepalive ", 14);
    for (size_t i = 0; i < n && line[0] != '#'; i++) {
      /* outside comments: only name, address and number characters */
      char c = line[i];
      ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-' || c == ':' || c == '[' || c == ']' || c == ' ' || c == ';' ||
                  c == '{' || c == '}');
    }
    if (!ok) fail_msg("unexpected line: %s", line);
    /* a '{' only ends an upstream line, a ';' only ends a server/keepalive line */
    if (strchr(line, '{')) assert_true(!strncmp(line, "upstream ", 9) && line[n - 1] == '{' && !strchr(line, ';'));
    if (strchr(line, ';') && line[0] != '#') assert_true(line[n - 1] == ';' && !strchr(line, '{'));
    l = e + 1;
  }
}

static void t_basic(void **state) {
  (void)state;
  char *d = doc(42, "[{\"service\":\"order\",\"default\":\"v1\",\"rules\":[]}]",
                "[{\"service\":\"order\",\"instances\":["
                "{\"id\":\"b\",\"address\":\"10.0.0.2\",\"port\":8080,\"version\":\"v1\"},"
                "{\"id\":\"a\",\"address\":\"10.0.0.1\",\"port\":8080,\"version\":\"v1\"},"
                "{\"id\":\"c\",\"address\":\"::1\",\"port\":9,\"version\":\"v2\"},"
                "{\"id\":\"d\",\"address\":\"db-1.example.com\",\"port\":5432,\"version\":\"v2\"},"
                "{\"id\":\"e\",\"address\":\"10.0.0.1\",\"port\":8080,\"version\":\"v1\"}]}]");
  ga_rendered r;
  assert_int_equal(render(d, &r, NULL), 0);
  assert_int_equal(r.revision, 42);
  assert_int_equal(r.nupstreams, 2);
  assert_int_equal(r.nservers, 4); /* the duplicate address collapses */
  assert_string_equal(r.upstreams, GA_UPSTREAMS_HEAD
                      "upstream order.v1 {\n    server 10.0.0.1:8080;\n    server 10.0.0.2:8080;\n"
                      "    keepalive 16;\n}\n"
                      "upstream order.v2 {\n    server [::1]:9;\n    server db-1.example.com:5432;\n"
                      "    keepalive 16;\n}\n");
  assert_only_agent_lines(r.upstreams);
  char *f = ga_upstreams_file(r.upstreams, 42);
  int64_t rev;
  char *body, err[256];
  assert_int_equal(ga_parse_upstreams_file(f, strlen(f), &rev, &body, err, sizeof err), 0);
  assert_int_equal(rev, 42);
  assert_string_equal(body, r.upstreams);
  free(body);
  free(f);
  ga_rendered_clear(&r);
  free(d);
}

static void t_injection_in_registry_values(void **state) {
  (void)state;
  static const char *bad_addresses[] = {
      "10.0.0.1; include /etc/passwd",
      "10.0.0.1:80 down",
      "a{b",
      "a}b",
      "\\\"q\\\"",
      "a\\nb",
      "$host",
      "a b",
      "a\\tb",
      "#x",
      "-bad.example",
      "",
  };
  static const char *bad_names[] = {"v1;", "v1 {", "}", "\\\"v\\\"", "v\\n1", "$v", "-v", "", "v/1", "v\\u00e9"};
  static const char *bad_ports[] = {"\"80\"", "0", "65536", "-1", "80.5", "null", "true", "[80]", "{}"};
  char *insts = malloc(1 << 20);
  assert_non_null(insts);
  size_t o = 0;
  int n = 0;
  o += (size_t)snprintf(insts + o, 64, "[");
#define ADD(...)                                                                  \
  do {                                                                            \
    o += (size_t)snprintf(insts + o, (1 << 20) - o, "%s", n++ ? "," : "");       \
    o += (size_t)snprintf(insts + o, (1 << 20) - o, __VA_ARGS__);                \
  } while (0)
  for (size_t i = 0; i < sizeof bad_addresses / sizeof *bad_addresses; i++)
    ADD("{\"id\":\"i%zu\",\"address\":\"%s\",\"port\":80,\"version\":\"v1\"}", i, bad_addresses[i]);
  for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
    ADD("{\"id\":\"n%zu\",\"address\":\"10.0.0.9\",\"port\":80,\"version\":\"%s\"}", i, bad_names[i]);
    ADD("{\"id\":\"%s\",\"address\":\"10.0.0.9\",\"port\":80,\"version\":\"v1\"}", bad_names[i]);
  }
  for (size_t i = 0; i < sizeof bad_ports / sizeof *bad_ports; i++)
    ADD("{\"id\":\"p%zu\",\"address\":\"10.0.0.9\",\"port\":%s,\"version\":\"v1\"}", i, bad_ports[i]);
  ADD("{\"id\":\"missing\"}");
  ADD("\"not an object\"");
  /* 64 KiB strings */
  char *big = malloc(65537);
  assert_non_null(big);
  memset(big, 'a', 65536);
  big[65536] = '\0';
  ADD("{\"id\":\"big1\",\"address\":\"%s\",\"port\":80,\"version\":\"v1\"}", big);
  ADD("{\"id\":\"big2\",\"address\":\"10.0.0.9\",\"port\":80,\"version\":\"%s\"}", big);
  ADD("{\"id\":\"%s\",\"address\":\"10.0.0.9\",\"port\":80,\"version\":\"v1\"}", big);
  /* the one good instance */
  ADD("{\"id\":\"good\",\"address\":\"10.0.0.7\",\"port\":81,\"version\":\"v1\"}");
  o += (size_t)snprintf(insts + o, (1 << 20) - o, "]");
  size_t sl = strlen(insts) + 2 * 65536 + 1000;
  char *services = malloc(sl);
  assert_non_null(services);
  snprintf(services, sl,
           "[{\"service\":\"order\",\"instances\":%s},"
           "{\"service\":\"x; include /etc/passwd\",\"instances\":[{\"id\":\"a\",\"address\":\"10.0.0.1\","
           "\"port\":1,\"version\":\"v1\"}]},"
           "{\"service\":\"%s\",\"instances\":[]},{\"service\":7,\"instances\":[]},{\"instances\":[]}]",
           insts, big);
  char *d = doc(3, "[]", services);
  ga_rendered r;
  assert_int_equal(render(d, &r, NULL), 0);
  assert_int_equal(r.nupstreams, 1);
  assert_int_equal(r.nservers, 1);
  assert_true(r.skipped >= (size_t)n - 1 + 3);
  assert_string_equal(r.upstreams,
                      GA_UPSTREAMS_HEAD "upstream order.v1 {\n    server 10.0.0.7:81;\n    keepalive 16;\n}\n");
  assert_only_agent_lines(r.upstreams);
  ga_rendered_clear(&r);
  free(d);
  free(services);
  free(big);
  free(insts);
}

static void t_nul_refuses_the_document(void **state) {
  (void)state;
  char *d = doc(3, "[]",
                "[{\"service\":\"order\",\"instances\":[{\"id\":\"a\",\"address\":\"10.0.0.1\\u0000; x\","
                "\"port\":1,\"version\":\"v1\"}]}]");
  ga_rendered r;
  char err[GA_ERROR_MAX];
  assert_int_equal(ga_render(d, strlen(d), &OPTS, &r, err, sizeof err), -1);
  assert_null(r.upstreams);
  free(d);
  assert_int_equal(ga_render("{", 1, &OPTS, &r, err, sizeof err), -1);
  assert_int_equal(ga_render("{\"revision\":1}", 14, &OPTS, &r, err, sizeof err), -1);
}

static void t_name_collisions(void **state) {
  (void)state;
  /* "a.b"+"c" and "a"+"b.c" both name upstream a.b.c; "Order.v1" and
   * "order.v1" are one upstream to Nginx. The first keeps it. */
  char *d = doc(5, "[]",
                "[{\"service\":\"a.b\",\"instances\":[{\"id\":\"1\",\"address\":\"10.0.0.1\","
                "\"port\":1,\"version\":\"c\"}]},"
                "{\"service\":\"a\",\"instances\":[{\"id\":\"2\",\"address\":\"10.0.0.2\","
                "\"port\":1,\"version\":\"b.c\"}]},"
                "{\"service\":\"order\",\"instances\":[{\"id\":\"3\",\"address\":\"10.0.0.3\","
                "\"port\":1,\"version\":\"v1\"}]},"
                "{\"service\":\"Order\",\"instances\":[{\"id\":\"4\",\"address\":\"10.0.0.4\","
                "\"port\":1,\"version\":\"v1\"}]}]");
  ga_rendered r;
  assert_int_equal(render(d, &r, NULL), 0);
  assert_int_equal(r.nupstreams, 2);
  assert_int_equal(r.skipped, 2);
  assert_non_null(strstr(r.upstreams, "upstream a.b.c {\n    server 10.0.0.1:1;"));
  assert_non_null(strstr(r.upstreams, "upstream order.v1 {\n    server 10.0.0.3:1;"));
  assert_null(strstr(r.upstreams, "10.0.0.2"));
  assert_null(strstr(r.upstreams, "10.0.0.4"));
  ga_rendered_clear(&r);
  free(d);
}

static void t_placeholder_for_default_without_instances(void **state) {
  (void)state;
  char *d = doc(9,
                "[{\"service\":\"order\",\"default\":\"v1\",\"rules\":[{\"name\":\"r\",\"route\":\"v2\"}]},"
                "{\"service\":\"cart\",\"default\":\"v3\"}]",
                "[{\"service\":\"order\",\"instances\":[{\"id\":\"a\",\"address\":\"10.0.0.1\",\"port\":1,"
                "\"version\":\"v2\"}]}]");
  ga_render_opts o = {0, NULL, NULL};
  ga_rendered r;
  assert_int_equal(render(d, &r, &o), 0);
  assert_string_equal(r.upstreams,
                      GA_UPSTREAMS_HEAD
                      "# cart.v3: the default of cart's policy has no live instance; requests that fall back to it "
                      "get 502\nupstream cart.v3 {\n    server 127.0.0.1:1 down;\n}\n"
                      "# order.v1: the default of order's policy has no live instance; requests that fall back to "
                      "it get 502\nupstream order.v1 {\n    server 127.0.0.1:1 down;\n}\n"
                      "upstream order.v2 {\n    server 10.0.0.1:1;\n}\n");
  assert_only_agent_lines(r.upstreams);
  ga_rendered_clear(&r);
  free(d);
}

static int resolves_only_good(void *arg, const char *host) {
  (*(int *)arg)++;
  return !strcmp(host, "good.example");
}

static void t_unresolvable_host_skipped(void **state) {
  (void)state;
  int asked = 0;
  ga_render_opts o = {16, resolves_only_good, &asked};
  char *d = doc(2, "[]",
                "[{\"service\":\"s\",\"instances\":["
                "{\"id\":\"a\",\"address\":\"good.example\",\"port\":1,\"version\":\"v1\"},"
                "{\"id\":\"b\",\"address\":\"nowhere.invalid\",\"port\":1,\"version\":\"v1\"},"
                "{\"id\":\"c\",\"address\":\"192.0.2.1\",\"port\":1,\"version\":\"v1\"}]}]");
  ga_rendered r;
  assert_int_equal(render(d, &r, &o), 0);
  assert_int_equal(asked, 2); /* IP literals are not asked */
  assert_int_equal(r.nservers, 2);
  assert_null(strstr(r.upstreams, "nowhere"));
  ga_rendered_clear(&r);
  free(d);
}

static void t_policies_canonical_and_checked(void **state) {
  (void)state;
  char *d1 = doc(7,
                 "[{\"service\":\"b\",\"default\":\"v1\"},{\"rules\":[],\"default\":\"v2\",\"service\":\"a\"}]",
                 "[]");
  char *d2 = doc(8,
                 "[{\"default\":\"v2\",\"service\":\"a\",\"rules\":[]},{\"default\":\"v1\",\"service\":\"b\"}]",
                 "[]");
  ga_rendered r1, r2;
  assert_int_equal(render(d1, &r1, NULL), 0);
  assert_int_equal(render(d2, &r2, NULL), 0);
  assert_string_equal(r1.policies, r2.policies); /* order and key order do not matter */
  assert_true(strstr(r1.policies, "\"service\":\"a\"") < strstr(r1.policies, "\"service\":\"b\""));
  char *f = ga_policies_file(r1.policies, 7), *back = NULL, err[GA_ERROR_MAX];
  int64_t rev;
  assert_int_equal(ga_check_policies(f, err, sizeof err), 0);
  assert_int_equal(ga_parse_policies_file(f, strlen(f), &rev, &back, err, sizeof err), 0);
  assert_int_equal(rev, 7);
  assert_string_equal(back, r1.policies);
  free(back);
  free(f);
  ga_rendered_clear(&r1);
  ga_rendered_clear(&r2);
  free(d1);
  free(d2);

  /* A value with directive syntax stays data, JSON-escaped, in ASCII. */
  char *d3 = doc(9,
                 "[{\"service\":\"a\",\"default\":\"v1\",\"rules\":[{\"name\":\"r\",\"route\":\"v2\","
                 "\"when\":{\"attr\":\"header:x\",\"op\":\"eq\","
                 "\"value\":\"}\\n server { listen 1; } \\\"\\u00e9$\"}}]}]",
                 "[]");
  assert_int_equal(render(d3, &r1, NULL), 0);
  if (!strstr(r1.policies, "\"}\\n server { listen 1; } \\\"\\u00E9$\"")) fail_msg("%s", r1.policies);
  ga_rendered_clear(&r1);
  free(d3);

  /* A set the core refuses is refused whole. */
  char *d4 = doc(9, "[{\"service\":\"a\",\"default\":\"v1;\"}]", "[]");
  assert_int_not_equal(ga_render(d4, strlen(d4), &OPTS, &r1, err, sizeof err), 0);
  assert_non_null(strstr(err, "does not compile"));
  free(d4);
  char *d5 = doc(9, "[{\"service\":\"a\",\"default\":\"v1\"},{\"service\":\"a\",\"default\":\"v2\"}]", "[]");
  assert_int_not_equal(ga_render(d5, strlen(d5), &OPTS, &r1, err, sizeof err), 0);
  free(d5);
}

static void t_files_written_by_others_are_not_ours(void **state) {
  (void)state;
  int64_t rev;
  char *out = NULL, err[256];
  static const char *bad_up[] = {"", "upstream x {}", "gray_upstreams_revision x;\n", "gray_upstreams_revision 1;",
                                 "gray_upstreams_revision 99999999999999999999;\n"};
  for (size_t i = 0; i < sizeof bad_up / sizeof *bad_up; i++)
    assert_int_equal(ga_parse_upstreams_file(bad_up[i], strlen(bad_up[i]), &rev, &out, err, sizeof err), -1);
  static const char *bad_pol[] = {"", "[]", "{\"revision\":-1,\"policies\":[]}", "{\"revision\":1}",
                                  "{\"revision\":1,\"policies\":[],\"x\":1}"};
  for (size_t i = 0; i < sizeof bad_pol / sizeof *bad_pol; i++)
    assert_int_equal(ga_parse_policies_file(bad_pol[i], strlen(bad_pol[i]), &rev, &out, err, sizeof err), -1);
  assert_int_equal(ga_parse_policies_file("{\"revision\":0,\"policies\":[]}\n", 29, &rev, &out, err, sizeof err), 0);
  assert_string_equal(out, "[]");
  free(out);
}

static void t_quote(void **state) {
  (void)state;
  char buf[300];
  assert_string_equal(ga_quote("a\"b\\c\n\x01\xff", 8, buf, sizeof buf), "\"a\\\"b\\\\c\\x0a\\x01\\xff\"");
  char big[200];
  memset(big, 'z', sizeof big);
  ga_quote(big, sizeof big, buf, sizeof buf);
  assert_int_equal(strlen(buf), 1 + 64 + 3 + 1);
  ga_quote(big, sizeof big, buf, 20);
  assert_true(strlen(buf) < 20);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_basic),
      cmocka_unit_test(t_injection_in_registry_values),
      cmocka_unit_test(t_nul_refuses_the_document),
      cmocka_unit_test(t_name_collisions),
      cmocka_unit_test(t_placeholder_for_default_without_instances),
      cmocka_unit_test(t_unresolvable_host_skipped),
      cmocka_unit_test(t_policies_canonical_and_checked),
      cmocka_unit_test(t_files_written_by_others_are_not_ours),
      cmocka_unit_test(t_quote),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
