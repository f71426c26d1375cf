// Tests of the C++17 wrapper mptunnel.hpp against the installed library, built by
// tests/c/install_test.sh (with CMake, and directly with g++ -Wall -Wextra -Werror -pedantic).
// Loopback only. Prints a line per failed check and a summary; exit 1 if any failed.
#include <mptunnel.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

namespace {

int passed = 0, failed = 0;

void check(bool ok, const char* what, int line) {
    if (ok) {
        ++passed;
    } else {
        ++failed;
        std::printf("not ok - %s (line %d)\n", what, line);
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

// Runs `f`, which must throw mptunnel::Error with `code`; returns its message.
template <typename F>
std::string throws(F f, mpt_result code, int line) {
    try {
        f();
    } catch (const mptunnel::Error& e) {
        check(e.code() == code, "Error has the expected code", line);
        check(std::strlen(e.what()) > 0, "Error has a message", line);
        return e.what();
    }
    check(false, "an Error was thrown", line);
    return "";
}
#define THROWS(code, ...) throws([&] { __VA_ARGS__; }, (code), __LINE__)

constexpr int kWait = 5000;

std::string text(const std::vector<std::uint8_t>& v) { return std::string(v.begin(), v.end()); }

// Handles are move-only.
template <typename T>
constexpr bool move_only = !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> &&
                           std::is_nothrow_move_constructible_v<T> &&
                           std::is_nothrow_move_assignable_v<T>;
static_assert(move_only<mptunnel::Config>);
static_assert(move_only<mptunnel::Tunnel>);
static_assert(move_only<mptunnel::Socket>);
static_assert(move_only<mptunnel::Listener>);

mptunnel::Listener make_listener() {
    return mptunnel::Listener::bind(
        mptunnel::Config(mptunnel::Role::Server).set("listen", "127.0.0.1:0"));
}

mptunnel::Socket connect_to(const std::string& addr, int paths) {
    mptunnel::Config c(mptunnel::Role::Client);
    for (int i = 0; i < paths; ++i) {
        c.set("path", addr);
    }
    return mptunnel::Socket::connect(c);
}

void test_version() {
    CHECK(mptunnel::version() == MPT_VERSION_STRING);
}

void test_config_errors() {
    mptunnel::Config c(mptunnel::Role::Client);
    std::string msg = THROWS(MPT_ERR_CONFIG, c.set("colour", "blue"));
    CHECK(msg.find("colour") != std::string::npos);
    THROWS(MPT_ERR_CONFIG, c.set("path", "not an address"));
    THROWS(MPT_ERR_CONFIG, c.validate());  // no listen, no path
    THROWS(MPT_ERR_CONFIG, c.load_file("/nonexistent/mptunnel.conf"));
    c.set("listen", "127.0.0.1:0").set("path", "127.0.0.1:9");
    c.validate();
    CHECK(c.get() != nullptr);
}

void test_exchange() {
    mptunnel::Listener l = make_listener();
    std::string addr = l.local_addr();
    CHECK(addr.rfind("127.0.0.1:", 0) == 0);
    mptunnel::Socket s = connect_to(addr, 2);
    CHECK(s.max_datagram() > 60000);
    CHECK(s.fd() != MPT_INVALID_FD);
    CHECK(l.fd() != MPT_INVALID_FD);

    std::uint64_t peer = 0;
    for (int i = 0; i < 5; ++i) {
        std::string ping = "ping " + std::to_string(i);
        s.send(ping);
        auto d = l.recv(kWait);
        CHECK(d.has_value() && text(d->data) == ping);
        if (!d) {
            return;
        }
        peer = d->peer;
        l.send(peer, "pong " + std::to_string(i));
        auto back = s.recv(kWait);
        CHECK(back.has_value() && text(*back) == "pong " + std::to_string(i));
    }

    // Larger than the wrapper's first buffer: it grows on MPT_ERR_BUFFER_TOO_SMALL.
    std::vector<std::uint8_t> big(20000);
    for (std::size_t i = 0; i < big.size(); ++i) {
        big[i] = static_cast<std::uint8_t>(i * 7);
    }
    s.send(big);
    auto d = l.recv(kWait);
    CHECK(d.has_value() && d->data == big);
    l.send(peer, big.data(), big.size());
    auto back = s.recv(kWait);
    CHECK(back.has_value() && *back == big);
    s.send("", 0);  // an empty datagram is allowed
    auto empty = l.recv(kWait);
    CHECK(empty.has_value() && empty->data.empty());

    THROWS(MPT_ERR_TOO_LARGE, s.send(std::vector<std::uint8_t>(s.max_datagram() + 1)));

    // Nothing waiting: a timeout is std::nullopt, not an Error.
    CHECK(!s.recv(0).has_value());
    CHECK(!s.recv(50).has_value());
    CHECK(!l.recv(50).has_value());

    std::string js = s.stats_json();
    CHECK(!js.empty() && js.front() == '{' && js.back() == '}');
    std::string jl = l.stats_json();
    CHECK(!jl.empty() && jl.front() == '{' && jl.find("\"sessions\"") != std::string::npos);

    s.close();
    s.close();  // idempotent
    THROWS(MPT_ERR_CLOSED, s.recv(kWait));
    THROWS(MPT_ERR_CLOSED, s.send("late"));
    l.close();
    THROWS(MPT_ERR_CLOSED, l.recv(0));
}

void test_moves() {
    mptunnel::Listener l = make_listener();
    mptunnel::Socket a = connect_to(l.local_addr(), 1);
    CHECK(static_cast<bool>(a));

    mptunnel::Socket b = std::move(a);  // the source is emptied
    CHECK(!a && b);
    THROWS(MPT_ERR_NULL, a.send("x"));
    CHECK(a.fd() == MPT_INVALID_FD);
    CHECK(a.max_datagram() == 0);
    b.send("moved");
    auto d = l.recv(kWait);
    CHECK(d.has_value() && text(d->data) == "moved");

    mptunnel::Socket c = connect_to(l.local_addr(), 1);
    c = std::move(b);  // frees c's old socket, takes b's
    CHECK(!b && c);
    c.send("assigned");
    auto e = l.recv(kWait);
    CHECK(e.has_value() && text(e->data) == "assigned" && e->peer == d->peer);

    mptunnel::Listener l2 = std::move(l);
    CHECK(!l && l2);
    THROWS(MPT_ERR_NULL, l.local_addr());
    CHECK(!l2.local_addr().empty());

    mptunnel::Config cfg(mptunnel::Role::Server);
    mptunnel::Config cfg2 = std::move(cfg);
    CHECK(!cfg && cfg2);
    THROWS(MPT_ERR_NULL, cfg.set("listen", "127.0.0.1:0"));
    cfg2.set("listen", "127.0.0.1:0");
}

void test_tunnel() {
    mptunnel::Config c(mptunnel::Role::Server);
    c.set("listen", "127.0.0.1:0").set("target", "127.0.0.1:9");
    mptunnel::Tunnel t(c);
    std::string addr = t.local_addr();
    CHECK(addr.rfind("127.0.0.1:", 0) == 0);
    t.start();
    THROWS(MPT_ERR_STATE, t.start());
    std::string js = t.stats_json();
    CHECK(!js.empty() && js.front() == '{');
    CHECK(!t.stats_text().empty());
    t.stop();
    t.stop();  // stopping twice is fine
    THROWS(MPT_ERR_CLOSED, t.run());
    mptunnel::Tunnel t2 = std::move(t);
    CHECK(!t && t2);

    THROWS(MPT_ERR_CONFIG, mptunnel::Tunnel(mptunnel::Config(mptunnel::Role::Client)));
}

}  // namespace

int main() {
    try {
        test_version();
        test_config_errors();
        test_exchange();
        test_moves();
        test_tunnel();
    } catch (const mptunnel::Error& e) {
        std::printf("not ok - unexpected Error %u: %s\n", static_cast<unsigned>(e.code()),
                    e.what());
        ++failed;
    }
    std::printf("cpp_wrapper_test (mptunnel %s): %d passed, %d failed\n",
                mptunnel::version().c_str(), passed, failed);
    return failed == 0 ? 0 : 1;
}
