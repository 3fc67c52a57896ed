/*
 * wsmux's load generator: one scenario per run, results as one JSON line on
 * standard output.  Loopback only; bounded in time and count.
 *
 *   loadgen SCENARIO PORT [--deflate] [--seconds N] [--server-pid PID] [--count N]
 *           [--warmup MS] [--tls [--tls-resume] [--sni NAME]]
 *
 * SCENARIO is echo (64-byte text, 50 connections, 8 in flight each), big
 * (1 MiB binary, 4 connections, 1 in flight), latency (64-byte text, one
 * connection, one message in flight: the round trip alone), broadcast (1,000 subscribers
 * and a publisher in one room, 64-byte text, 4 messages in flight),
 * handshakes (20 concurrent connectors: open, close, again) or idle (5,000
 * open connections; prints {"ready": N}, waits for a line on standard input;
 * with --deflate each first has a 2 KiB text message echoed, compressed).
 *
 * Written in C, one thread on epoll, so that it stays faster than every
 * server it measures: the Node ws client it replaces was itself the limit
 * in most scenarios.  It is a real client all the same: every frame it
 * sends is masked with a fresh key, it checks each 101 and its
 * Sec-WebSocket-Accept, answers pings, reassembles fragments, does the
 * closing handshake, and with --deflate negotiates permessage-deflate and
 * honours the parameters the server answers with (zlib).  It checks what it
 * gets: every echoed message is numbered and must come back byte for byte,
 * and every broadcast delivery must be a message published, byte for byte;
 * a wrong byte ends the run with an error.
 *
 * With --count N, handshakes does exactly N handshakes, as fast as it can,
 * and reports how long they took: for counting the server's instructions per
 * handshake (valgrind --tool=callgrind), which, unlike time, the machine's
 * other work does not change.
 *
 * Every result carries the CPU the server process and this process used in
 * the measured window (1.0 = one core busy the whole time), so a report can
 * show which side was the limit.
 *
 * With --tls it speaks wss: TLS through OpenSSL, with SNI (--sni, "localhost"
 * by default), the server's certificate not verified (a benchmark, on
 * loopback), and each connection a full TLS handshake unless --tls-resume,
 * which resumes the last session the server gave (a ticket or an ID).
 *
 * Build: cc -O2 -o loadgen loadgen.c -lz -lssl -lcrypto  (bench/run.py does it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_CONNECTING 100
#define MAX_MESSAGE (64u * 1024 * 1024)
#define MAX_HEAD 8192
#define IN_FLIGHT_MAX 16
#define KEYS 256

/* ------------------------------------------------------------------ util */

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t random32(void) {
    /* xorshift64*: masking keys need to be unpredictable to proxies, not
     * to an attacker; this is a benchmark client. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

typedef struct {
    uint8_t *p;
    size_t off, len, cap; /* live bytes are p[off:len] */
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->off == b->len) b->off = b->len = 0;
    if (b->len + extra <= b->cap) return;
    if (b->off) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) die("out of memory");
    b->cap = cap;
}

static void buf_append(buf_t *b, const void *data, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_free(buf_t *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

typedef struct {
    double *v;
    size_t n, cap;
} samples_t;

static void sample(samples_t *s, double x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) die("out of memory");
    }
    s->v[s->n++] = x;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Writes "null" or the p-th percentile, as the Node generator did. */
static void print_percentile(const char *name, samples_t *s, double p) {
    if (!s->n) {
        printf("\"%s\": null", name);
        return;
    }
    size_t i = (size_t)(s->n * p);
    if (i >= s->n) i = s->n - 1;
    printf("\"%s\": %.3f", name, s->v[i]);
}

/* --------------------------------------------------- options and window */

static const char *scenario;
static int port;
static int deflate_wanted;
static double seconds = 5;
static double warmup_ms = 1000; /* --warmup MS: load before the window opens */
static int server_pid;
static int epoll_fd;
static long count; /* handshakes: exactly this many, when set */
static SSL_CTX *tls;             /* with --tls */
static int tls_resume;           /* with --tls-resume */
static const char *sni = "localhost";
static SSL_SESSION *last_session; /* the one to resume */
static int tls_wanted;
static long resumed; /* TLS handshakes that resumed a session */

/* OpenSSL's word that the server gave a session: the next connection
 * resumes it. */
static int keep_session(SSL *ssl, SSL_SESSION *session) {
    (void)ssl;
    if (last_session) SSL_SESSION_free(last_session);
    last_session = session;
    return 1; /* kept: OpenSSL must not free it */
}
static long started, completed;
static double first_start;

/* CPU seconds used so far by the server (all its threads) and by us. */
static double server_cpu_seconds(void) {
    if (!server_pid) return -1;
    char path[64], stat[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = 0;
    /* utime and stime are fields 14 and 15 in clock ticks; the command
     * name may hold spaces, so count from the closing parenthesis. */
    char *p = strrchr(stat, ')');
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

static double own_cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
           u.ru_stime.tv_usec / 1e6;
}

/* The measured window opens warmup_ms after the load starts and closes
 * `seconds` later. */
static struct {
    double opens, closes; /* 0 until the load starts */
    int state;            /* 0 before, 1 open, 2 closed */
    double server0, own0, at0, server_share, own_share;
} window;

static void window_start(void) {
    double t = now_ms();
    window.opens = t + warmup_ms;
    window.closes = window.opens + seconds * 1000;
}

static void window_tick(double t) {
    if (!window.opens) return;
    if (window.state == 0 && t >= window.opens) {
        window.state = 1;
        window.server0 = server_cpu_seconds();
        window.own0 = own_cpu_seconds();
        window.at0 = t;
    } else if (window.state == 1 && t >= window.closes) {
        window.state = 2;
        double wall = (t - window.at0) / 1000;
        double server = server_cpu_seconds();
        window.server_share = server < 0 ? -1 : (server - window.server0) / wall;
        window.own_share = (own_cpu_seconds() - window.own0) / wall;
    }
}

static int window_open(void) { return window.state == 1; }

static int load_over(double t) { return window.opens && t >= window.closes; }

static void print_usage_fields(void) {
    if (window.server_share >= 0)
        printf(", \"server_cpu\": %.3f", window.server_share);
    else
        printf(", \"server_cpu\": null");
    printf(", \"loadgen_cpu\": %.3f", window.own_share);
}

/* Round trips (echo), fan-outs (broadcast) or opening handshakes, in ms. */
static samples_t latencies;

/* ------------------------------------------------------------ handshake */

static struct {
    char key[25];
    char accept[29];
} keys[KEYS];

static void make_keys(void) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    for (int i = 0; i < KEYS; i++) {
        unsigned char raw[16], digest[SHA_DIGEST_LENGTH], text[64];
        if (RAND_bytes(raw, sizeof raw) != 1) die("no random bytes");
        EVP_EncodeBlock((unsigned char *)keys[i].key, raw, sizeof raw);
        int n = snprintf((char *)text, sizeof text, "%s%s", keys[i].key, guid);
        SHA1(text, n, digest);
        EVP_EncodeBlock((unsigned char *)keys[i].accept, digest, sizeof digest);
    }
    RAND_bytes((unsigned char *)&rng_state, sizeof rng_state);
    rng_state |= 1;
}

/* ----------------------------------------------------------- connection */

enum { CONNECTING, TLS_HANDSHAKE, UPGRADING, OPEN, CLOSING };

typedef struct conn {
    int fd, state, key, wants_out, dirty, got_close;
    SSL *ssl;          /* with --tls */
    double opened_at;  /* when connect() was called */
    const char *path;
    buf_t in, out, message;
    size_t need; /* bytes wanted in `in` before the next frame is whole */
    int message_opcode, message_compressed, in_message;
    /* permessage-deflate, when negotiated */
    int pmd, client_no_context, server_no_context;
    z_stream zd, zi;
    /* echo: when each message in flight was sent and its number, oldest
     * first (the reply must be that message, byte for byte) */
    double sent[IN_FLIGHT_MAX];
    uint64_t sent_seq[IN_FLIGHT_MAX];
    int sent_head, sent_count;
    struct conn *next_dirty;
} conn_t;

/* What a scenario does with a connection's events. */
static void on_open(conn_t *c);
static void on_message(conn_t *c, const uint8_t *data, size_t n);
static void on_finished(conn_t *c, const char *error);

static conn_t *dirty_list;
static int connecting, active, connections_made; /* connecting: not open yet */
static buf_t inflated, deflated;

static void watch(conn_t *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->wants_out = out;
}

static void mark_dirty(conn_t *c) {
    if (c->dirty) return;
    c->dirty = 1;
    c->next_dirty = dirty_list;
    dirty_list = c;
}

static conn_t *conn_open(const char *path) {
    conn_t *c = calloc(1, sizeof *c);
    if (!c) die("out of memory");
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS)
        die("connect: %s", strerror(errno));
    c->path = path;
    c->key = connections_made++ % KEYS;
    c->state = CONNECTING;
    c->opened_at = now_ms();
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->wants_out = 1;
    connecting++;
    active++;
    return c;
}

/* Forget c: the scenario has been told (or never needs to be). */
static void conn_free(conn_t *c) {
    if (c->state == CONNECTING || c->state == TLS_HANDSHAKE || c->state == UPGRADING) connecting--;
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    active--;
    if (c->pmd) {
        deflateEnd(&c->zd);
        inflateEnd(&c->zi);
    }
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->message);
    /* Freed by the next flush, after the events of this turn: an event for
     * both directions may still name c (a refused connect is writable and
     * in error at once). */
    c->fd = -1;
    mark_dirty(c);
}

static void conn_fail(conn_t *c, const char *fmt, ...) {
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    on_finished(c, why);
    conn_free(c);
}

/* Write what TLS will take; 0 when it wants to wait, -1 once c is gone. */
static int tls_flush(conn_t *c) {
    while (c->out.len > c->out.off) {
        ERR_clear_error();
        int n = SSL_write(c->ssl, c->out.p + c->out.off, (int)(c->out.len - c->out.off));
        if (n > 0) {
            c->out.off += n;
            continue;
        }
        int error = SSL_get_error(c->ssl, n);
        if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) return 0;
        conn_fail(c, "TLS write failed (%d)", error);
        return -1;
    }
    return 0;
}

static void flush(conn_t *c) {
    if (c->ssl) {
        if (c->state == TLS_HANDSHAKE || tls_flush(c) < 0) return;
        int pending = c->out.len > c->out.off;
        if (pending != c->wants_out) watch(c, pending);
        return;
    }
    while (c->out.len > c->out.off) {
        ssize_t n = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) break;
            if (errno == EINTR) continue;
            conn_fail(c, "send: %s", strerror(errno));
            return;
        }
        c->out.off += n;
    }
    int pending = c->out.len > c->out.off;
    if (pending != c->wants_out) watch(c, pending);
}

static void flush_dirty(void) {
    while (dirty_list) {
        conn_t *c = dirty_list;
        dirty_list = c->next_dirty;
        c->dirty = 0;
        if (c->fd < 0)
            free(c);
        else
            flush(c);
    }
}

/* One frame, masked with a fresh key, onto c's output. */
static void send_frame(conn_t *c, int first_byte, const uint8_t *data, size_t n) {
    uint8_t head[14];
    size_t h = 0;
    head[h++] = first_byte;
    if (n < 126) {
        head[h++] = 0x80 | n;
    } else if (n < 65536) {
        head[h++] = 0x80 | 126;
        head[h++] = n >> 8;
        head[h++] = n;
    } else {
        head[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) head[h++] = (uint64_t)n >> (8 * i);
    }
    uint32_t key = random32();
    memcpy(head + h, &key, 4);
    h += 4;
    buf_reserve(&c->out, h + n);
    uint8_t *dst = c->out.p + c->out.len;
    memcpy(dst, head, h);
    dst += h;
    uint64_t key8 = (uint64_t)key << 32 | key;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, data + i, 8);
        word ^= key8;
        memcpy(dst + i, &word, 8);
    }
    for (; i < n; i++) dst[i] = data[i] ^ ((uint8_t *)&key)[i & 3];
    c->out.len += h + n;
    mark_dirty(c);
}

static void send_message(conn_t *c, int binary, const uint8_t *data, size_t n) {
    int first = 0x80 | (binary ? 2 : 1);
    if (c->pmd) {
        deflated.off = deflated.len = 0;
        c->zd.next_in = (uint8_t *)data;
        c->zd.avail_in = n;
        do {
            buf_reserve(&deflated, n / 2 + 64);
            c->zd.next_out = deflated.p + deflated.len;
            c->zd.avail_out = deflated.cap - deflated.len;
            size_t before = c->zd.avail_out;
            if (deflate(&c->zd, Z_SYNC_FLUSH) == Z_STREAM_ERROR) die("deflate failed");
            deflated.len += before - c->zd.avail_out;
        } while (c->zd.avail_out == 0);
        /* RFC 7692 7.2.1: drop the 00 00 ff ff the sync flush ends with. */
        deflated.len -= 4;
        if (c->client_no_context) deflateReset(&c->zd);
        send_frame(c, first | 0x40, deflated.p, deflated.len);
    } else {
        send_frame(c, first, data, n);
    }
}

/* Every echoed message is different: its number, in its first 16 bytes (as
 * hex digits, so that a text message stays text), then the scenario's
 * payload.  A reply is checked against the message it answers. */
#define SEQ_BYTES 16
static uint64_t next_seq;

static void put_seq(uint8_t *at, uint64_t seq) {
    static const char hex[] = "0123456789abcdef";
    for (int i = SEQ_BYTES - 1; i >= 0; i--, seq >>= 4) at[i] = hex[seq & 15];
}

static void send_echo(conn_t *c, int binary, uint8_t *data, size_t n) {
    if (c->sent_count == IN_FLIGHT_MAX) die("too many messages in flight");
    int slot = (c->sent_head + c->sent_count++) % IN_FLIGHT_MAX;
    c->sent[slot] = now_ms();
    c->sent_seq[slot] = next_seq;
    if (n >= SEQ_BYTES) put_seq(data, next_seq);
    next_seq++;
    send_message(c, binary, data, n);
}

/* When the oldest message in flight was sent (echo replies come in order),
 * or -1 if none was, or -2 if the reply is not that message. */
static double echo_answered(conn_t *c, const uint8_t *data, size_t n, const uint8_t *sent,
                            size_t sent_size) {
    if (!c->sent_count) return -1;
    double t = c->sent[c->sent_head];
    uint64_t seq = c->sent_seq[c->sent_head];
    c->sent_head = (c->sent_head + 1) % IN_FLIGHT_MAX;
    c->sent_count--;
    if (n != sent_size) return -2;
    if (n >= SEQ_BYTES) {
        uint8_t head[SEQ_BYTES];
        put_seq(head, seq);
        if (memcmp(data, head, SEQ_BYTES) != 0) return -2;
        data += SEQ_BYTES, sent += SEQ_BYTES, n -= SEQ_BYTES;
    }
    return memcmp(data, sent, n) == 0 ? t : -2;
}

static void send_close(conn_t *c) {
    static const uint8_t code[2] = {0x03, 0xe8}; /* 1000 */
    send_frame(c, 0x88, code, 2);
    c->state = CLOSING;
}

static void start_upgrade(conn_t *c) {
    char request[512];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     c->path, port, keys[c->key].key,
                     deflate_wanted
                         ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                         : "");
    buf_append(&c->out, request, n);
    c->state = UPGRADING;
    mark_dirty(c);
}

/* The value of header `name` in the response head, or NULL. */
static const char *header(char *head, const char *name, size_t *length) {
    size_t want = strlen(name);
    for (char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        char *start = line + 2;
        if (strncasecmp(start, name, want) == 0 && start[want] == ':') {
            char *value = start + want + 1;
            while (*value == ' ' || *value == '\t') value++;
            char *end = strstr(value, "\r\n");
            while (end > value && (end[-1] == ' ' || end[-1] == '\t')) end--;
            *length = end - value;
            return value;
        }
    }
    return NULL;
}

/* Sets up permessage-deflate from the server's answer; 0 if it declined. */
static int negotiate_deflate(conn_t *c, const char *value, size_t n) {
    char text[256];
    if (!value || n >= sizeof text) return 0;
    memcpy(text, value, n);
    text[n] = 0;
    if (strncasecmp(text, "permessage-deflate", 18) != 0) return 0;
    int client_bits = 15;
    for (char *p = strchr(text, ';'); p; p = strchr(p + 1, ';')) {
        char *param = p + 1;
        while (*param == ' ') param++;
        if (strncasecmp(param, "client_no_context_takeover", 26) == 0)
            c->client_no_context = 1;
        else if (strncasecmp(param, "server_no_context_takeover", 26) == 0)
            c->server_no_context = 1;
        else if (strncasecmp(param, "client_max_window_bits=", 23) == 0)
            client_bits = atoi(param + 23);
    }
    /* zlib's raw deflate takes 9 to 15 bits; 8 would mean 9 (RFC 7692 7.1.2.1
     * lets a client use a smaller window than it may). */
    if (client_bits < 9) client_bits = 9;
    if (client_bits > 15) client_bits = 15;
    if (deflateInit2(&c->zd, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -client_bits, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK ||
        inflateInit2(&c->zi, -15) != Z_OK)
        die("zlib init failed");
    c->pmd = 1;
    return 1;
}

static void finish_upgrade(conn_t *c) {
    uint8_t *start = c->in.p + c->in.off;
    size_t avail = c->in.len - c->in.off;
    uint8_t *end = memmem(start, avail, "\r\n\r\n", 4);
    if (!end) {
        if (avail > MAX_HEAD) conn_fail(c, "response head over %d bytes", MAX_HEAD);
        return;
    }
    size_t length = end + 4 - start;
    char head[MAX_HEAD + 8];
    if (length > MAX_HEAD) {
        conn_fail(c, "response head over %d bytes", MAX_HEAD);
        return;
    }
    memcpy(head, start, length);
    head[length] = 0;
    c->in.off += length;
    size_t n;
    const char *accept = header(head, "sec-websocket-accept", &n);
    if (strncmp(head, "HTTP/1.1 101 ", 13) != 0) {
        char *eol = strstr(head, "\r\n");
        conn_fail(c, "not a 101: %.*s", (int)(eol - head), head);
        return;
    }
    if (!accept || n != 28 || memcmp(accept, keys[c->key].accept, 28) != 0) {
        conn_fail(c, "wrong or missing Sec-WebSocket-Accept");
        return;
    }
    if (deflate_wanted) {
        const char *offer = header(head, "sec-websocket-extensions", &n);
        if (!negotiate_deflate(c, offer, n)) {
            conn_fail(c, "the server did not negotiate permessage-deflate");
            return;
        }
    }
    c->state = OPEN;
    connecting--;
    if (!strcmp(scenario, "handshakes") && window_open()) sample(&latencies, now_ms() - c->opened_at);
    on_open(c);
}

/* A whole message: inflated if need be, then to the scenario. */
static void deliver(conn_t *c, int compressed, const uint8_t *data, size_t n) {
    if (compressed) {
        if (!c->pmd) {
            conn_fail(c, "RSV1 set without permessage-deflate");
            return;
        }
        static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
        inflated.off = inflated.len = 0;
        for (int part = 0; part < 2; part++) {
            c->zi.next_in = (uint8_t *)(part ? tail : data);
            c->zi.avail_in = part ? 4 : n;
            while (c->zi.avail_in) {
                buf_reserve(&inflated, 4 * n + 1024);
                c->zi.next_out = inflated.p + inflated.len;
                c->zi.avail_out = inflated.cap - inflated.len;
                size_t before = c->zi.avail_out;
                int rc = inflate(&c->zi, Z_SYNC_FLUSH);
                if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
                    conn_fail(c, "inflate failed (%d)", rc);
                    return;
                }
                inflated.len += before - c->zi.avail_out;
                if (inflated.len > MAX_MESSAGE) {
                    conn_fail(c, "message over %u bytes", MAX_MESSAGE);
                    return;
                }
                if (rc == Z_STREAM_END) {
                    /* a final block: the next message starts a new stream */
                    inflateReset(&c->zi);
                    part = 2;
                    break;
                }
                if (rc == Z_BUF_ERROR && c->zi.avail_out) break;
            }
        }
        if (c->server_no_context) inflateReset(&c->zi);
        on_message(c, inflated.p, inflated.len);
    } else {
        on_message(c, data, n);
    }
}

/* Returns 0 once c is gone. */
static int frame(conn_t *c, int fin, int rsv1, int opcode, const uint8_t *data, size_t n) {
    int fd = c->fd;
    switch (opcode) {
    case 0x8:
        c->got_close = 1;
        if (c->state == OPEN) send_close(c); /* the server closed first */
        return 1;
    case 0x9:
        send_frame(c, 0x8a, data, n);
        return 1;
    case 0xa:
        return 1;
    case 0x1:
    case 0x2:
        if (c->in_message) {
            conn_fail(c, "a new message inside a fragmented one");
            return 0;
        }
        if (fin) {
            deliver(c, rsv1, data, n);
            return c->fd == fd;
        }
        c->in_message = 1;
        c->message_compressed = rsv1;
        c->message.off = c->message.len = 0;
        buf_append(&c->message, data, n);
        return 1;
    case 0x0:
        if (!c->in_message) {
            conn_fail(c, "a continuation frame outside a message");
            return 0;
        }
        buf_append(&c->message, data, n);
        if (c->message.len > MAX_MESSAGE) {
            conn_fail(c, "message over %u bytes", MAX_MESSAGE);
            return 0;
        }
        if (fin) {
            c->in_message = 0;
            deliver(c, c->message_compressed, c->message.p, c->message.len);
            return c->fd == fd;
        }
        return 1;
    default:
        conn_fail(c, "unknown opcode %d", opcode);
        return 0;
    }
}

static void read_frames(conn_t *c) {
    for (;;) {
        uint8_t *p = c->in.p + c->in.off;
        size_t avail = c->in.len - c->in.off;
        if (avail < 2) return;
        uint64_t n = p[1] & 0x7f;
        size_t h = 2;
        if (p[1] & 0x80) {
            conn_fail(c, "the server sent a masked frame");
            return;
        }
        if (n == 126) {
            if (avail < 4) return;
            n = (uint64_t)p[2] << 8 | p[3];
            h = 4;
        } else if (n == 127) {
            if (avail < 10) return;
            n = 0;
            for (int i = 2; i < 10; i++) n = n << 8 | p[i];
            h = 10;
        }
        if (n > MAX_MESSAGE) {
            conn_fail(c, "a frame of %llu bytes", (unsigned long long)n);
            return;
        }
        if (avail < h + n) {
            c->need = h + n - avail;
            return;
        }
        c->need = 0;
        c->in.off += h + n;
        if (!frame(c, p[0] & 0x80, p[0] & 0x40, p[0] & 0x0f, p + h, n)) return;
    }
}

static void start_upgrade(conn_t *c);

/* One step of the TLS handshake; the upgrade request once it is done. */
static void tls_step(conn_t *c) {
    ERR_clear_error();
    int rc = SSL_connect(c->ssl);
    if (rc == 1) {
        if (SSL_session_reused(c->ssl)) resumed++;
        start_upgrade(c);
        return;
    }
    int error = SSL_get_error(c->ssl, rc);
    if (error == SSL_ERROR_WANT_READ)
        watch(c, 0);
    else if (error == SSL_ERROR_WANT_WRITE)
        watch(c, 1);
    else
        conn_fail(c, "TLS handshake failed (%d: %s)", error,
                  ERR_reason_error_string(ERR_peek_last_error()) ?: "no reason");
}

/* Everything TLS has decrypted for c, into c->in: bytes read, 0 at the end of
 * the connection, -1 when nothing is there yet, -2 once c is gone. */
static ssize_t tls_read(conn_t *c) {
    ssize_t total = 0;
    for (;;) {
        buf_reserve(&c->in, 65536);
        ERR_clear_error();
        int n = SSL_read(c->ssl, c->in.p + c->in.len, (int)(c->in.cap - c->in.len));
        if (n > 0) {
            c->in.len += n;
            total += n;
            continue;
        }
        int error = SSL_get_error(c->ssl, n);
        if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE)
            return total ? total : -1;
        if (error == SSL_ERROR_ZERO_RETURN) {
            /* The server's close_notify: ours goes back, as TLS clients do
             * (a server may wait for it before it closes the connection). */
            SSL_shutdown(c->ssl);
            return total ? total : 0;
        }
        if (error == SSL_ERROR_SYSCALL) return total ? total : 0; /* the TCP end */
        conn_fail(c, "TLS read failed (%d)", error);
        return -2;
    }
}

static void readable(conn_t *c) {
    ssize_t n;
    if (c->state == TLS_HANDSHAKE) {
        tls_step(c);
        return;
    }
    if (c->ssl) {
        n = tls_read(c);
        if (n == -1 || n == -2) return;
        if (n > 0) c->in.len -= n; /* counted again below */
    } else {
        /* One read per event, so that one busy connection does not starve
         * the others; a frame still short of `need` bytes gets a bigger read. */
        size_t want = c->need > 65536 ? (c->need < (1u << 20) ? c->need : (1u << 20)) : 65536;
        buf_reserve(&c->in, want);
        n = recv(c->fd, c->in.p + c->in.len, want, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            conn_fail(c, "recv: %s", strerror(errno));
            return;
        }
    }
    if (n == 0) {
        if (c->state == CLOSING && c->got_close) {
            on_finished(c, NULL);
            conn_free(c);
        } else {
            conn_fail(c, "the server closed the connection (state %d)", c->state);
        }
        return;
    }
    c->in.len += n;
    if (c->state == UPGRADING) {
        finish_upgrade(c);
        if (c->fd < 0 || c->state != OPEN) return;
    }
    read_frames(c);
}

static void writable(conn_t *c) {
    if (c->state == CONNECTING) {
        int error = 0;
        socklen_t size = sizeof error;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &size);
        if (error) {
            conn_fail(c, "connect: %s", strerror(error));
            return;
        }
        if (tls) {
            c->ssl = SSL_new(tls);
            if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) die("SSL_new failed");
            SSL_set_tlsext_host_name(c->ssl, sni);
            if (tls_resume && last_session) SSL_set_session(c->ssl, last_session);
            c->state = TLS_HANDSHAKE;
            tls_step(c);
            return;
        }
        start_upgrade(c);
        return;
    }
    if (c->state == TLS_HANDSHAKE) {
        tls_step(c);
        return;
    }
    flush(c);
}

/* ------------------------------------------------------------ scenarios */

static int target;          /* connections to open (echo, broadcast, idle) */
static int opened, running; /* open connections; those still sending */
static int in_flight;
static int binary;
static uint8_t *payload;
static size_t payload_size;
static double replies, bytes, failed;
static conn_t **open_conns;
static const char *path = "/echo";

/* broadcast */
static conn_t *publisher;
static uint64_t next_id;
static struct {
    uint64_t id;
    double at;
    int remaining, used;
} pending[4];
static int pending_count;
static double last_progress;
static int idle_ready;
static int idle_waiting; /* idle with deflate: first messages not yet echoed */

/* The 64 bytes of message `id`: its number, then padding that varies with
 * it, so that a delivery of the wrong bytes is seen. */
static void published_text(char *text, uint64_t id) {
    int n = snprintf(text, 65, "{\"id\":%llu,\"pad\":\"", (unsigned long long)id);
    for (int i = n; i < 62; i++) text[i] = 'a' + (id + i) % 26;
    memcpy(text + 62, "\"}", 2);
}

static void publish(void) {
    double t = now_ms();
    while (pending_count < 4 && !load_over(t)) {
        int slot = 0;
        while (pending[slot].used) slot++;
        uint64_t id = next_id++;
        char text[65];
        published_text(text, id);
        pending[slot].id = id;
        pending[slot].at = t;
        pending[slot].remaining = target;
        pending[slot].used = 1;
        pending_count++;
        send_message(publisher, 0, (uint8_t *)text, 64);
    }
}

/* The scenarios that echo: each reply answers the oldest message in flight. */
static int is_echo(void) {
    return !strcmp(scenario, "echo") || !strcmp(scenario, "big") || !strcmp(scenario, "latency");
}

static void start_load(void) {
    window_start();
    last_progress = now_ms();
    if (!strcmp(scenario, "broadcast")) {
        publish();
    } else if (is_echo()) {
        running = opened;
        for (int i = 0; i < opened; i++)
            for (int k = 0; k < in_flight; k++)
                send_echo(open_conns[i], binary, payload, payload_size);
    }
}

static void on_open(conn_t *c) {
    if (!strcmp(scenario, "idle") && deflate_wanted) {
        /* One message each way first, so that the server's compressor and
         * decompressor exist: the memory of a connection that has talked. */
        idle_waiting++;
        send_message(c, 0, payload, payload_size);
    }
    if (!strcmp(scenario, "handshakes")) {
        send_close(c);
        return;
    }
    if (!strcmp(scenario, "broadcast") && opened == target) {
        publisher = c; /* the last one in: it publishes */
        return;
    }
    open_conns[opened++] = c;
}

static void on_message(conn_t *c, const uint8_t *data, size_t n) {
    double t = now_ms();
    if (!strcmp(scenario, "idle")) {
        if (n != payload_size || memcmp(data, payload, n) != 0) conn_fail(c, "a wrong echo");
        idle_waiting--;
        return;
    }
    if (is_echo()) {
        double sent = echo_answered(c, data, n, payload, payload_size);
        if (sent < 0) {
            die(sent == -1 ? "an echo nobody asked for"
                           : "a wrong echo: not the message sent (length %zu)", n);
            return;
        }
        if (window_open()) {
            replies += 1;
            bytes += n;
            sample(&latencies, t - sent);
        }
        if (!load_over(t))
            send_echo(c, binary, payload, payload_size);
        else if (!c->sent_count)
            running--;
    } else if (!strcmp(scenario, "broadcast")) {
        /* Every delivery is one of the messages published, byte for byte. */
        if (n != 64 || memcmp(data, "{\"id\":", 6) != 0)
            die("a wrong delivery: not a message published (length %zu)", n);
        uint64_t id = strtoull((const char *)data + 6, NULL, 10);
        char expected[65];
        published_text(expected, id);
        if (memcmp(data, expected, 64) != 0) die("a wrong delivery of message %llu",
                                                 (unsigned long long)id);
        if (c == publisher) return;
        int found = 0;
        for (int i = 0; i < 4; i++) {
            if (!pending[i].used || pending[i].id != id) continue;
            found = 1;
            if (window_open()) replies += 1;
            last_progress = t;
            if (--pending[i].remaining == 0) {
                pending[i].used = 0;
                pending_count--;
                if (window_open()) sample(&latencies, t - pending[i].at);
                publish();
            }
            break;
        }
        if (!found) die("a delivery of message %llu, which is not in flight",
                        (unsigned long long)id);
    }
}

static void on_finished(conn_t *c, const char *error) {
    (void)c;
    if (!strcmp(scenario, "handshakes")) {
        if (error) {
            if (failed++ == 0) fprintf(stderr, "loadgen: handshake failed: %s\n", error);
        } else {
            completed++;
            if (window_open()) replies += 1;
        }
        return;
    }
    /* Elsewhere every connection stays open until the end. */
    die("%s", error ? error : "the server closed a connection");
}

static int done(double t) {
    if (!strcmp(scenario, "handshakes"))
        return (count ? started >= count : load_over(t)) && active == 0;
    if (!window.opens) return 0;
    if (!strcmp(scenario, "broadcast")) {
        if (t - last_progress > 10000) die("broadcast stalled: a subscriber missed a message");
        return load_over(t) && pending_count == 0;
    }
    if (!strcmp(scenario, "idle")) return 0;
    return running == 0;
}

/* Open connections as the scenario needs, at most MAX_CONNECTING at once. */
static void keep_connecting(double t) {
    if (!strcmp(scenario, "handshakes")) {
        if (count) {
            if (!first_start) first_start = t;
            while (active < 20 && started < count) started++, conn_open(path);
            return;
        }
        if (!window.opens) window_start();
        while (active < 20 && !load_over(t)) conn_open(path);
        return;
    }
    int wanted = target + (!strcmp(scenario, "broadcast") ? 1 : 0);
    while (connecting < MAX_CONNECTING && connections_made < wanted) {
        /* the publisher opens after every subscriber is in the room */
        if (connections_made == target && opened < target) break;
        conn_open(path);
    }
    if (window.opens || connecting || connections_made < wanted) return;
    if (!strcmp(scenario, "idle")) {
        if (!idle_ready && idle_waiting == 0) {
            printf("{\"ready\": %d}\n", opened);
            fflush(stdout);
            idle_ready = 1;
        }
        return;
    }
    start_load();
}

static void report(void) {
    if (is_echo()) {
        qsort(latencies.v, latencies.n, sizeof(double), by_value);
        printf("{\"messages_per_s\": %.1f, \"mb_per_s\": %.3f, ", replies / seconds,
               bytes / seconds / 1e6);
        print_percentile("p50_ms", &latencies, 0.5);
        printf(", ");
        print_percentile("p99_ms", &latencies, 0.99);
    } else if (!strcmp(scenario, "broadcast")) {
        qsort(latencies.v, latencies.n, sizeof(double), by_value);
        printf("{\"deliveries_per_s\": %.1f, ", replies / seconds);
        print_percentile("fanout_p50_ms", &latencies, 0.5);
        printf(", ");
        print_percentile("fanout_p99_ms", &latencies, 0.99);
    } else if (count) {
        double took = (now_ms() - first_start) / 1000;
        printf("{\"handshakes\": %ld, \"failed\": %.0f, \"seconds\": %.3f}\n", completed, failed,
               took);
        return;
    } else {
        qsort(latencies.v, latencies.n, sizeof(double), by_value);
        printf("{\"handshakes_per_s\": %.1f, \"failed\": %.0f, ", replies / seconds, failed);
        print_percentile("handshake_p50_ms", &latencies, 0.5);
        printf(", ");
        print_percentile("handshake_p99_ms", &latencies, 0.99);
        if (tls_resume) printf(", \"resumed\": %ld", resumed);
    }
    print_usage_fields();
    printf("}\n");
}

int main(int argc, char **argv) {
    if (argc < 3)
        die("usage: loadgen SCENARIO PORT [--deflate] [--seconds N] [--server-pid PID] "
            "[--count N] [--warmup MS] [--tls [--tls-resume] [--sni NAME]]");
    scenario = argv[1];
    port = atoi(argv[2]);
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--deflate"))
            deflate_wanted = 1;
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--server-pid") && i + 1 < argc)
            server_pid = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--count") && i + 1 < argc)
            count = atol(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warmup_ms = atof(argv[++i]);
        else if (!strcmp(argv[i], "--tls"))
            tls_wanted = 1;
        else if (!strcmp(argv[i], "--tls-resume"))
            tls_resume = 1;
        else if (!strcmp(argv[i], "--sni") && i + 1 < argc)
            sni = argv[++i];
        else
            die("unknown argument %s", argv[i]);
    }
    if (!strcmp(scenario, "echo")) {
        target = 50, in_flight = 8, payload_size = 64;
    } else if (!strcmp(scenario, "big")) {
        target = 4, in_flight = 1, payload_size = 1 << 20, binary = 1;
    } else if (!strcmp(scenario, "latency")) {
        target = 1, in_flight = 1, payload_size = 64;
    } else if (!strcmp(scenario, "broadcast")) {
        target = 1000, path = "/rooms/bench";
    } else if (!strcmp(scenario, "idle")) {
        /* With --deflate, each sends 2 KiB first: over Node ws's 1 KiB
         * threshold, so every server compresses the echo. */
        target = 5000, payload_size = deflate_wanted ? 2048 : 0;
    } else if (strcmp(scenario, "handshakes")) {
        die("unknown scenario %s", scenario);
    }
    if (port <= 0 || seconds <= 0) die("bad port or seconds");
    /* Bounded: whatever happens, this process ends. */
    alarm((unsigned)(seconds + 120) + (!strcmp(scenario, "idle") || count ? 600 : 0));
    struct rlimit files;
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
    make_keys();
    signal(SIGPIPE, SIG_IGN); /* OpenSSL writes to sockets with write() */
    if (tls_resume && !tls_wanted) die("--tls-resume needs --tls");
    if (tls_wanted) {
        tls = SSL_CTX_new(TLS_client_method());
        if (!tls) die("SSL_CTX_new failed");
        SSL_CTX_set_verify(tls, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        if (tls_resume) {
            SSL_CTX_set_session_cache_mode(tls, SSL_SESS_CACHE_CLIENT |
                                                    SSL_SESS_CACHE_NO_INTERNAL_STORE);
            SSL_CTX_sess_set_new_cb(tls, keep_session);
        } else {
            SSL_CTX_set_session_cache_mode(tls, SSL_SESS_CACHE_OFF);
            SSL_CTX_set_options(tls, SSL_OP_NO_TICKET);
        }
    }
    payload = malloc(payload_size + 1);
    /* Bytes that vary along the message (letters for text), so that a
     * reply with bytes moved or lost does not match. */
    for (size_t i = 0; i < payload_size; i++)
        payload[i] = binary ? (uint8_t)(i * 131 + (i >> 8)) : (uint8_t)('a' + i % 26);
    open_conns = calloc(target + 1, sizeof *open_conns);
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (!strcmp(scenario, "idle")) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(epoll_fd, EPOLL_CTL_ADD, 0, &ev);
    }
    struct epoll_event events[1024];
    for (;;) {
        double t = now_ms();
        window_tick(t);
        keep_connecting(t);
        flush_dirty();
        if (done(t)) break;
        int timeout = 50;
        if (window.opens && window.state < 2) {
            double next = window.state == 0 ? window.opens : window.closes;
            if (next - t < timeout) timeout = next - t < 0 ? 0 : (int)(next - t) + 1;
        }
        int n = epoll_wait(epoll_fd, events, 1024, timeout);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (!c) { /* standard input: the idle scenario is over */
                printf("{\"connections\": %d}\n", opened);
                return 0;
            }
            if (events[i].events & EPOLLOUT) writable(c);
            if (c->fd >= 0 && events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(c);
        }
        flush_dirty();
    }
    report();
    return 0;
}
