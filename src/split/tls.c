#include "tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "bf_core.h"
#include "frame.h"
#include "net.h"

/* One allow-list line: a client identity and the splits it may use. */
typedef struct rule {
  int by_cn;           /* 1: cn, 0: sha256 */
  char cn[128];
  unsigned char fp[32];
  int all;             /* '*' */
  int *splits, n_splits;
  int line;
} rule;

struct bf_tls_ctx {
  SSL_CTX *ssl;
  int server;
  char ca_desc[300];   /* where the trust anchors came from, for messages */
  char name[256];      /* client: the name to verify instead of the host */
  char allow_path[256];
  rule *rules;
  int n_rules, has_allow;
};

/* A live session, bound to its socket number. */
typedef struct session {
  SSL *ssl;
  const bf_tls_ctx *ctx;
  char cn[128];         /* verified client certificate (server side) */
  unsigned char fp[32];
  int has_cert;
} session;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static session **g_tab;
static int g_cap;

static session *lookup(int fd) {
  pthread_mutex_lock(&g_mu);
  session *s = fd >= 0 && fd < g_cap ? g_tab[fd] : NULL;
  pthread_mutex_unlock(&g_mu);
  return s;
}

static int bind_fd(int fd, session *s) {
  pthread_mutex_lock(&g_mu);
  if (fd >= g_cap) {
    int cap = g_cap ? g_cap : 64;
    while (cap <= fd) cap *= 2;
    session **t = realloc(g_tab, (size_t)cap * sizeof *t);
    if (!t) {
      pthread_mutex_unlock(&g_mu);
      return bf_error(BF_ENOMEM, "out of memory for the TLS session table");
    }
    memset(t + g_cap, 0, (size_t)(cap - g_cap) * sizeof *t);
    g_tab = t, g_cap = cap;
  }
  session *old = g_tab[fd];
  g_tab[fd] = s;
  pthread_mutex_unlock(&g_mu);
  if (old) { /* a socket closed without bf_net_close: never reuse its state */
    SSL_free(old->ssl);
    free(old);
  }
  return BF_OK;
}

/* Drains OpenSSL's (per-thread) error queue into one line: the reasons,
 * most specific last, without the numeric codes. */
static void drain_errors(char *out, size_t cap) {
  size_t off = 0;
  out[0] = 0;
  unsigned long e;
  int sys = 0;
  while ((e = ERR_get_error()) != 0) {
    /* a failed system call (fopen of a missing file) carries its errno */
    const char *r = ERR_SYSTEM_ERROR(e) ? strerror(ERR_GET_REASON(e)) : ERR_reason_error_string(e);
    char num[32];
    if (!r) {
      snprintf(num, sizeof num, "error %lx", e);
      r = num;
    }
    if (ERR_SYSTEM_ERROR(e)) sys = 1;
    else if (sys && ERR_GET_REASON(e) == ERR_R_SYS_LIB) continue; /* "system lib": said already */
    if (strstr(out, r)) continue; /* the same reason repeated up the stack */
    int n = snprintf(out + off, cap - off, "%s%s", off ? "; " : "", r);
    if (n < 0 || (size_t)n >= cap - off) break;
    off += (size_t)n;
  }
}

/* Records "WHAT: <OpenSSL's reasons>" and returns code. */
static int ssl_fail(int code, const char *what) {
  char q[512];
  drain_errors(q, sizeof q);
  return bf_error(code, "%s: %s", what, q[0] ? q : "unknown OpenSSL error");
}

static int new_ctx(bf_tls_ctx **out, int server) {
  bf_tls_ctx *t = bf_calloc(1, sizeof *t, "TLS context");
  if (!t) return BF_ENOMEM;
  t->server = server;
  ERR_clear_error();
  t->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!t->ssl) {
    free(t);
    return ssl_fail(BF_EIO, "TLS: cannot create a context");
  }
  /* TLS 1.3 only: no version or cipher negotiation to get wrong. */
  if (SSL_CTX_set_min_proto_version(t->ssl, TLS1_3_VERSION) != 1) {
    bf_tls_free(t);
    return ssl_fail(BF_EIO, "TLS: cannot require TLS 1.3");
  }
  /* Partial writes: net.c paces and resumes sends itself. Frames are
   * length-prefixed and CRC-checked, so a close without close_notify is
   * judged by the frame layer (between frames: a clean close, as over plain
   * TCP; inside one: a truncated frame), not by TLS. */
  SSL_CTX_set_mode(t->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(t->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
  *out = t;
  return BF_OK;
}

static int load_identity(bf_tls_ctx *t, const char *cert, const char *key, const char *who) {
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(t->ssl, cert) != 1) {
    char w[600];
    snprintf(w, sizeof w, "TLS: %s certificate %s", who, cert);
    return ssl_fail(BF_EINVAL, w);
  }
  if (SSL_CTX_use_PrivateKey_file(t->ssl, key, SSL_FILETYPE_PEM) != 1) {
    char w[900];
    snprintf(w, sizeof w, "TLS: %s key %s (for the certificate %s)", who, key, cert);
    return ssl_fail(BF_EINVAL, w);
  }
  if (SSL_CTX_check_private_key(t->ssl) != 1) {
    char w[600];
    snprintf(w, sizeof w, "TLS: %s key %s does not belong to the certificate %s", who, key, cert);
    return ssl_fail(BF_EINVAL, w);
  }
  return BF_OK;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int parse_rule(bf_tls_ctx *t, char *line, int lineno) {
  const char *path = t->allow_path;
  char *save = NULL, *id = strtok_r(line, " \t\r\n", &save), *list = strtok_r(NULL, " \t\r\n", &save);
  if (!id || id[0] == '#') return BF_OK;
  if (!list || strtok_r(NULL, " \t\r\n", &save))
    return bf_error(BF_EINVAL, "%s:%d: expected 'cn:NAME SPLITS' or 'sha256:FINGERPRINT SPLITS'", path, lineno);
  rule *rs = realloc(t->rules, (size_t)(t->n_rules + 1) * sizeof *rs);
  if (!rs) return bf_error(BF_ENOMEM, "%s: out of memory", path);
  t->rules = rs;
  rule *r = &rs[t->n_rules];
  memset(r, 0, sizeof *r);
  r->line = lineno;
  if (!strncmp(id, "cn:", 3)) {
    r->by_cn = 1;
    if (!id[3] || strlen(id + 3) >= sizeof r->cn) return bf_error(BF_EINVAL, "%s:%d: empty or overlong cn", path, lineno);
    strcpy(r->cn, id + 3);
  } else if (!strncmp(id, "sha256:", 7)) {
    int n = 0;
    for (const char *p = id + 7; *p; p++) {
      if (*p == ':') continue;
      int hi = hexval(p[0]), lo = p[1] ? hexval(p[1]) : -1;
      if (hi < 0 || lo < 0 || n >= 32)
        return bf_error(BF_EINVAL, "%s:%d: sha256 fingerprint must be 64 hex digits (colons allowed)", path, lineno);
      r->fp[n++] = (unsigned char)(hi << 4 | lo);
      p++;
    }
    if (n != 32)
      return bf_error(BF_EINVAL, "%s:%d: sha256 fingerprint must be 64 hex digits (colons allowed)", path, lineno);
  } else {
    return bf_error(BF_EINVAL, "%s:%d: identity '%s' must start with cn: or sha256:", path, lineno, id);
  }
  t->n_rules++; /* owned from here on: freed with the context */
  if (!strcmp(list, "*")) {
    r->all = 1;
    return BF_OK;
  }
  for (char *s2 = NULL, *tok = strtok_r(list, ",", &s2); tok; tok = strtok_r(NULL, ",", &s2)) {
    char *end;
    long k = strtol(tok, &end, 10);
    if (*end || end == tok || k < 1 || k > 65535)
      return bf_error(BF_EINVAL, "%s:%d: split '%s' is not a split number (or '*')", path, lineno, tok);
    int *sp = realloc(r->splits, (size_t)(r->n_splits + 1) * sizeof *sp);
    if (!sp) return bf_error(BF_ENOMEM, "%s: out of memory", path);
    r->splits = sp;
    r->splits[r->n_splits++] = (int)k;
  }
  return BF_OK;
}

static int load_allow(bf_tls_ctx *t, const char *path) {
  snprintf(t->allow_path, sizeof t->allow_path, "%s", path);
  t->has_allow = 1;
  FILE *f = fopen(path, "r");
  if (!f) return bf_error(BF_EIO, "cannot open the allow list %s: %s", path, strerror(errno));
  char line[1024];
  int lineno = 0, rc = BF_OK;
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    if (!strchr(line, '\n') && !feof(f)) rc = bf_error(BF_EINVAL, "%s:%d: line too long", path, lineno);
    else rc = parse_rule(t, line, lineno);
  }
  if (!rc && ferror(f)) rc = bf_error(BF_EIO, "reading %s failed", path);
  fclose(f);
  if (!rc && !t->n_rules) rc = bf_error(BF_EINVAL, "%s: no rules (every client would be refused)", path);
  return rc;
}

int bf_tls_server_new(bf_tls_ctx **out, const char *cert, const char *key, const char *client_ca,
                      const char *allow_file) {
  *out = NULL;
  if (!cert || !key) return bf_error(BF_EINVAL, "TLS: a server needs both a certificate and a key");
  if (allow_file && !client_ca)
    return bf_error(BF_EINVAL, "TLS: an allow list names client certificates: it needs a client CA (mutual TLS)");
  bf_tls_ctx *t;
  BF_TRY(new_ctx(&t, 1));
  int rc = load_identity(t, cert, key, "server");
  if (!rc && client_ca) {
    snprintf(t->ca_desc, sizeof t->ca_desc, "%s", client_ca);
    ERR_clear_error();
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client_ca);
    if (SSL_CTX_load_verify_locations(t->ssl, client_ca, NULL) != 1 || !names) {
      char w[400];
      snprintf(w, sizeof w, "TLS: client CA %s", client_ca);
      rc = ssl_fail(BF_EINVAL, w);
      sk_X509_NAME_pop_free(names, X509_NAME_free);
    } else {
      SSL_CTX_set_client_CA_list(t->ssl, names); /* takes ownership */
      SSL_CTX_set_verify(t->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
  }
  /* Clients keep one connection and never resume: no session tickets. */
  if (!rc && SSL_CTX_set_num_tickets(t->ssl, 0) != 1) rc = ssl_fail(BF_EIO, "TLS: cannot disable session tickets");
  if (!rc && allow_file) rc = load_allow(t, allow_file);
  if (rc) {
    bf_tls_free(t);
    return rc;
  }
  *out = t;
  return BF_OK;
}

int bf_tls_client_new(bf_tls_ctx **out, const char *ca, const char *cert, const char *key, const char *server_name) {
  *out = NULL;
  if (!cert != !key) return bf_error(BF_EINVAL, "TLS: a client certificate needs its key (and a key its certificate)");
  bf_tls_ctx *t;
  BF_TRY(new_ctx(&t, 0));
  int rc = BF_OK;
  ERR_clear_error();
  if (ca) {
    snprintf(t->ca_desc, sizeof t->ca_desc, "the CA file %s", ca);
    if (SSL_CTX_load_verify_locations(t->ssl, ca, NULL) != 1) {
      char w[400];
      snprintf(w, sizeof w, "TLS: CA file %s", ca);
      rc = ssl_fail(BF_EINVAL, w);
    }
  } else {
    snprintf(t->ca_desc, sizeof t->ca_desc, "the system's trust store");
    if (SSL_CTX_set_default_verify_paths(t->ssl) != 1) rc = ssl_fail(BF_EIO, "TLS: the system's trust store");
  }
  SSL_CTX_set_verify(t->ssl, SSL_VERIFY_PEER, NULL);
  if (!rc && cert) rc = load_identity(t, cert, key, "client");
  if (!rc && server_name) {
    if (!server_name[0] || strlen(server_name) >= sizeof t->name) rc = bf_error(BF_EINVAL, "TLS: bad server name");
    else snprintf(t->name, sizeof t->name, "%s", server_name);
  }
  if (rc) {
    bf_tls_free(t);
    return rc;
  }
  *out = t;
  return BF_OK;
}

void bf_tls_free(bf_tls_ctx *t) {
  if (!t) return;
  SSL_CTX_free(t->ssl);
  for (int i = 0; i < t->n_rules; i++) free(t->rules[i].splits);
  free(t->rules);
  free(t);
}

int bf_tls_check_splits(const bf_tls_ctx *t, const int *splits, int n) {
  if (!t) return BF_OK;
  for (int i = 0; i < t->n_rules; i++)
    for (int j = 0; j < t->rules[i].n_splits; j++) {
      int k = t->rules[i].splits[j], found = 0;
      for (int m = 0; m < n; m++) found |= splits[m] == k;
      if (!found) return bf_error(BF_EINVAL, "%s:%d: split %d is not served here", t->allow_path, t->rules[i].line, k);
    }
  return BF_OK;
}

/* Runs SSL_accept / SSL_connect on the non-blocking socket until done, a
 * failure or the deadline. */
static int handshake(session *s, int fd, double deadline, const char *peer) {
  for (;;) {
    ERR_clear_error();
    int r = s->ctx->server ? SSL_accept(s->ssl) : SSL_connect(s->ssl);
    if (r == 1) return BF_OK;
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      int ready = bf_net_wait(fd, e == SSL_ERROR_WANT_WRITE, deadline);
      if (ready < 0) return bf_error(BF_EIO, "TLS handshake with %s: poll: %s", peer, strerror(errno));
      if (!ready) return bf_error(BF_EIO, "TLS handshake with %s timed out", peer);
      continue;
    }
    long v = SSL_get_verify_result(s->ssl);
    char q[512];
    int errno_saved = errno;
    drain_errors(q, sizeof q);
    if (v != X509_V_OK && !s->ctx->server)
      return bf_error(BF_EIO, "TLS handshake with %s failed: the server's certificate did not verify against %s (%s)",
                      peer, s->ctx->ca_desc, X509_verify_cert_error_string(v));
    if (v != X509_V_OK)
      return bf_error(BF_EIO, "TLS handshake with %s failed: the client certificate did not verify against %s (%s)",
                      peer, s->ctx->ca_desc, X509_verify_cert_error_string(v));
    if (e == SSL_ERROR_SYSCALL && !q[0])
      return bf_error(BF_EIO, "TLS handshake with %s failed: %s", peer,
                      errno_saved ? strerror(errno_saved) : "the peer closed the connection (not a TLS peer?)");
    return bf_error(BF_EIO, "TLS handshake with %s failed: %s%s", peer, q[0] ? q : "unknown OpenSSL error",
                    !s->ctx->server && strstr(q, "wrong version number") ? " (the server does not speak TLS?)" : "");
  }
}

/* A plain-TCP client talking to a TLS server sends a frame ('B' of BFLY)
 * where a TLS ClientHello (a handshake record, 0x16) belongs: it is told so
 * in a plain ERROR frame, instead of seeing the connection drop. */
static int refuse_plain_client(int fd, double deadline) {
  unsigned char b = 0;
  if (bf_net_wait(fd, 0, deadline) <= 0) return BF_OK; /* the handshake reports the timeout */
  if (recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) != 1 || b != (unsigned char)BF_FRAME_MAGIC[0]) return BF_OK;
  bf_net_send_error(fd, 0, NULL, BF_PERR_BAD_FRAME,
                    "this server speaks TLS only: connect with TLS (bf-client --tls-ca, docs/security.md)");
  return bf_error(BF_EIO, "the client sent a plain frame, not a TLS handshake: refused");
}

/* The verified client certificate's CN (absent unless one UTF-8 string
 * without NUL) and SHA-256 fingerprint, for the allow list. */
static void peer_identity(session *s) {
  X509 *x = SSL_get0_peer_certificate(s->ssl);
  if (!x) return;
  unsigned int n = 0;
  if (X509_digest(x, EVP_sha256(), s->fp, &n) != 1 || n != 32) {
    ERR_clear_error();
    return;
  }
  s->has_cert = 1;
  X509_NAME *subj = X509_get_subject_name(x);
  int i = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
  if (i < 0) return;
  unsigned char *u = NULL;
  int len = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));
  if (len > 0 && (size_t)len < sizeof s->cn && strlen((char *)u) == (size_t)len) memcpy(s->cn, u, (size_t)len + 1);
  OPENSSL_free(u);
  ERR_clear_error();
}

static int start(const bf_tls_ctx *t, int fd, const char *host, double deadline) {
  if (!t) return BF_OK;
  char peer[300];
  if (host) snprintf(peer, sizeof peer, "%s", host);
  else snprintf(peer, sizeof peer, "the client");
  /* TLS needs a non-blocking socket so that every read and write honours
   * net.c's deadlines (plain I/O uses MSG_DONTWAIT and does not care). */
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return bf_error(BF_EIO, "TLS: cannot make the socket non-blocking: %s", strerror(errno));
  if (t->server) BF_TRY(refuse_plain_client(fd, deadline));
  session *s = bf_calloc(1, sizeof *s, "TLS session");
  if (!s) return BF_ENOMEM;
  s->ctx = t;
  ERR_clear_error();
  s->ssl = SSL_new(t->ssl);
  int rc = s->ssl ? BF_OK : ssl_fail(BF_EIO, "TLS: cannot create a session");
  if (!rc && SSL_set_fd(s->ssl, fd) != 1) rc = ssl_fail(BF_EIO, "TLS: cannot attach the socket");
  if (!rc && !t->server) {
    /* The certificate must name what we connected to (or --tls-server-name):
     * an IP address against its IP SANs, a name against its DNS SANs. */
    const char *name = t->name[0] ? t->name : host;
    unsigned char ip[16];
    X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
    int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) != 1
              : (X509_VERIFY_PARAM_set1_host(vp, name, 0) != 1 || SSL_set_tlsext_host_name(s->ssl, name) != 1))
      rc = ssl_fail(BF_EINVAL, "TLS: cannot set the name to verify");
  }
  if (!rc) rc = handshake(s, fd, deadline, peer);
  if (!rc && t->server) peer_identity(s);
  if (!rc) rc = bind_fd(fd, s);
  if (rc) {
    SSL_free(s->ssl);
    free(s);
  }
  return rc;
}

int bf_tls_accept(const bf_tls_ctx *t, int fd, double deadline) { return start(t, fd, NULL, deadline); }

int bf_tls_connect(const bf_tls_ctx *t, int fd, const char *host, double deadline) {
  return start(t, fd, host, deadline);
}

static void describe_peer(const session *s, char *out, size_t cap) {
  char hex[17];
  for (int i = 0; i < 8; i++) snprintf(hex + 2 * i, 3, "%02x", s->fp[i]);
  snprintf(out, cap, "CN=%s, sha256 %s...", s->cn[0] ? s->cn : "(none)", hex);
}

int bf_tls_authorize(int fd, int split_after) {
  session *s = lookup(fd);
  if (!s || !s->ctx->has_allow) return BF_OK;
  for (int i = 0; s->has_cert && i < s->ctx->n_rules; i++) {
    const rule *r = &s->ctx->rules[i];
    if (r->by_cn ? strcmp(r->cn, s->cn) != 0 || !s->cn[0] : memcmp(r->fp, s->fp, 32) != 0) continue;
    if (r->all) return BF_OK;
    for (int j = 0; j < r->n_splits; j++)
      if (r->splits[j] == split_after) return BF_OK;
  }
  char who[200];
  describe_peer(s, who, sizeof who);
  return bf_error(BF_PERR_FORBIDDEN, "client certificate %s may not use split-%d (server's allow list)", who,
                  split_after);
}

/* SSL_read / SSL_write's outcome in the transport's terms. */
static int io_result(session *s, int r, int writing, size_t *n) {
  if (r > 0) {
    *n = (size_t)r;
    return BF_IO_DONE;
  }
  *n = 0;
  int e = SSL_get_error(s->ssl, r);
  switch (e) {
  case SSL_ERROR_WANT_READ: return BF_IO_WANT_READ;
  case SSL_ERROR_WANT_WRITE: return BF_IO_WANT_WRITE;
  case SSL_ERROR_ZERO_RETURN: return BF_IO_EOF;
  case SSL_ERROR_SYSCALL: {
    int err = errno;
    char q[512];
    drain_errors(q, sizeof q);
    if (q[0]) return bf_error(BF_IO_ERR, "TLS: %s", q);
    if (err == ECONNRESET || err == EPIPE) return BF_IO_RESET;
    if (err == EAGAIN || err == EINTR) return writing ? BF_IO_WANT_WRITE : BF_IO_WANT_READ;
    if (!err) return BF_IO_EOF;
    errno = err;
    return bf_error(BF_IO_ERR, "TLS: %s", strerror(err));
  }
  default: {
    char q[512];
    drain_errors(q, sizeof q);
    /* An alert from the peer is its refusal (e.g. "tlsv13 alert certificate
     * required": mutual TLS and no client certificate). */
    if (strstr(q, "alert")) return bf_error(BF_IO_ERR, "TLS: the peer ended the session: %s", q);
    return bf_error(BF_IO_ERR, "TLS: %s", q[0] ? q : "unknown OpenSSL error");
  }
  }
}

int bf_tls_read(int fd, void *buf, size_t len, size_t *n) {
  session *s = lookup(fd);
  if (!s) return BF_TLS_PLAIN;
  if (len > 1u << 30) len = 1u << 30;
  ERR_clear_error();
  errno = 0;
  return io_result(s, SSL_read(s->ssl, buf, (int)len), 0, n);
}

int bf_tls_write(int fd, const void *buf, size_t len, size_t *n) {
  session *s = lookup(fd);
  if (!s) return BF_TLS_PLAIN;
  if (len > 1u << 30) len = 1u << 30;
  ERR_clear_error();
  errno = 0;
  return io_result(s, SSL_write(s->ssl, buf, (int)len), 1, n);
}

int bf_tls_pending(int fd) {
  session *s = lookup(fd);
  return s && SSL_has_pending(s->ssl);
}

void bf_tls_release(int fd) {
  pthread_mutex_lock(&g_mu);
  session *s = fd >= 0 && fd < g_cap ? g_tab[fd] : NULL;
  if (s) g_tab[fd] = NULL;
  pthread_mutex_unlock(&g_mu);
  if (!s) return;
  /* close_notify, if the socket still takes it; a peer that is gone or a
   * socket already shut down is not an error here. */
  ERR_clear_error();
  if (SSL_shutdown(s->ssl) < 0) ERR_clear_error();
  SSL_free(s->ssl);
  free(s);
}
