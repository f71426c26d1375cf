/*
 * embedded_client.c - the client end of a tunnel inside the program (no mpclient process).
 *
 * It opens an mpt_socket over one or more paths (bridges in front of an mpserver or of an
 * mpt_listener such as embedded_server, or the server itself) and runs the "hello counter"
 * exchange through it: sends "1 hello", waits for "2 hello", sends "3 hello", ..., resending
 * after a timeout, ignoring stale answers, giving up after 50 timeouts in a row. It waits
 * with poll() on mpt_socket_fd(), so the same loop could watch other descriptors too.
 *
 *   build/embedded_server 127.0.0.1:17000 &
 *   mpbridge 17001 127.0.0.1:17000 & mpbridge 17002 127.0.0.1:17000 &
 *   build/embedded_client -n 100 -s 127.0.0.1:17001 127.0.0.1:17002
 *
 * (or against mpserver in front of udpserver: mpserver 17000 127.0.0.1 6666). It prints one
 * summary line, like udpclient (RTT from exchanges answered without a resend), and with -s
 * the socket's statistics as JSON. Exit status 0 when COUNT round trips were made:
 *   embedded_client: 100 round trips, 3 timeouts, 0 stale, rtt min/avg/max 0.210/0.540/3.100 ms
 *   stats: {"role":"client",...}
 *
 * Usage: embedded_client [-k KEYFILE] [-n COUNT] [-t TIMEOUT_MS] [-s] PATH [PATH...]
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mptunnel.h"

#define MAX_TIMEOUTS 50 /* consecutive timeouts before giving up */

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
            "usage: embedded_client [-k KEYFILE] [-n COUNT] [-t TIMEOUT_MS] [-s] PATH [PATH...]\n"
            "Runs the hello counter through an in-process tunnel client (mpt_socket).\n"
            "  -k KEYFILE     encrypt with the pre-shared key in KEYFILE (as the server)\n"
            "  -n COUNT       round trips to make (default 10)\n"
            "  -t TIMEOUT_MS  resend when no answer came within this time (default 500)\n"
            "  -s             print the socket's stats as JSON at the end\n"
            "  PATH           HOST:PORT of a bridge or of the server; one or more\n");
}

/* Reports a failed library call with the library's message; returns 1 (the exit code). */
static int fail(mpt_result r)
{
    fprintf(stderr, "embedded_client: %s (%s)\n", mpt_last_error(), mpt_result_str(r));
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
static int parse_hello(const uint8_t *buf, size_t len, unsigned long *n)
{
    char text[64];
    char *end;
    if (len == 0 || len >= sizeof text || buf[0] < '0' || buf[0] > '9')
        return 0;
    memcpy(text, buf, len);
    text[len] = '\0';
    errno = 0;
    *n = strtoul(text, &end, 10);
    return errno == 0 && strcmp(end, " hello") == 0;
}

/* Monotonic time in milliseconds. */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A poll() timeout that reaches `deadline` (rounded up, never negative, at most 200 ms). */
static int ms_until(double deadline)
{
    double left = deadline - now_ms();
    return left <= 0 ? 0 : left >= 200 ? 200 : (int)left + 1;
}

/* Sends "n hello" through the tunnel. */
static mpt_result send_hello(mpt_socket *s, unsigned long n)
{
    char msg[32];
    int len = snprintf(msg, sizeof msg, "%lu hello", n);
    mpt_result r = mpt_socket_send(s, (const uint8_t *)msg, (size_t)len);
    /* A full send queue only loses this datagram; the timeout resends it. */
    return r == MPT_ERR_WOULD_BLOCK ? MPT_OK : r;
}

/* Prints "stats: <json>", growing the buffer when the library says it is too small. */
static mpt_result print_stats(const mpt_socket *s)
{
    char *buf = NULL, *bigger;
    size_t cap = 0, len = 0;
    mpt_result r;
    /* The first call, with cap 0, only asks for the size. */
    while ((r = mpt_socket_stats_json(s, buf, cap, &len)) == MPT_ERR_BUFFER_TOO_SMALL) {
        cap = len + 4096; /* room for the snapshot to grow before the next call */
        if ((bigger = realloc(buf, cap)) == NULL) {
            free(buf);
            fprintf(stderr, "embedded_client: out of memory\n");
            return MPT_OK; /* reported already */
        }
        buf = bigger;
    }
    if (r == MPT_OK) {
        printf("stats: %s\n", buf);
        fflush(stdout);
    }
    free(buf);
    return r;
}

int main(int argc, char **argv)
{
    const char *keyfile = NULL;
    long count = 10, timeout_ms = 500;
    int show_stats = 0, opt, i, rc = 0;
    mpt_config *cfg = NULL;
    mpt_socket *sock = NULL;
    mpt_result r;
    mpt_fd fd;
    unsigned long n = 1;          /* the number in the "N hello" we wait an answer for */
    int waiting = 0;              /* 1: "n hello" is out; 0: send it now */
    double sent_at = 0, deadline; /* when it was last sent; when to resend (or send) */
    long done = 0, timeouts = 0, stale = 0, in_a_row = 0, rtt_count = 0;
    double rtt_min = 0, rtt_max = 0, rtt_sum = 0;

    while ((opt = getopt(argc, argv, "k:n:t:sh")) != -1) {
        switch (opt) {
        case 'k': keyfile = optarg; break;
        case 'n':
            if (!parse_long(optarg, 1, 1000000000L, &count)) {
                fprintf(stderr, "embedded_client: bad COUNT '%s'\n", optarg);
                return 2;
            }
            break;
        case 't':
            if (!parse_long(optarg, 1, 3600000L, &timeout_ms)) {
                fprintf(stderr, "embedded_client: bad TIMEOUT_MS '%s'\n", optarg);
                return 2;
            }
            break;
        case 's': show_stats = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    install_signal_handlers();

    /* A client config: one "path" per bridge (each call appends one), and the key if any. */
    if ((r = mpt_config_new(MPT_ROLE_CLIENT, &cfg)) != MPT_OK)
        return fail(r);
    for (i = optind; i < argc && r == MPT_OK; i++)
        r = mpt_config_set(cfg, "path", argv[i]);
    if (r == MPT_OK && keyfile != NULL)
        r = mpt_config_set(cfg, "key-file", keyfile);
    if (r == MPT_OK)
        r = mpt_socket_connect(cfg, &sock);
    mpt_config_free(cfg); /* the socket keeps its own copy */
    if (r != MPT_OK)
        return fail(r);
    if ((fd = mpt_socket_fd(sock)) == MPT_INVALID_FD) {
        rc = fail(MPT_ERR_UNSUPPORTED);
        goto out;
    }

    deadline = now_ms(); /* send the first one at once */
    while (!stop_requested && done < count) {
        struct pollfd pfd = { 0, POLLIN, 0 };

        if (now_ms() >= deadline) {
            if (waiting) { /* no answer in time: ask again */
                timeouts++;
                if (++in_a_row >= MAX_TIMEOUTS) {
                    fprintf(stderr, "embedded_client: no answer to \"%lu hello\" after %d "
                                    "tries, giving up\n", n, MAX_TIMEOUTS);
                    rc = 1;
                    break;
                }
            }
            if ((r = send_hello(sock, n)) != MPT_OK) {
                rc = fail(r);
                break;
            }
            waiting = 1;
            sent_at = now_ms();
            deadline = sent_at + timeout_ms;
        }

        /* Wait until a datagram is queued (or the deadline), then take all of them. */
        pfd.fd = fd;
        if (poll(&pfd, 1, ms_until(deadline)) < 0 && errno != EINTR) {
            fprintf(stderr, "embedded_client: poll: %s\n", strerror(errno));
            rc = 1;
            break;
        }
        while (done < count) {
            uint8_t buf[65536]; /* 65507 bytes always suffice */
            size_t len;
            unsigned long m;
            double rtt;
            r = mpt_socket_recv(sock, buf, sizeof buf, &len, 0);
            if (r == MPT_ERR_TIMEOUT)
                break; /* nothing more queued */
            if (r != MPT_OK) {
                rc = fail(r);
                goto out;
            }
            if (!parse_hello(buf, len, &m) || m != n + 1) {
                stale++; /* a late copy of an earlier answer */
                continue;
            }
            rtt = now_ms() - sent_at;
            if (in_a_row == 0) { /* sent once, so the answer is to this send */
                if (rtt_count == 0 || rtt < rtt_min)
                    rtt_min = rtt;
                if (rtt > rtt_max)
                    rtt_max = rtt;
                rtt_sum += rtt;
                rtt_count++;
            }
            done++;
            in_a_row = 0;
            n += 2;
            waiting = 0;
            deadline = now_ms(); /* send the next one at once */
        }
    }
    if (stop_requested && done < count) {
        fprintf(stderr, "embedded_client: interrupted\n");
        rc = 1;
    }

out:
    printf("embedded_client: %ld round trips, %ld timeouts, %ld stale, rtt min/avg/max "
           "%.3f/%.3f/%.3f ms\n",
           done, timeouts, stale, rtt_min, rtt_count ? rtt_sum / rtt_count : 0.0, rtt_max);
    fflush(stdout);
    if (show_stats && (r = print_stats(sock)) != MPT_OK)
        rc = fail(r);
    mpt_socket_free(sock); /* sends CLOSE to the server and stops the library's thread */
    return rc;
}
