/*
 * udpserver.c - a plain UDP server (no mptunnel library) for the "hello counter" exchange.
 *
 * It answers every datagram "N hello" with "N+1 hello" to whoever sent it, and ignores (and
 * counts) anything else. Use it as the service behind mpserver, so that udpclient or
 * embedded_client can test a tunnel end to end:
 *
 *   build/udpserver 6666 &                     # listens on 127.0.0.1:6666
 *   mpserver 2000 127.0.0.1 6666 &
 *   mpclient 4000 client.conf &                # bridges to port 2000, see README.md
 *   build/udpclient -n 100 127.0.0.1 4000
 *
 * Usage: udpserver [-b BIND_ADDR] [-v] PORT   (Ctrl-C or SIGTERM stops it)
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
            "usage: udpserver [-b BIND_ADDR] [-v] PORT\n"
            "Answers each UDP datagram \"N hello\" with \"N+1 hello\" until SIGINT/SIGTERM.\n"
            "  -b BIND_ADDR  address to listen on, IPv4 or IPv6 (default 127.0.0.1)\n"
            "  -v            print one line per datagram\n"
            "  PORT          UDP port (0 = any free port)\n");
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
static int parse_hello(const char *buf, size_t len, unsigned long long *n)
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

/* Formats an address as "1.2.3.4:5" or "[::1]:5". */
static const char *addr_str(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
    char host[256], port[16];
    if (getnameinfo(sa, len, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(out, cap, "?");
    else if (strchr(host, ':'))
        snprintf(out, cap, "[%s]:%s", host, port);
    else
        snprintf(out, cap, "%s:%s", host, port);
    return out;
}

/* Binds a UDP socket to host:port; returns the descriptor or -1 after printing why. */
static int bind_udp(const char *host, const char *port)
{
    struct addrinfo hints, *res, *ai;
    int fd = -1, err = 0, gai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((gai = getaddrinfo(host, port, &hints, &res)) != 0) {
        fprintf(stderr, "udpserver: %s: %s\n", host, gai_strerror(gai));
        return -1;
    }
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        } else if (fd < 0) {
            err = errno;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        fprintf(stderr, "udpserver: cannot bind %s port %s: %s\n", host, port, strerror(err));
    return fd;
}

int main(int argc, char **argv)
{
    const char *bind_addr = "127.0.0.1";
    int verbose = 0, opt, fd;
    long port;
    unsigned long answered = 0, ignored = 0;
    char name[300];
    struct sockaddr_storage local;
    socklen_t local_len = sizeof local;

    while ((opt = getopt(argc, argv, "b:vh")) != -1) {
        switch (opt) {
        case 'b': bind_addr = optarg; break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (argc - optind != 1) {
        usage(stderr);
        return 2;
    }
    if (!parse_long(argv[optind], 0, 65535, &port)) {
        fprintf(stderr, "udpserver: bad PORT '%s' (0-65535)\n", argv[optind]);
        return 2;
    }

    install_signal_handlers();
    if ((fd = bind_udp(bind_addr, argv[optind])) < 0)
        return 1;
    /* Non-blocking: after poll() says readable, read until EAGAIN. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    getsockname(fd, (struct sockaddr *)&local, &local_len);
    printf("udpserver: listening on %s\n",
           addr_str((struct sockaddr *)&local, local_len, name, sizeof name));
    fflush(stdout);

    while (!stop_requested) {
        struct pollfd pfd = { 0, POLLIN, 0 };
        pfd.fd = fd;
        /* A timeout too, so that a signal arriving just before poll() is noticed soon. */
        if (poll(&pfd, 1, 200) <= 0)
            continue; /* timeout, or EINTR from a signal: check the flag */
        for (;;) {
            char buf[65536], reply[64];
            struct sockaddr_storage from;
            socklen_t from_len = sizeof from;
            unsigned long long n;
            ssize_t len = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len);
            if (len < 0)
                break; /* EAGAIN: drained (other errors: try again after poll) */
            addr_str((struct sockaddr *)&from, from_len, name, sizeof name);
            if (!parse_hello(buf, (size_t)len, &n)) {
                ignored++;
                if (verbose)
                    printf("udpserver: %s: ignored %ld bytes\n", name, (long)len);
                continue;
            }
            snprintf(reply, sizeof reply, "%llu hello", n + 1);
            if (sendto(fd, reply, strlen(reply), 0, (struct sockaddr *)&from, from_len) < 0) {
                fprintf(stderr, "udpserver: sendto %s: %s\n", name, strerror(errno));
                continue;
            }
            answered++;
            if (verbose)
                printf("udpserver: %s: %llu hello -> %s\n", name, n, reply);
        }
        if (verbose)
            fflush(stdout);
    }

    close(fd);
    printf("udpserver: answered %lu datagrams, ignored %lu\n", answered, ignored);
    fflush(stdout);
    return 0;
}
