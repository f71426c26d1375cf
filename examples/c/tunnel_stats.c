/*
 * tunnel_stats.c - runs a forwarding endpoint, as mpclient or mpserver do, and prints its
 * statistics once a second.
 *
 * It reads the tools' config file format, starts the tunnel on the library's background
 * thread (mpt_tunnel_start), prints mpt_tunnel_stats_json() every second, and at the end
 * stops the tunnel and prints the final figures as text. It also shows how to receive the
 * library's log messages through a callback.
 *
 *   printf 'listen = 127.0.0.1:0\ntarget = 127.0.0.1:6666\n' > server.conf
 *   build/tunnel_stats -s 10 server server.conf
 *
 *   printf 'listen = 127.0.0.1:4000\n127.0.0.1 2000\n' > client.conf   # paths: HOST PORT
 *   build/tunnel_stats client client.conf
 *
 * Usage: tunnel_stats [-s SECONDS] client|server CONFIG_FILE
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
            "usage: tunnel_stats [-s SECONDS] client|server CONFIG_FILE\n"
            "Runs a tunnel endpoint from CONFIG_FILE and prints its stats every second.\n"
            "  -s SECONDS   run this long (default 5; 0 = until SIGINT/SIGTERM)\n"
            "  CONFIG_FILE  the tools' format: \"name = value\" lines (listen, target, ...)\n"
            "               and, for a client, one \"HOST PORT\" line per path\n");
}

/* Reports a failed library call with the library's message; returns 1 (the exit code). */
static int fail(mpt_result r)
{
    fprintf(stderr, "tunnel_stats: %s (%s)\n", mpt_last_error(), mpt_result_str(r));
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

/* The log callback: may run on any thread, so it only formats one line to stderr. */
static void on_log(void *userdata, int level, const char *msg)
{
    fprintf(stderr, "%s: log[%d]: %s\n", (const char *)userdata, level, msg);
}

/* Monotonic time in milliseconds. */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A text getter of the tunnel: mpt_tunnel_stats_json or mpt_tunnel_stats_text. */
typedef mpt_result (*text_fn)(const mpt_tunnel *, char *, size_t, size_t *);

/* Calls fn into *buf (capacity *cap), growing the buffer while the library says it is too
 * small. The buffer is kept between calls, so it grows only a few times. */
static mpt_result get_text(text_fn fn, const mpt_tunnel *t, char **buf, size_t *cap)
{
    size_t len = 0;
    mpt_result r;
    while ((r = fn(t, *buf, *cap, &len)) == MPT_ERR_BUFFER_TOO_SMALL) {
        size_t want = len + 4096; /* room for the snapshot to grow before the next call */
        char *bigger = realloc(*buf, want);
        if (bigger == NULL)
            return r; /* keep the old buffer; the caller frees it */
        *buf = bigger;
        *cap = want;
    }
    return r;
}

int main(int argc, char **argv)
{
    long seconds = 5;
    int opt, rc = 0;
    char *buf = NULL, addr[128];
    size_t cap = 0, addr_len;
    mpt_role role;
    mpt_config *cfg = NULL;
    mpt_tunnel *tun = NULL;
    mpt_result r;
    double start, next;

    while ((opt = getopt(argc, argv, "s:h")) != -1) {
        switch (opt) {
        case 's':
            if (!parse_long(optarg, 0, 86400L * 365, &seconds)) {
                fprintf(stderr, "tunnel_stats: bad SECONDS '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (argc - optind != 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[optind], "client") == 0) {
        role = MPT_ROLE_CLIENT;
    } else if (strcmp(argv[optind], "server") == 0) {
        role = MPT_ROLE_SERVER;
    } else {
        fprintf(stderr, "tunnel_stats: the role must be 'client' or 'server', not '%s'\n",
                argv[optind]);
        return 2;
    }
    if (strcmp(mpt_version(), MPT_VERSION_STRING) != 0)
        fprintf(stderr, "tunnel_stats: warning: header %s, library %s\n", MPT_VERSION_STRING,
                mpt_version());
    install_signal_handlers();
    /* Warnings and errors (levels 1-2) to our callback instead of the library's stderr. */
    mpt_set_log_callback(on_log, "tunnel_stats", 2);

    /* Config from the file; mpt_tunnel_new checks it and binds the sockets. */
    if ((r = mpt_config_new(role, &cfg)) != MPT_OK) {
        rc = fail(r);
        goto out;
    }
    r = mpt_config_load_file(cfg, argv[optind + 1]);
    if (r == MPT_OK)
        r = mpt_tunnel_new(cfg, &tun);
    mpt_config_free(cfg); /* the tunnel keeps its own copy */
    if (r != MPT_OK || (r = mpt_tunnel_start(tun)) != MPT_OK ||
        (r = mpt_tunnel_local_addr(tun, addr, sizeof addr, &addr_len)) != MPT_OK) {
        rc = fail(r);
        goto out;
    }
    printf("tunnel_stats: running on %s\n", addr);
    fflush(stdout);

    /* Stats at every full second until SECONDS have passed or a signal came. */
    start = now_ms();
    next = start + 1000;
    while (!stop_requested) {
        double left = next - now_ms();
        if (left > 0) { /* sleep in short steps, so that a signal is noticed soon */
            poll(NULL, 0, left > 200 ? 200 : (int)left + 1);
            continue;
        }
        if ((r = get_text(mpt_tunnel_stats_json, tun, &buf, &cap)) != MPT_OK) {
            rc = fail(r);
            break;
        }
        printf("stats: %s\n", buf);
        fflush(stdout);
        if (seconds > 0 && next - start >= seconds * 1000.0)
            break;
        next += 1000;
    }

    /* Stop (CLOSE to the peers), then the final figures, which stay readable. */
    if ((r = mpt_tunnel_stop(tun)) != MPT_OK)
        rc = fail(r);
    if ((r = get_text(mpt_tunnel_stats_text, tun, &buf, &cap)) != MPT_OK)
        rc = fail(r);
    else
        printf("%s\n", buf);
    printf("tunnel_stats: stopped\n");
    fflush(stdout);

out:
    mpt_tunnel_free(tun);
    mpt_set_log_callback(NULL, NULL, 2); /* back to stderr; our callback is not running now */
    free(buf);
    return rc;
}
