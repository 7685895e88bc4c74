/* libcurl plumbing shared by the watch and registry threads. */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "client/internal.h"
#include "gray/gray.h"

void gray__buf_free(gray__buf *b) {
  gray__free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  b->too_big = 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg) {
  gray__buf *b = arg;
  size_t n = size * nmemb;
  if (b->len + n > b->max) {
    b->too_big = 1;
    return 0; /* makes libcurl fail the transfer */
  }
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = gray__realloc(b->p, cap);
    if (!p) return 0;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
  return n;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
  atomic_int *flag = arg;
  return flag && atomic_load_explicit(flag, memory_order_relaxed) ? 1 : 0;
}

void *gray__http_new(const gray_client_t *c) {
  CURL *h = curl_easy_init();
  if (!h) return NULL;
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "libgray-client/" GRAY_VERSION_STRING);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  if (c->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
  return h;
}

void gray__http_setup(const gray_client_t *c, void *h, const char *method, const char *url, const char *body,
                      gray__buf *sink, long timeout_ms, atomic_int *abort_flag) {
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, sink);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, abort_flag ? 0L : 1L);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, abort_flag);
  if (!strcmp(method, "GET")) {
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, body ? c->json_hdrs : c->hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? strlen(body) : 0));
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  }
}

int gray__http_perform(void *h, long *status, char *errbuf, size_t errsize) {
  char cerr[CURL_ERROR_SIZE];
  cerr[0] = '\0';
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
  CURLcode res = curl_easy_perform(h);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
  *status = 0;
  if (res != CURLE_OK) {
    snprintf(errbuf, errsize, "%s", cerr[0] ? cerr : curl_easy_strerror(res));
    return -1;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
  return 0;
}

void gray__http_error_text(const gray__buf *b, char *out, size_t size) {
  json_t *doc = b->len ? json_loadb(b->p, b->len, 0, NULL) : NULL;
  const char *msg = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
  size_t n = 0;
  if (msg) {
    snprintf(out, size, "%s", msg);
  } else {
    /* An excerpt, printable characters only. */
    for (size_t i = 0; b->p && i < b->len && n + 1 < size && i < 120; i++)
      out[n++] = (b->p[i] >= 0x20 && b->p[i] < 0x7f) ? b->p[i] : ' ';
    out[n] = '\0';
  }
  json_decref(doc);
}
