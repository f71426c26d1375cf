/*
 * Tests of the C surface of libmptunnel: every function with bad arguments (NULL handles,
 * NULL buffers, zero and huge lengths, unknown keys, bad addresses, double stop, free while
 * running) must return an error code and a helpful mpt_last_error(), never crash; and the
 * working paths (tunnel start/stop, in-process socket and listener, stats, log callback)
 * must do what the header says. Built with -std=c99 -Wall -Wextra -Werror -pedantic, and
 * run plain and under AddressSanitizer by tests/c/run.sh.
 *
 * Usage: test_api   (prints one line per check and a summary; exit 1 if any failed)
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mptunnel.h"

static int passed, failed;

static void check(int ok, const char *what, int line) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("not ok - %s (line %d; last error: %s)\n", what, line, mpt_last_error());
    }
}

#define CHECK(cond) check((cond) ? 1 : 0, #cond, __LINE__)
/* A call that must fail with `code` and leave a message naming `needle`. */
#define FAILS(call, code, needle)                                                          \
    do {                                                                                   \
        mpt_result r_ = (call);                                                            \
        check(r_ == (code) && strstr(mpt_last_error(), (needle)) != NULL, #call, __LINE__); \
        if (r_ != (code))                                                                  \
            printf("   got %u (%s), want %u\n", (unsigned)r_, mpt_result_str(r_),        \
                   (unsigned)(code));                                                      \
    } while (0)
#define OK(call) check((call) == MPT_OK, #call, __LINE__)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static mpt_config *server_config(const char *listen) {
    mpt_config *c = NULL;
    if (mpt_config_new(MPT_ROLE_SERVER, &c) != MPT_OK) return NULL;
    if (mpt_config_set(c, "listen", listen) != MPT_OK) {
        mpt_config_free(c);
        return NULL;
    }
    return c;
}

static void test_basics(void) {
    int code;
    CHECK(strcmp(mpt_version(), MPT_VERSION_STRING) == 0);
    /* MPT_ERR_LAST is the highest code (a unit test of the library checks that against
     * every code the header defines), so this loop sees every code. */
    for (code = MPT_OK; code <= (int)MPT_ERR_LAST; code++)
        CHECK(strcmp(mpt_result_str((mpt_result)code), "unknown result code") != 0);
    CHECK(strcmp(mpt_result_str(MPT_ERR_LAST + 1), "unknown result code") == 0);
    CHECK(strcmp(mpt_result_str(4242), "unknown result code") == 0);
    CHECK(strcmp(mpt_result_str(MPT_ERR_TIMEOUT), "timed out") == 0);
    CHECK(mpt_last_error() != NULL);
}

static void test_config(void) {
    mpt_config *c = NULL;
    char path[] = "/tmp/mpt_test_api_XXXXXX";
    int fd;
    FILE *f;

    FAILS(mpt_config_new(MPT_ROLE_CLIENT, NULL), MPT_ERR_NULL, "out is NULL");
    FAILS(mpt_config_new(7, &c), MPT_ERR_INVALID_ARG, "role 7");
    CHECK(c == NULL); /* outputs only on success */
    OK(mpt_config_new(MPT_ROLE_CLIENT, &c));
    CHECK(c != NULL);

    FAILS(mpt_config_set(NULL, "path", "127.0.0.1:1"), MPT_ERR_NULL, "config is NULL");
    FAILS(mpt_config_set(c, NULL, "x"), MPT_ERR_NULL, "key is NULL");
    FAILS(mpt_config_set(c, "path", NULL), MPT_ERR_NULL, "value is NULL");
    FAILS(mpt_config_set(c, "colour", "blue"), MPT_ERR_CONFIG, "unknown option 'colour'");
    FAILS(mpt_config_set(c, "target", "127.0.0.1:9"), MPT_ERR_CONFIG, "applies only to the server");
    FAILS(mpt_config_set(c, "path", "127.0.0.1:99999"), MPT_ERR_CONFIG, "'99999' is out of range");
    FAILS(mpt_config_set(c, "path", "no port here"), MPT_ERR_CONFIG, "is not a number");
    FAILS(mpt_config_set(c, "listen", "::zz::"), MPT_ERR_CONFIG, "'::zz::' is not HOST:PORT");
    FAILS(mpt_config_set(c, "probe-interval", "-5"), MPT_ERR_CONFIG, "not a whole number");
    FAILS(mpt_config_set(c, "key", "c2hvcnQ="), MPT_ERR_CONFIG, "44 base64 characters");
    FAILS(mpt_config_set(c, "path", "\xff\xfe:1"), MPT_ERR_INVALID_ARG, "UTF-8");
    FAILS(mpt_config_validate(c), MPT_ERR_CONFIG, "no listen address");
    FAILS(mpt_config_validate(NULL), MPT_ERR_NULL, "config is NULL");

    FAILS(mpt_config_load_file(c, NULL), MPT_ERR_NULL, "path is NULL");
    FAILS(mpt_config_load_file(NULL, "/etc/hostname"), MPT_ERR_NULL, "config is NULL");
    FAILS(mpt_config_load_file(c, "/nonexistent/mpt.conf"), MPT_ERR_CONFIG,
          "/nonexistent/mpt.conf");
    fd = mkstemp(path);
    CHECK(fd >= 0);
    f = fdopen(fd, "w");
    fputs("127.0.0.1 4001\nthis is = not\nlisten = nonsense\n", f);
    fclose(f);
    FAILS(mpt_config_load_file(c, path), MPT_ERR_CONFIG, ":2: ");
    f = fopen(path, "w");
    fputs("# a client\n127.0.0.1 4001\n[::1]:4002\nlisten = 127.0.0.1:0\n", f);
    fclose(f);
    OK(mpt_config_load_file(c, path));
    OK(mpt_config_validate(c));
    unlink(path);

    /* Keys: generated here, accepted by "key"; a bad key is never echoed back. */
    {
        char key[64], small[8], *huge;
        size_t klen = 0;
        FAILS(mpt_genkey(small, sizeof small, &klen), MPT_ERR_BUFFER_TOO_SMALL, "45");
        CHECK(klen == 45);
        FAILS(mpt_genkey(key, sizeof key, NULL), MPT_ERR_NULL, "len is NULL");
        OK(mpt_genkey(key, sizeof key, &klen));
        CHECK(klen == 44 && strlen(key) == 44);
        OK(mpt_config_set(c, "key", key));
        key[10] = '\0';
        FAILS(mpt_config_set(c, "key", key), MPT_ERR_CONFIG, "44 base64 characters");
        CHECK(strstr(mpt_last_error(), key) == NULL);
        /* A huge value: a clear error, and a message of bounded size. */
        huge = malloc(100001);
        memset(huge, 'a', 100000);
        huge[100000] = '\0';
        FAILS(mpt_config_set(c, "path", huge), MPT_ERR_CONFIG, "100000 bytes");
        CHECK(strlen(mpt_last_error()) < 1100);
        free(huge);
    }
    FAILS(mpt_config_set(c, "path", "127.0.0.1 9 name=a\x1b[31mred"), MPT_ERR_CONFIG,
          "control characters");
    FAILS(mpt_config_load_file(c, "/dev/zero"), MPT_ERR_CONFIG, "larger than");
    FAILS(mpt_config_load_file(c, "/tmp"), MPT_ERR_CONFIG, "/tmp");

    mpt_config_free(c);
    mpt_config_free(NULL);
}

/* Every option with values a fuzzer would try: an error code, never a caught panic; and a
 * tunnel built from whatever was accepted fails or works cleanly too. */
static void test_no_value_panics(void) {
    static const char *keys[] = {"listen", "target", "path", "mode", "probe-interval",
                                 "down-after", "idle-timeout", "max-sessions", "window",
                                 "stats-interval", "log-level", "key", "key-file", "forward"};
    static const char *values[] = {"", " ", "0", "-1", "nan", "inf", "1e308", "-0",
                                   "18446744073709551616", "4294967296", "0.0000001",
                                   "127.0.0.1:0", "[::1]:0", "[::1", "::1]:5", ":", ":0",
                                   "host:", "a b c d e f", "127.0.0.1 1 name=", "x name=y",
                                   "127.0.0.1 1 bind=", "127.0.0.1 1 dev=", "127.0.0.1 1 weight=0",
                                   "%s%s%n", "\t\n", "redundant", "failover", "/dev/null",
                                   "1ms", "1s", "9999999999999ms"};
    size_t k, v;
    int role, panics = 0;
    for (role = MPT_ROLE_CLIENT; role <= MPT_ROLE_SERVER; role++) {
        for (k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            for (v = 0; v < sizeof values / sizeof values[0]; v++) {
                mpt_config *c = NULL;
                mpt_tunnel *t = NULL;
                mpt_result r;
                if (mpt_config_new((mpt_role)role, &c) != MPT_OK) continue;
                mpt_config_set(c, "listen", "127.0.0.1:0");
                mpt_config_set(c, role == MPT_ROLE_CLIENT ? "path" : "target", "127.0.0.1:9");
                r = mpt_config_set(c, keys[k], values[v]);
                if (r == MPT_ERR_PANIC) {
                    printf("   panic: %s = \"%s\"\n", keys[k], values[v]);
                    panics++;
                }
                r = mpt_tunnel_new(c, &t);
                if (r == MPT_ERR_PANIC) {
                    printf("   panic in mpt_tunnel_new after %s = \"%s\"\n", keys[k], values[v]);
                    panics++;
                }
                mpt_tunnel_free(t);
                mpt_config_free(c);
            }
        }
    }
    CHECK(panics == 0);
}

static void test_tunnel(void) {
    mpt_config *c = server_config("127.0.0.1:0");
    mpt_tunnel *t = NULL, *t2 = NULL;
    char buf[8192], small[4];
    size_t len = 12345;
    int blocker;
    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;

    CHECK(c != NULL);
    FAILS(mpt_tunnel_new(c, &t), MPT_ERR_CONFIG, "target");
    CHECK(t == NULL);
    OK(mpt_config_set(c, "target", "127.0.0.1:9"));
    FAILS(mpt_tunnel_new(NULL, &t), MPT_ERR_NULL, "config is NULL");
    FAILS(mpt_tunnel_new(c, NULL), MPT_ERR_NULL, "out is NULL");

    /* Port in use: an OS error, with the reason. */
    blocker = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(blocker, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK(getsockname(blocker, (struct sockaddr *)&sa, &salen) == 0);
    snprintf(buf, sizeof buf, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    OK(mpt_config_set(c, "listen", buf));
    FAILS(mpt_tunnel_new(c, &t), MPT_ERR_IO, "in use");
    close(blocker);

    OK(mpt_config_set(c, "listen", "127.0.0.1:0"));
    OK(mpt_tunnel_new(c, &t));
    mpt_config_free(c); /* the tunnel keeps what it needs */

    FAILS(mpt_tunnel_local_addr(t, small, sizeof small, &len), MPT_ERR_BUFFER_TOO_SMALL, "");
    CHECK(len > sizeof small && len < 64);
    OK(mpt_tunnel_local_addr(t, buf, sizeof buf, &len));
    CHECK(strncmp(buf, "127.0.0.1:", 10) == 0 && len == strlen(buf));

    FAILS(mpt_tunnel_start(NULL), MPT_ERR_NULL, "tunnel is NULL");
    OK(mpt_tunnel_start(t));
    FAILS(mpt_tunnel_start(t), MPT_ERR_STATE, "already running");

    FAILS(mpt_tunnel_stats_json(t, NULL, 0, &len), MPT_ERR_BUFFER_TOO_SMALL, "needed");
    CHECK(len > 20 && len < sizeof buf);
    FAILS(mpt_tunnel_stats_json(t, NULL, 100, &len), MPT_ERR_NULL, "buf is NULL");
    FAILS(mpt_tunnel_stats_json(t, buf, sizeof buf, NULL), MPT_ERR_NULL, "len is NULL");
    FAILS(mpt_tunnel_stats_json(NULL, buf, sizeof buf, &len), MPT_ERR_NULL, "tunnel");
    OK(mpt_tunnel_stats_json(t, buf, sizeof buf, &len));
    CHECK(len == strlen(buf) && buf[0] == '{' && strstr(buf, "\"role\":\"server\"") != NULL);
    OK(mpt_tunnel_stats_text(t, buf, sizeof buf, &len));
    CHECK(len == strlen(buf) && len > 0);

    OK(mpt_tunnel_stop(t));
    OK(mpt_tunnel_stop(t)); /* idempotent */
    FAILS(mpt_tunnel_start(t), MPT_ERR_CLOSED, "stopped");
    FAILS(mpt_tunnel_run(t), MPT_ERR_CLOSED, "stopped");
    OK(mpt_tunnel_stats_json(t, buf, sizeof buf, &len)); /* final figures */
    FAILS(mpt_tunnel_stop(NULL), MPT_ERR_NULL, "tunnel is NULL");
    mpt_tunnel_free(t);
    mpt_tunnel_free(NULL);

    /* Free while running: stops it first. Free without ever starting. */
    c = server_config("127.0.0.1:0");
    OK(mpt_config_set(c, "target", "127.0.0.1:9"));
    OK(mpt_tunnel_new(c, &t));
    OK(mpt_tunnel_new(c, &t2));
    mpt_config_free(c);
    OK(mpt_tunnel_start(t));
    OK(mpt_tunnel_local_addr(t, buf, sizeof buf, &len));
    mpt_tunnel_free(t);
    mpt_tunnel_free(t2);
    /* The freed tunnel's socket is closed: its port can be bound again. */
    blocker = socket(AF_INET, SOCK_DGRAM, 0);
    sa.sin_port = htons((unsigned short)atoi(strrchr(buf, ':') + 1));
    CHECK(bind(blocker, (struct sockaddr *)&sa, sizeof sa) == 0);
    close(blocker);
}

struct runner {
    mpt_tunnel *t;
    mpt_result result;
};

static void *run_thread(void *arg) {
    struct runner *r = arg;
    r->result = mpt_tunnel_run(r->t);
    return NULL;
}

static void test_tunnel_run_and_stop_from_another_thread(void) {
    mpt_config *c = server_config("127.0.0.1:0");
    struct runner r = {NULL, 999};
    pthread_t th;
    double t0;

    OK(mpt_config_set(c, "target", "127.0.0.1:9"));
    OK(mpt_tunnel_new(c, &r.t));
    mpt_config_free(c);
    CHECK(pthread_create(&th, NULL, run_thread, &r) == 0);
    sleep_ms(300); /* let mpt_tunnel_run begin */
    FAILS(mpt_tunnel_start(r.t), MPT_ERR_STATE, "already running");
    t0 = now_ms();
    OK(mpt_tunnel_stop(r.t));
    CHECK(now_ms() - t0 < 2000);
    pthread_join(th, NULL);
    CHECK(r.result == MPT_OK);
    mpt_tunnel_free(r.t);
}

static void *close_later(void *arg) {
    sleep_ms(150);
    mpt_socket_close(arg);
    return NULL;
}

/* Receives one datagram into buf; returns its length or -1. */
static long recv_one(mpt_listener *l, uint8_t *buf, size_t cap, uint64_t *peer) {
    size_t len = 0;
    if (mpt_listener_recv(l, buf, cap, &len, peer, 5000) != MPT_OK) return -1;
    return (long)len;
}

static void test_sockets(void) {
    mpt_config *sc = server_config("127.0.0.1:0"), *cc = NULL;
    mpt_listener *l = NULL;
    mpt_socket *s = NULL;
    char addr[64], json[8192];
    uint8_t buf[256];
    uint8_t *big;
    size_t len = 0, max, i;
    uint64_t peer = 0, peer2 = 0;
    long n;
    int counter = 1, ok_rounds = 0, fd;
    double t0;
    struct pollfd pfd;
    pthread_t th;

    FAILS(mpt_socket_connect(sc, &s), MPT_ERR_CONFIG, "client");
    FAILS(mpt_listener_bind(NULL, &l), MPT_ERR_NULL, "config is NULL");
    FAILS(mpt_listener_bind(sc, NULL), MPT_ERR_NULL, "out is NULL");
    OK(mpt_listener_bind(sc, &l));
    mpt_config_free(sc);
    OK(mpt_listener_local_addr(l, addr, sizeof addr, &len));

    OK(mpt_config_new(MPT_ROLE_CLIENT, &cc));
    FAILS(mpt_socket_connect(cc, &s), MPT_ERR_CONFIG, "path");
    FAILS(mpt_listener_bind(cc, &l), MPT_ERR_CONFIG, "server");
    OK(mpt_config_set(cc, "path", addr));
    OK(mpt_config_set(cc, "path", addr));
    FAILS(mpt_socket_connect(cc, NULL), MPT_ERR_NULL, "out is NULL");
    OK(mpt_socket_connect(cc, &s));
    mpt_config_free(cc);

    /* Sending: NULL handle, NULL buffer with a length, huge lengths, the exact maximum. */
    max = mpt_socket_max_datagram(s);
    CHECK(max == 65475);
    CHECK(mpt_socket_max_datagram(NULL) == 0);
    FAILS(mpt_socket_send(NULL, buf, 1), MPT_ERR_NULL, "socket is NULL");
    FAILS(mpt_socket_send(s, NULL, 5), MPT_ERR_NULL, "buf is NULL");
    FAILS(mpt_socket_send(s, buf, SIZE_MAX), MPT_ERR_TOO_LARGE, "at most 65475");
    FAILS(mpt_socket_send(s, buf, max + 1), MPT_ERR_TOO_LARGE, "65476");
    OK(mpt_socket_send(s, NULL, 0)); /* an empty datagram is a datagram */
    big = malloc(max);
    memset(big, 'x', max);
    OK(mpt_socket_send(s, big, max));

    /* Receiving: NULL outputs, a size query, a buffer too small (nothing consumed). */
    FAILS(mpt_listener_recv(NULL, buf, sizeof buf, &len, &peer, 0), MPT_ERR_NULL, "listener");
    FAILS(mpt_listener_recv(l, buf, sizeof buf, NULL, &peer, 0), MPT_ERR_NULL, "len is NULL");
    FAILS(mpt_listener_recv(l, buf, sizeof buf, &len, NULL, 0), MPT_ERR_NULL, "peer is NULL");
    FAILS(mpt_listener_recv(l, NULL, 10, &len, &peer, 0), MPT_ERR_NULL, "buf is NULL");
    OK(mpt_listener_recv(l, NULL, 0, &len, &peer, 5000)); /* the empty one fits in nothing */
    CHECK(len == 0 && peer != 0);
    len = 0;
    FAILS(mpt_listener_recv(l, buf, sizeof buf, &len, &peer2, 5000), MPT_ERR_BUFFER_TOO_SMALL,
          "stays queued");
    CHECK(len == max && peer2 == 0);
    memset(big, 0, max);
    OK(mpt_listener_recv(l, big, max, &len, &peer2, 0));
    CHECK(len == max && peer2 == peer && big[0] == 'x' && big[max - 1] == 'x');
    free(big);

    /* Timeouts: 0 does not wait, a positive one waits about that long. */
    t0 = now_ms();
    FAILS(mpt_listener_recv(l, buf, sizeof buf, &len, &peer2, 0), MPT_ERR_TIMEOUT, "");
    CHECK(now_ms() - t0 < 50);
    t0 = now_ms();
    FAILS(mpt_socket_recv(s, buf, sizeof buf, &len, 120), MPT_ERR_TIMEOUT, "");
    CHECK(now_ms() - t0 >= 100);

    /* The hello counter, waiting on the socket's descriptor with poll(). */
    fd = mpt_socket_fd(s);
    CHECK(fd >= 0 && mpt_listener_fd(l) >= 0);
    CHECK(mpt_socket_fd(NULL) == MPT_INVALID_FD && mpt_listener_fd(NULL) == MPT_INVALID_FD);
    for (i = 0; i < 100; i++) {
        char msg[64];
        int got;
        snprintf(msg, sizeof msg, "%d hello", counter);
        if (mpt_socket_send(s, (const uint8_t *)msg, strlen(msg)) != MPT_OK) break;
        n = recv_one(l, buf, sizeof buf - 1, &peer);
        if (n < 0) break;
        buf[n] = 0;
        got = atoi((char *)buf);
        snprintf(msg, sizeof msg, "%d hello", got + 1);
        if (mpt_listener_send(l, peer, (const uint8_t *)msg, strlen(msg)) != MPT_OK) break;
        pfd.fd = fd;
        pfd.events = POLLIN;
        if (poll(&pfd, 1, 5000) != 1) break;
        if (mpt_socket_recv(s, buf, sizeof buf - 1, &len, 0) != MPT_OK) break;
        buf[len] = 0;
        if (atoi((char *)buf) != counter + 1) break;
        counter += 2;
        ok_rounds++;
    }
    CHECK(ok_rounds == 100);
    pfd.fd = fd;
    pfd.events = POLLIN;
    CHECK(poll(&pfd, 1, 0) == 0); /* drained: no longer readable */

    /* A peer that does not exist: dropped and counted, not an error. */
    OK(mpt_listener_send(l, 0x1234, (const uint8_t *)"x", 1));
    FAILS(mpt_listener_send(l, peer, NULL, 3), MPT_ERR_NULL, "buf is NULL");
    FAILS(mpt_listener_send(l, peer, buf, (size_t)-1), MPT_ERR_TOO_LARGE, "");
    OK(mpt_socket_stats_json(s, json, sizeof json, &len));
    CHECK(strstr(json, "\"role\":\"client\"") != NULL);
    OK(mpt_listener_stats_json(l, json, sizeof json, &len));
    CHECK(strstr(json, "\"unknown_session\":1,") != NULL); /* the datagram to 0x1234 */
    CHECK(strstr(json, "\"duplicates\":") != NULL && strstr(json, "\"duplicates\":0,") == NULL);
    FAILS(mpt_listener_stats_json(l, json, 3, &len), MPT_ERR_BUFFER_TOO_SMALL, "");

    /* A blocked receive is woken by close from another thread; then everything is CLOSED. */
    CHECK(pthread_create(&th, NULL, close_later, s) == 0);
    t0 = now_ms();
    FAILS(mpt_socket_recv(s, buf, sizeof buf, &len, -1), MPT_ERR_CLOSED, "closed");
    CHECK(now_ms() - t0 < 3000);
    pthread_join(th, NULL);
    FAILS(mpt_socket_send(s, buf, 1), MPT_ERR_CLOSED, "closed");
    OK(mpt_socket_close(s));
    FAILS(mpt_socket_close(NULL), MPT_ERR_NULL, "socket is NULL");
    pfd.fd = fd;
    pfd.events = POLLIN;
    CHECK(poll(&pfd, 1, 1000) == 1); /* a closed socket's descriptor is readable */
    mpt_socket_free(s);
    mpt_socket_free(NULL);

    OK(mpt_listener_close(l));
    FAILS(mpt_listener_recv(l, buf, sizeof buf, &len, &peer, -1), MPT_ERR_CLOSED, "closed");
    mpt_listener_free(l);
    mpt_listener_free(NULL);
}

struct log_seen {
    int calls, warnings, chmod;
};

static void on_log(void *userdata, int level, const char *msg) {
    struct log_seen *seen = userdata;
    seen->calls++;
    if (level == 2) seen->warnings++;
    if (strstr(msg, "chmod 600") != NULL) seen->chmod++;
}

static void test_log_callback(void) {
    struct log_seen seen = {0, 0, 0};
    char path[] = "/tmp/mpt_test_key_XXXXXX";
    int fd = mkstemp(path);
    mpt_config *c = server_config("127.0.0.1:0");
    mpt_listener *l = NULL;

    CHECK(fd >= 0);
    /* A key file others can read draws a warning when the listener starts. */
    CHECK(write(fd, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 45) == 45);
    close(fd);
    chmod(path, 0644);
    OK(mpt_config_set(c, "key-file", path));
    mpt_set_log_callback(on_log, &seen, 2);
    OK(mpt_listener_bind(c, &l));
    mpt_listener_free(l);
    mpt_set_log_callback(NULL, NULL, 0); /* back to stderr, silenced */
    CHECK(seen.chmod == 1 && seen.warnings >= 1);
    CHECK(seen.calls == seen.warnings); /* max_level 2: no info or debug got through */
    seen.calls = 0;
    OK(mpt_listener_bind(c, &l));
    mpt_listener_free(l);
    CHECK(seen.calls == 0);
    mpt_set_log_callback(NULL, NULL, 2);
    mpt_config_free(c);
    unlink(path);
}

static pthread_t main_thread;
static volatile sig_atomic_t usr1_on_main, usr1_elsewhere;

static void on_usr1(int sig) {
    (void)sig;
    if (pthread_equal(pthread_self(), main_thread))
        usr1_on_main++;
    else
        usr1_elsewhere++;
}

/* The library's threads block signals, so the application's own threads get them: here the
 * main thread blocks SIGUSR1 while the library's threads run; the signal must wait for main
 * rather than run the handler on a library thread. */
static void test_signals_stay_with_the_application(void) {
    mpt_config *sc = server_config("127.0.0.1:0");
    mpt_listener *l = NULL;
    struct sigaction sa;
    sigset_t usr1;
    int i;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    main_thread = pthread_self();
    OK(mpt_listener_bind(sc, &l)); /* created while SIGUSR1 is not blocked here */
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    for (i = 0; i < 5; i++) {
        kill(getpid(), SIGUSR1);
        sleep_ms(10);
    }
    CHECK(usr1_elsewhere == 0);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    CHECK(usr1_on_main >= 1 && usr1_elsewhere == 0);
    mpt_listener_free(l);
    mpt_config_free(sc);
    signal(SIGUSR1, SIG_DFL);
}

static void *fail_in_thread(void *arg) {
    (void)arg;
    mpt_config_set(NULL, "a", "b");
    return NULL;
}

static void test_last_error_is_per_thread(void) {
    pthread_t th;
    mpt_config_new(99, NULL);
    CHECK(strstr(mpt_last_error(), "mpt_config_new") != NULL);
    pthread_create(&th, NULL, fail_in_thread, NULL);
    pthread_join(th, NULL);
    CHECK(strstr(mpt_last_error(), "mpt_config_new") != NULL);
}

/* Modes and reloads on a running client: a good mode switches, a bad one is named; a
 * server's mode is its clients'; a reload adds a path and refuses a changed listen. */
static void test_mode_and_reload(void) {
    mpt_config *c = NULL, *c2 = NULL;
    mpt_tunnel *t = NULL, *s = NULL;
    char buf[8192];
    size_t len = 0;
    mpt_config *sc = server_config("127.0.0.1:0");

    OK(mpt_config_set(sc, "target", "127.0.0.1:9"));
    OK(mpt_tunnel_new(sc, &s));
    OK(mpt_config_new(MPT_ROLE_CLIENT, &c));
    OK(mpt_config_set(c, "listen", "127.0.0.1:0"));
    OK(mpt_config_set(c, "path", "127.0.0.1:9"));
    OK(mpt_tunnel_new(c, &t));
    FAILS(mpt_tunnel_set_mode(t, "failover"), MPT_ERR_STATE, "not running");
    OK(mpt_tunnel_start(t));
    OK(mpt_tunnel_start(s));
    OK(mpt_tunnel_set_mode(t, "failover"));
    OK(mpt_tunnel_stats_json(t, buf, sizeof buf, &len));
    CHECK(strstr(buf, "\"mode\":\"failover\"") != NULL);
    OK(mpt_tunnel_set_mode(t, "k-best=2"));
    FAILS(mpt_tunnel_set_mode(t, "sideways"), MPT_ERR_CONFIG, "sideways");
    FAILS(mpt_tunnel_set_mode(t, NULL), MPT_ERR_NULL, "mode is NULL");
    FAILS(mpt_tunnel_set_mode(NULL, "redundant"), MPT_ERR_NULL, "tunnel is NULL");
    FAILS(mpt_tunnel_set_mode(s, "failover"), MPT_ERR_CONFIG, "client");

    /* The same listen (its port was 0: the bound one is what runs) and a second path. */
    OK(mpt_tunnel_local_addr(t, buf, sizeof buf, &len));
    OK(mpt_config_new(MPT_ROLE_CLIENT, &c2));
    OK(mpt_config_set(c2, "listen", "127.0.0.1:0"));
    OK(mpt_config_set(c2, "path", "127.0.0.1:9"));
    OK(mpt_config_set(c2, "path", "127.0.0.1:10 name=second"));
    OK(mpt_tunnel_reload(t, c2));
    OK(mpt_tunnel_stats_json(t, buf, sizeof buf, &len));
    CHECK(strstr(buf, "\"name\":\"second\"") != NULL);
    OK(mpt_config_set(c2, "listen", "127.0.0.1:1"));
    FAILS(mpt_tunnel_reload(t, c2), MPT_ERR_CONFIG, "restart");
    FAILS(mpt_tunnel_reload(t, NULL), MPT_ERR_NULL, "config is NULL");
    mpt_config_free(c2);
    mpt_config_free(c);
    mpt_config_free(sc);
    mpt_tunnel_free(t);
    mpt_tunnel_free(s);
}

int main(void) {
    test_basics();
    test_mode_and_reload();
    test_config();
    test_no_value_panics();
    test_tunnel();
    test_tunnel_run_and_stop_from_another_thread();
    test_sockets();
    test_log_callback();
    test_last_error_is_per_thread();
    test_signals_stay_with_the_application();
    printf("test_api: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
