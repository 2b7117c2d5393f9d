/* The HTTP/2 plumbing both ends of a tunnel share: the ALPN check, the session's first
 * SETTINGS, and moving bytes between a TLS connection's buffers and the nghttp2 session. */
#include <string.h>

#include <event2/buffer.h>
#include <openssl/ssl.h>

#include "tunnel.h"

bool tunnel_alpn_ok(const SSL *ssl)
{
    const unsigned char *alpn = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &len);
    return len == strlen(TUNNEL_ALPN) && memcmp(alpn, TUNNEL_ALPN, len) == 0;
}

int tunnel_h2_settings(nghttp2_session *h2, const nghttp2_settings_entry *iv, size_t n,
                       int32_t connection_window)
{
    int rc = nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, iv, n);
    if (rc == 0)
        rc = nghttp2_session_set_local_window_size(h2, NGHTTP2_FLAG_NONE, 0, connection_window);
    return rc;
}

int tunnel_h2_recv(nghttp2_session *h2, struct evbuffer *in, const bool *stop)
{
    while (!*stop && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(h2, v.iov_base, v.iov_len);
        if (n < 0)
            return (int)n;
        evbuffer_drain(in, (size_t)n);
    }
    return 0;
}

int tunnel_h2_send(nghttp2_session *h2, struct evbuffer *out, size_t high, bool *finished)
{
    *finished = false;
    while (evbuffer_get_length(out) < high) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h2, &data);
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        evbuffer_add(out, data, (size_t)n);
    }
    *finished = !nghttp2_session_want_read(h2) && !nghttp2_session_want_write(h2) &&
                evbuffer_get_length(out) == 0;
    return 0;
}
