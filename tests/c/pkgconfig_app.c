/*
 * A small program that uses libmptunnel only through its installed header, built by
 * tests/c/install_test.sh with pkg-config (shared and static) and with CMake
 * (mptunnel::mptunnel): a listener on 127.0.0.1:0, a socket to it over two paths, a few
 * datagrams each way, the statistics, and everything freed. Exit 0 on success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mptunnel.h>

#define ROUNDS 5
#define WAIT_MS 5000

static int fail(const char *what, mpt_result r) {
    fprintf(stderr, "app: %s failed: %s (%s)\n", what, mpt_result_str(r), mpt_last_error());
    return 1;
}

#define TRY(call)                       \
    do {                                \
        mpt_result r_ = (call);         \
        if (r_ != MPT_OK) {             \
            status = fail(#call, r_);   \
            goto done;                  \
        }                               \
    } while (0)

/* The socket's statistics as a malloc'd string: ask for the size, then fetch. */
static char *socket_stats(const mpt_socket *s) {
    size_t need = 0, len = 0;
    char *buf;
    if (mpt_socket_stats_json(s, NULL, 0, &need) != MPT_ERR_BUFFER_TOO_SMALL)
        return NULL;
    need += 4096; /* the snapshot may grow between the two calls */
    buf = malloc(need);
    if (buf != NULL && mpt_socket_stats_json(s, buf, need, &len) != MPT_OK) {
        free(buf);
        buf = NULL;
    }
    return buf;
}

int main(void) {
    int status = 0, i;
    mpt_config *server = NULL, *client = NULL;
    mpt_listener *l = NULL;
    mpt_socket *s = NULL;
    char addr[128], msg[64], buf[256], lstats[16384];
    char *sstats = NULL;
    size_t len = 0;
    uint64_t peer = 0;

    printf("mptunnel %s (header %s)\n", mpt_version(), MPT_VERSION_STRING);
    if (strcmp(mpt_version(), MPT_VERSION_STRING) != 0) {
        fprintf(stderr, "app: library %s does not match header %s\n", mpt_version(),
                MPT_VERSION_STRING);
        return 1;
    }

    TRY(mpt_config_new(MPT_ROLE_SERVER, &server));
    TRY(mpt_config_set(server, "listen", "127.0.0.1:0"));
    TRY(mpt_listener_bind(server, &l));
    TRY(mpt_listener_local_addr(l, addr, sizeof addr, &len));
    printf("listener on %s\n", addr);

    TRY(mpt_config_new(MPT_ROLE_CLIENT, &client));
    TRY(mpt_config_set(client, "path", addr));
    TRY(mpt_config_set(client, "path", addr));
    TRY(mpt_socket_connect(client, &s));

    for (i = 0; i < ROUNDS; i++) {
        sprintf(msg, "ping %d", i);
        TRY(mpt_socket_send(s, (const uint8_t *)msg, strlen(msg)));
        TRY(mpt_listener_recv(l, (uint8_t *)buf, sizeof buf - 1, &len, &peer, WAIT_MS));
        buf[len] = '\0';
        if (strcmp(buf, msg) != 0) {
            fprintf(stderr, "app: listener got '%s', want '%s'\n", buf, msg);
            status = 1;
            goto done;
        }
        sprintf(msg, "pong %d", i);
        TRY(mpt_listener_send(l, peer, (const uint8_t *)msg, strlen(msg)));
        TRY(mpt_socket_recv(s, (uint8_t *)buf, sizeof buf - 1, &len, WAIT_MS));
        buf[len] = '\0';
        if (strcmp(buf, msg) != 0) {
            fprintf(stderr, "app: socket got '%s', want '%s'\n", buf, msg);
            status = 1;
            goto done;
        }
    }
    printf("%d datagrams each way, peer %llu\n", ROUNDS, (unsigned long long)peer);

    sstats = socket_stats(s);
    if (sstats == NULL || sstats[0] != '{') {
        fprintf(stderr, "app: no socket statistics (%s)\n", mpt_last_error());
        status = 1;
        goto done;
    }
    TRY(mpt_listener_stats_json(l, lstats, sizeof lstats, &len));
    if (len != strlen(lstats) || lstats[0] != '{') {
        fprintf(stderr, "app: bad listener statistics\n");
        status = 1;
        goto done;
    }
    printf("socket stats: %.200s%s\n", sstats, strlen(sstats) > 200 ? "..." : "");
    printf("app: ok\n");

done:
    free(sstats);
    mpt_socket_free(s);
    mpt_listener_free(l);
    mpt_config_free(client);
    mpt_config_free(server);
    return status;
}
