/* TLS 1.3 for bf-serve and bf-client (OpenSSL), below the frame layer.
 *
 * A connection stays named by its socket: bf_tls_accept / bf_tls_connect bind
 * a TLS session to the fd, and from then on bf_net_send / bf_net_recv (net.c)
 * move the same frames through it, with the same deadlines and the same
 * close / reset / timeout reports as plain TCP. frame.c, server.c and
 * client.c do not branch on the transport. A socket with a session must be
 * closed with bf_net_close (it releases the session; a plain close() would
 * leave it bound to the next socket with that number), once no thread does
 * I/O on it any more. One thread at a time does I/O on a connection (a
 * shutdown(2) from another thread, to wake it, is fine).
 *
 * TLS writes go through write(2): a process using TLS must ignore SIGPIPE
 * (bf-serve and bf-client do), as it must for plain sockets anyway.
 * Trust model and certificate recipes: docs/security.md. */
#ifndef BF_TLS_H
#define BF_TLS_H

#include <stddef.h>

typedef struct bf_tls_ctx bf_tls_ctx;

/* Server: certificate chain and key (PEM). client_ca (PEM, may be NULL):
 * mutual TLS, a client must present a certificate issued by it. allow_file
 * (may be NULL; needs client_ca): which client certificate may use which
 * split, lines of 'cn:NAME SPLITS' or 'sha256:FINGERPRINT SPLITS', SPLITS a
 * comma list of split numbers or '*' (docs/security.md). */
int bf_tls_server_new(bf_tls_ctx **out, const char *cert, const char *key, const char *client_ca,
                      const char *allow_file);
/* Client: ca (PEM; NULL: the system's trust store) verifies the server;
 * cert/key (both or neither): the client certificate for mutual TLS;
 * server_name (NULL: the host of the address connected to) is the DNS name
 * or IP address the server certificate must carry. */
int bf_tls_client_new(bf_tls_ctx **out, const char *ca, const char *cert, const char *key, const char *server_name);
void bf_tls_free(bf_tls_ctx *t);

/* Every split named in the allow file must be one the server serves
 * (a typo would otherwise lock a client out silently). */
int bf_tls_check_splits(const bf_tls_ctx *t, const int *splits, int n);

/* Handshake on a connected socket before the absolute deadline (bf_now_sec);
 * on success the session is bound to fd. t == NULL: plain TCP, nothing to do. */
int bf_tls_accept(const bf_tls_ctx *t, int fd, double deadline);
int bf_tls_connect(const bf_tls_ctx *t, int fd, const char *host, double deadline);

/* Server: may the peer on fd use split `split_after`? 0, or BF_PERR_FORBIDDEN
 * with a message naming the client. Always 0 without an allow list. */
int bf_tls_authorize(int fd, int split_after);

/* ---- transport primitives for net.c ---- */
enum { BF_TLS_PLAIN = -1, BF_IO_DONE = 0, BF_IO_WANT_READ, BF_IO_WANT_WRITE, BF_IO_EOF, BF_IO_RESET, BF_IO_ERR };
/* Non-blocking: moves up to len bytes (*n of them). BF_TLS_PLAIN when fd has
 * no session; BF_IO_ERR with a message (bf_last_error) for a TLS failure. */
int bf_tls_read(int fd, void *buf, size_t len, size_t *n);
int bf_tls_write(int fd, const void *buf, size_t len, size_t *n);
/* 1 if fd's TLS session holds received bytes not yet read (a poll on the
 * socket would not see them), else 0. */
int bf_tls_pending(int fd);
/* Sends close_notify (best effort, non-blocking) and frees fd's session. */
void bf_tls_release(int fd);

#endif
