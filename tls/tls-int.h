/* Declarations shared by the tls module's own files only. */
#ifndef CMG_TLS_INT_H
#define CMG_TLS_INT_H

#include "tls.h"

/* client.c: makes ctx ask for client certificates and judge them against t (borrowed for the
 * context's life). */
void tls_client_ctx_setup(SSL_CTX *ctx, const struct tls_client_trust *t);

#endif
