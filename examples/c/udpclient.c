/*
 * udpclient.c - a plain UDP client (no mptunnel library) for the "hello counter" exchange.
 *
 * It sends "1 hello" and waits for "2 hello", then sends "3 hello", and so on. An answer that
 * does not come within the timeout is asked for again (a timeout); answers with another
 * number (late copies after a retry) are ignored (stale); after 50 timeouts in a row it gives
 * up. Point it at mpclient's listen port to run the exchange through the tunnel, or straight
 * at udpserver to compare:
 *
 *   build/udpserver 6666 &
 *   mpserver 2000 127.0.0.1 6666 &
 *   mpclient 4000 client.conf &                # bridges to port 2000, see README.md
 *   build/udpclient -n 100 127.0.0.1 4000
 *
 * It prints one summary line and exits 0 when COUNT round trips were made, 1 otherwise:
 *   udpclient: 100 round trips, 3 timeouts, 0 stale, rtt min/avg/max 0.210/0.540/3.100 ms
 * The RTT figures count only exchanges answered without a resend (an answer after a resend
 * may belong to either copy, so its time would be wrong).
 *
 * Usage: udpclient [-n COUNT] [-t TIMEOUT_MS] [-i INTERVAL_MS] [-v] HOST PORT
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TIMEOUTS 50 /* consecutive timeouts before giving up */

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* SIGINT/SIGTERM set a flag; no SA_RESTART, so a blocked poll() returns EINTR. */
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
            "usage: udpclient [-n COUNT] [-t TIMEOUT_MS] [-i INTERVAL_MS] [-v] HOST PORT\n"
            "Sends \"1 hello\", expects \"2 hello\", sends \"3 hello\", ... to HOST:PORT (UDP).\n"
            "  -n COUNT        round trips to make (default 10)\n"
            "  -t TIMEOUT_MS   resend when no answer came within this time (default 500)\n"
            "  -i INTERVAL_MS  pause between an answer and the next send (default 0)\n"
            "  -v              print each exchange\n");
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
static int parse_hello(const char *buf, size_t len, unsigned long *n)
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

/* A poll() timeout towards `deadline` (rounded up, never negative), at most 200 ms so that
 * a signal arriving just before poll() is noticed soon. */
static int ms_until(double deadline)
{
    double left = deadline - now_ms();
    return left <= 0 ? 0 : left >= 200 ? 200 : (int)left + 1;
}

/* Creates a UDP socket connected to host:port (IPv4 preferred); -1 after printing why. */
static int connect_udp(const char *host, const char *port)
{
    struct addrinfo hints, *res, *ai;
    int fd, gai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    if ((gai = getaddrinfo(host, port, &hints, &res)) != 0) {
        fprintf(stderr, "udpclient: %s port %s: %s\n", host, port, gai_strerror(gai));
        return -1;
    }
    for (ai = res; ai->ai_next != NULL && ai->ai_family != AF_INET; ai = ai->ai_next)
        ;
    if (ai->ai_family != AF_INET)
        ai = res; /* no IPv4 address: take the first one */
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        fprintf(stderr, "udpclient: %s port %s: %s\n", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Sends "n hello". Returns 0, or -1 after printing why. */
static int send_hello(int fd, unsigned long n)
{
    char msg[32];
    int len = snprintf(msg, sizeof msg, "%lu hello", n);
    /* ECONNREFUSED: an earlier datagram met a closed port (the tunnel is not up yet);
     * that is just a lost datagram, the timeout resends it. */
    if (send(fd, msg, (size_t)len, 0) < 0 && errno != ECONNREFUSED) {
        fprintf(stderr, "udpclient: send: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    long count = 10, timeout_ms = 500, interval_ms = 0;
    int verbose = 0, opt, fd, rc = 0;
    unsigned long n = 1;           /* the number in the "N hello" we wait an answer for */
    int waiting = 0;               /* 1: "n hello" is out; 0: pausing before sending it */
    double sent_at = 0, deadline;  /* when it was last sent; when to resend (or send) */
    long done = 0, timeouts = 0, stale = 0, in_a_row = 0, rtt_count = 0;
    double rtt_min = 0, rtt_max = 0, rtt_sum = 0;

    while ((opt = getopt(argc, argv, "n:t:i:vh")) != -1) {
        switch (opt) {
        case 'n':
            if (!parse_long(optarg, 1, 1000000000L, &count)) {
                fprintf(stderr, "udpclient: bad COUNT '%s'\n", optarg);
                return 2;
            }
            break;
        case 't':
            if (!parse_long(optarg, 1, 3600000L, &timeout_ms)) {
                fprintf(stderr, "udpclient: bad TIMEOUT_MS '%s'\n", optarg);
                return 2;
            }
            break;
        case 'i':
            if (!parse_long(optarg, 0, 3600000L, &interval_ms)) {
                fprintf(stderr, "udpclient: bad INTERVAL_MS '%s'\n", optarg);
                return 2;
            }
            break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (argc - optind != 2) {
        usage(stderr);
        return 2;
    }

    install_signal_handlers();
    if ((fd = connect_udp(argv[optind], argv[optind + 1])) < 0)
        return 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    deadline = now_ms(); /* send the first one at once */
    while (!stop_requested && done < count) {
        struct pollfd pfd = { 0, POLLIN, 0 };
        int ready;

        if (now_ms() >= deadline) {
            if (waiting) { /* no answer in time: ask again */
                timeouts++;
                if (++in_a_row >= MAX_TIMEOUTS) {
                    fprintf(stderr, "udpclient: no answer to \"%lu hello\" after %d tries, "
                                    "giving up\n", n, MAX_TIMEOUTS);
                    rc = 1;
                    break;
                }
                if (verbose)
                    printf("udpclient: timeout, resending %lu hello\n", n);
            }
            if (send_hello(fd, n) != 0) {
                rc = 1;
                break;
            }
            waiting = 1;
            sent_at = now_ms();
            deadline = sent_at + timeout_ms;
        }

        pfd.fd = fd;
        ready = poll(&pfd, 1, ms_until(deadline));
        if (ready < 0 && errno != EINTR) {
            fprintf(stderr, "udpclient: poll: %s\n", strerror(errno));
            rc = 1;
            break;
        }
        while (ready > 0 && done < count) { /* read everything that arrived */
            char buf[65536];
            unsigned long m;
            double rtt;
            ssize_t len = recv(fd, buf, sizeof buf, 0);
            if (len < 0 && errno == ECONNREFUSED)
                continue; /* a closed port answered an earlier datagram: ignore */
            if (len < 0)
                break; /* EAGAIN: nothing more for now */
            if (!waiting || !parse_hello(buf, (size_t)len, &m) || m != n + 1) {
                stale++;
                if (verbose)
                    printf("udpclient: ignored stale answer \"%.*s\"\n",
                           (int)(len < 40 ? len : 40), buf);
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
            if (verbose)
                printf("udpclient: %lu hello -> %lu hello, %.3f ms\n", n, m, rtt);
            n += 2;
            waiting = 0;
            deadline = now_ms() + interval_ms;
        }
        if (verbose)
            fflush(stdout);
    }

    if (stop_requested && done < count) {
        fprintf(stderr, "udpclient: interrupted\n");
        rc = 1;
    }
    close(fd);
    printf("udpclient: %ld round trips, %ld timeouts, %ld stale, rtt min/avg/max "
           "%.3f/%.3f/%.3f ms\n",
           done, timeouts, stale, rtt_min, rtt_count ? rtt_sum / rtt_count : 0.0, rtt_max);
    fflush(stdout);
    return rc;
}
