/* tunnel: the cmg-tunnel/1 protocol between cmg-connector and cmg-gateway. Sans-I/O: these
 * functions turn messages into bytes and bytes into messages; the HTTP/2 transport lives with
 * the programs that use them. */
#ifndef CMG_TUNNEL_H
#define CMG_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "tunnel-t.h"

/* Writes the hello request target ("/cmg/v1/hello?instance=0&workers=2&tunnels=2") into buf.
 * Returns its length, or -1 if it does not fit. */
int tunnel_gateway_hello_format(const struct tunnel_gateway_hello *h, char *buf, size_t len);
/* Parses a hello request target. Returns 0, or -1 with a reason in err. */
int tunnel_gateway_hello_parse(const char *target, size_t len, struct tunnel_gateway_hello *out,
                               char *err, size_t errlen);

/* Encodes the connector's reply as JSON into a malloc'd string (caller frees), NULL on failure:
 * {"version":1,"connector":"cp1.contoso.com","site":"PS1",
 *  "endpoints":[{"role_id":"72057594037927939","kind":"MP"}]}
 * Role ids are strings: they are 64-bit and JSON numbers are not. */
char *tunnel_hello_reply_encode(const struct tunnel_hello_reply *r);
/* Parses and checks a reply. Returns 0, or -1 with a reason in err. */
int tunnel_hello_reply_parse(const char *json, size_t len, struct tunnel_hello_reply *out,
                             char *err, size_t errlen);

const char *tunnel_role_kind_name(enum tunnel_role_kind kind);

/* ---- HTTP/2 plumbing shared by both ends (h2io.c) ---- */
struct evbuffer;
/* True when the TLS connection agreed on ALPN cmg-tunnel/1. */
bool tunnel_alpn_ok(const SSL *ssl);
/* The session's first SETTINGS and its connection-level receive window. 0 or an nghttp2 error. */
int tunnel_h2_settings(nghttp2_session *h2, const nghttp2_settings_entry *iv, size_t n,
                       int32_t connection_window);
/* Feeds what `in` holds to the session (its callbacks run meanwhile), until it is empty or
 * *stop is set by a callback. 0 or the nghttp2 error. */
int tunnel_h2_recv(nghttp2_session *h2, struct evbuffer *in, const bool *stop);
/* Moves the session's frames into `out` while it holds less than `high` bytes. *finished: the
 * session wants nothing more either way and everything was handed over. 0 or an nghttp2 error. */
int tunnel_h2_send(nghttp2_session *h2, struct evbuffer *out, size_t high, bool *finished);

#endif
