/* graylane example: `order-dal`, the data-access service at the end of the
 * chain. Run it as v1 and as v2:
 *
 *   order-dal --version v1 --grayd http://127.0.0.1:7070
 *   order-dal --version v2 --grayd http://127.0.0.1:7070
 *
 * It answers with its version and the X-Gray-Tag it saw, so a test (or a
 * person with curl) can see which version each lane reached. Its only SDK
 * use is registering itself; callers find it in the registry. */
#include "example.h"

static void handle(struct evhttp_request *req, void *arg) {
  ex_app_t *app = arg;
  struct evbuffer *hop = evbuffer_new();

  if (!hop) {
    evhttp_send_error(req, 503, "out of memory");
    return;
  }
  ex_hop_begin(hop, app, ex_tag_in(req));
  ex_hop_end(hop);
  ex_reply(req, 200, hop);
}

int main(int argc, char **argv) {
  ex_app_t app;
  int rc = ex_start(&app, "order-dal", "order-dal", argc, argv, handle);
  return rc ? rc : ex_run(&app);
}
