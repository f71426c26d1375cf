/*
 * embedded_server.c - the server end of a tunnel inside the program (no mpserver process).
 *
 * It binds an mpt_listener, which accepts sessions from mpclients and from mpt_sockets
 * (embedded_client), and answers the "hello counter" itself: each datagram "N hello" gets
 * "N+1 hello" back, sent to the session (peer id) it came from. It waits with poll() on
 * mpt_listener_fd(), then takes every queued datagram with mpt_listener_recv(..., 0).
 *
 *   build/embedded_server 127.0.0.1:17000 &
 *   mpbridge 17001 127.0.0.1:17000 & mpbridge 17002 127.0.0.1:17000 &
 *   build/embedded_client -n 100 127.0.0.1:17001 127.0.0.1:17002
 *
 * or with mpclient in front of it (mpclient 4000 client.conf; udpclient 127.0.0.1 4000).
 *
 * Usage: embedded_server [-k KEYFILE] [-n COUNT] LISTEN   (Ctrl-C or SIGTERM stops it)
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mptunnel.h"

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* SIGINT/SIGTERM set a flag; no SA_RESTART, so a blocked poll() returns EINTR. (The
 * library's threads block signals, so they always reach the program's own threads.) */
static void install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: embedded_server [-k KEYFILE] [-n COUNT] LISTEN\n"
            "Answers \"N hello\" with \"N+1 hello\" through an in-process tunnel server "
            "(mpt_listener).\n"
            "  -k KEYFILE  encrypt with the pre-shared key in KEYFILE (as the clients)\n"
            "  -n COUNT    stop after answering COUNT datagrams (default: at SIGINT/SIGTERM)\n"
            "  LISTEN      HOST:PORT to listen on, IPv6 as [::1]:PORT (port 0 = any)\n");
}

/* Reports a failed library call with the library's message; returns 1 (the exit code). */
static int fail(mpt_result r)
{
    fprintf(stderr, "embedded_server: %s (%s)\n", mpt_last_error(), mpt_result_str(r));
    return 1;
}

/* Parses a decimal number in [min, max]; returns 0 if s is not one. */
static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    *out = strtol(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && *out >= min && *out <= max;
}

/* Parses a datagram "N hello" (not NUL-terminated); returns 1 and sets *n if it is one. */
static int parse_hello(const uint8_t *buf, size_t len, unsigned long long *n)
{
    char text[64];
    char *end;
    if (len == 0 || len >= sizeof text || buf[0] < '0' || buf[0] > '9')
        return 0;
    memcpy(text, buf, len);
    text[len] = '\0';
    errno = 0;
    *n = strtoull(text, &end, 10);
    return errno == 0 && *n < ULLONG_MAX && strcmp(end, " hello") == 0;
}

int main(int argc, char **argv)
{
    const char *keyfile = NULL;
    long count = 0; /* 0: no limit */
    long answered = 0;
    int opt, rc = 0;
    char addr[128];
    size_t addr_len;
    mpt_config *cfg = NULL;
    mpt_listener *lst = NULL;
    mpt_result r;
    mpt_fd fd;

    while ((opt = getopt(argc, argv, "k:n:h")) != -1) {
        switch (opt) {
        case 'k': keyfile = optarg; break;
        case 'n':
            if (!parse_long(optarg, 1, LONG_MAX, &count)) {
                fprintf(stderr, "embedded_server: bad COUNT '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (argc - optind != 1) {
        usage(stderr);
        return 2;
    }
    install_signal_handlers();

    /* A server config needs only "listen" here: the datagrams come to us, not to a target. */
    if ((r = mpt_config_new(MPT_ROLE_SERVER, &cfg)) != MPT_OK)
        return fail(r);
    r = mpt_config_set(cfg, "listen", argv[optind]);
    if (r == MPT_OK && keyfile != NULL)
        r = mpt_config_set(cfg, "key-file", keyfile);
    if (r == MPT_OK)
        r = mpt_listener_bind(cfg, &lst);
    mpt_config_free(cfg); /* the listener keeps its own copy */
    if (r != MPT_OK)
        return fail(r);

    if ((r = mpt_listener_local_addr(lst, addr, sizeof addr, &addr_len)) != MPT_OK) {
        rc = fail(r);
        goto out;
    }
    if ((fd = mpt_listener_fd(lst)) == MPT_INVALID_FD) {
        rc = fail(MPT_ERR_UNSUPPORTED);
        goto out;
    }
    printf("embedded_server: listening on %s\n", addr);
    fflush(stdout);

    while (!stop_requested && (count == 0 || answered < count)) {
        struct pollfd pfd = { 0, POLLIN, 0 };
        pfd.fd = fd;
        /* Readable while datagrams are queued; the timeout lets us notice signals. */
        if (poll(&pfd, 1, 200) < 0 && errno != EINTR) {
            fprintf(stderr, "embedded_server: poll: %s\n", strerror(errno));
            rc = 1;
            break;
        }
        while (count == 0 || answered < count) {
            uint8_t buf[65536]; /* 65507 bytes always suffice */
            char reply[32];
            size_t len;
            uint64_t peer;
            unsigned long long n;
            r = mpt_listener_recv(lst, buf, sizeof buf, &len, &peer, 0);
            if (r == MPT_ERR_TIMEOUT)
                break; /* nothing more queued */
            if (r != MPT_OK) {
                rc = fail(r);
                goto out;
            }
            if (!parse_hello(buf, len, &n))
                continue; /* not ours: ignore it */
            len = (size_t)snprintf(reply, sizeof reply, "%llu hello", n + 1);
            r = mpt_listener_send(lst, peer, (const uint8_t *)reply, len);
            if (r == MPT_ERR_WOULD_BLOCK)
                continue; /* send queue full: drop the answer, the client asks again */
            if (r != MPT_OK) {
                rc = fail(r);
                goto out;
            }
            answered++;
        }
    }

out:
    printf("embedded_server: answered %ld datagrams\n", answered);
    fflush(stdout);
    mpt_listener_free(lst); /* sends CLOSE to every peer and stops the library's thread */
    return rc;
}
