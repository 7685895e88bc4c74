/* gray-agent: reports to grayd (PUT /v1/agents/{id}). */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

typedef struct sink {
  char buf[8192];
  size_t len;
} sink;

static size_t on_body(char *p, size_t sz, size_t nm, void *arg) {
  sink *s = arg;
  size_t n = sz * nm, take = n < sizeof s->buf - 1 - s->len ? n : sizeof s->buf - 1 - s->len;
  memcpy(s->buf + s->len, p, take);
  s->len += take;
  s->buf[s->len] = '\0';
  return n;
}

static json_t *report_json(const ga_report *rep) {
  json_t *o = json_pack("{s:s,s:I,s:I}", "host", rep->host, "revision", (json_int_t)rep->revision, "seen_revision",
                        (json_int_t)rep->seen_revision);
  if (!o) return NULL;
  if (rep->error_revision >= 0) json_object_set_new(o, "error_revision", json_integer(rep->error_revision));
  if (rep->policy_revision >= 0) json_object_set_new(o, "policy_revision", json_integer(rep->policy_revision));
  if (rep->upstreams_revision >= 0)
    json_object_set_new(o, "upstreams_revision", json_integer(rep->upstreams_revision));
  if (rep->nginx_pid > 0) json_object_set_new(o, "nginx_pid", json_integer(rep->nginx_pid));
  if (rep->last_error && rep->last_error[0]) {
    /* grayd takes at most 4096 bytes; errors are kept shorter anyway. An
     * error text that is not UTF-8 (a path in nginx's words) is sent
     * without the bytes jansson refuses. */
    json_t *s = json_stringn(rep->last_error, strnlen(rep->last_error, 4000));
    if (!s) {
      char clean[4001];
      size_t k = 0;
      for (const char *p = rep->last_error; *p && k < 4000; p++)
        clean[k++] = (unsigned char)*p < 0x80 ? *p : '?';
      clean[k] = '\0';
      s = json_string(clean);
    }
    json_object_set_new(o, "last_error", s);
  } else {
    json_object_set_new(o, "last_error", json_null());
  }
  return o;
}

int ga_report_send(const ga_reporter *r, const ga_report *rep, char *err, size_t errsz) {
  json_t *o = report_json(rep);
  char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
  char *list = strdup(r->servers);
  struct curl_slist *hdrs = NULL;
  char auth[600];
  int rc = -1;
  json_decref(o);
  if (!body || !list) {
    snprintf(err, errsz, "out of memory");
    goto out;
  }
  hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
  if (r->token) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", r->token);
    hdrs = curl_slist_append(hdrs, auth);
  }
  snprintf(err, errsz, "no grayd server");
  char *save = NULL;
  for (char *srv = strtok_r(list, ",", &save); srv; srv = strtok_r(NULL, ",", &save)) {
    while (*srv == ' ') srv++;
    size_t sl = strlen(srv);
    while (sl && srv[sl - 1] == '/') srv[--sl] = '\0';
    char url[2048];
    snprintf(url, sizeof url, "%s/v1/agents/%s", srv, r->id);
    sink s = {.len = 0};
    s.buf[0] = '\0';
    char cerr[CURL_ERROR_SIZE] = "";
    long code = 0;
    CURL *h = curl_easy_init();
    if (!h) {
      snprintf(err, errsz, "out of memory");
      break;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "gray-agent");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    if (r->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, r->ca_file);
    CURLcode cc = curl_easy_perform(h);
    if (cc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    if (cc != CURLE_OK) {
      snprintf(err, errsz, "%s: %s", srv, cerr[0] ? cerr : curl_easy_strerror(cc));
      continue;
    }
    if (code == 200) {
      rc = 0;
      break;
    }
    /* grayd answered: another server would answer the same. */
    size_t n = strcspn(s.buf, "\n");
    s.buf[n] = '\0';
    snprintf(err, errsz, "%s answered %ld: %s", srv, code, s.buf);
    break;
  }
out:
  curl_slist_free_all(hdrs);
  free(body);
  free(list);
  return rc;
}
