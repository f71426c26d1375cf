/*
 * mptunnel.hpp: a header-only C++17 wrapper over the C library (mptunnel.h).
 *
 *  - Every failing call throws mptunnel::Error, carrying the mpt_result code and the message
 *    of mpt_last_error(). Two results are not errors here: a receive that times out returns
 *    std::nullopt, and MPT_ERR_BUFFER_TOO_SMALL is handled by growing the buffer.
 *  - Config, Tunnel, Socket and Listener own one C handle each. They are move-only; a
 *    moved-from object is empty (operator bool is false) and its calls throw Error with
 *    MPT_ERR_NULL. Destructors free the handle (closing or stopping it first, as the
 *    *_free functions do).
 *  - Thread safety is the C library's: see mptunnel.h for each function. Objects must not
 *    be destroyed or moved while another thread is still inside a call on them.
 *
 * Link with libmptunnel (pkg-config mptunnel, or CMake mptunnel::mptunnel).
 */
#ifndef MPTUNNEL_HPP
#define MPTUNNEL_HPP

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mptunnel.h"

namespace mptunnel {

/// A failed call: code() is the mpt_result, what() the library's message.
class Error : public std::runtime_error {
public:
    Error(mpt_result code, const std::string& message)
        : std::runtime_error(message), code_(code) {}
    mpt_result code() const noexcept { return code_; }

private:
    mpt_result code_;
};

/// Throws Error for anything but MPT_OK, with the calling thread's mpt_last_error() (or the
/// code's description when the library left no message).
inline void check(mpt_result r) {
    if (r == MPT_OK) {
        return;
    }
    const char* msg = mpt_last_error();
    throw Error(r, (msg != nullptr && *msg != '\0') ? msg : mpt_result_str(r));
}

/// The library's version ("MAJOR.MINOR.PATCH"); compare with MPT_VERSION_STRING.
inline std::string version() { return mpt_version(); }

/// Which end a configuration describes.
enum class Role : mpt_role { Client = MPT_ROLE_CLIENT, Server = MPT_ROLE_SERVER };

namespace detail {

/// std::unique_ptr that frees a C handle with its mpt_*_free function (NULL-safe).
template <typename T, void (*Free)(T*)>
struct Deleter {
    void operator()(T* p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T*)>
using Handle = std::unique_ptr<T, Deleter<T, Free>>;

/// Calls a text getter (stats, addresses) with a buffer that grows until the text fits.
template <typename T>
std::string read_text(mpt_result (*fn)(const T*, char*, std::size_t, std::size_t*),
                      const T* h) {
    std::string buf(4096, '\0');  // stats usually fit: one call
    for (;;) {
        std::size_t len = 0;
        mpt_result r = fn(h, buf.data(), buf.size(), &len);
        if (r == MPT_OK) {
            buf.resize(len);
            return buf;
        }
        if (r != MPT_ERR_BUFFER_TOO_SMALL) {
            check(r);
        }
        // `len` is the size needed now; statistics may grow before the next call.
        buf.resize(len + 1024);
    }
}

/// Initial receive buffer: a typical datagram fits; larger ones cost one more call.
constexpr std::size_t kRecvInitial = 2048;

}  // namespace detail

/// Settings for a tunnel, socket or listener (keys as the tools' long options).
class Config {
public:
    explicit Config(Role role) {
        mpt_config* c = nullptr;
        check(mpt_config_new(static_cast<mpt_role>(role), &c));
        h_.reset(c);
    }
    Config(Config&&) noexcept = default;
    Config& operator=(Config&&) noexcept = default;
    Config(const Config&) = delete;
    Config& operator=(const Config&) = delete;

    /// Sets one option (a `path` is appended each time); returns *this for chaining.
    Config& set(const std::string& key, const std::string& value) {
        check(mpt_config_set(h_.get(), key.c_str(), value.c_str()));
        return *this;
    }
    /// Reads a config file in the tools' format.
    Config& load_file(const std::string& path) {
        check(mpt_config_load_file(h_.get(), path.c_str()));
        return *this;
    }
    /// Throws Error (MPT_ERR_CONFIG) when the config is not complete for a Tunnel.
    void validate() const { check(mpt_config_validate(h_.get())); }

    mpt_config* get() const noexcept { return h_.get(); }
    explicit operator bool() const noexcept { return h_ != nullptr; }

private:
    detail::Handle<mpt_config, mpt_config_free> h_;
};

/// A forwarding endpoint (what mpclient / mpserver run). Freed = stopped.
class Tunnel {
public:
    /// Validates, resolves and binds; does not run yet.
    explicit Tunnel(const Config& config) {
        mpt_tunnel* t = nullptr;
        check(mpt_tunnel_new(config.get(), &t));
        h_.reset(t);
    }
    Tunnel(Tunnel&&) noexcept = default;
    Tunnel& operator=(Tunnel&&) noexcept = default;
    Tunnel(const Tunnel&) = delete;
    Tunnel& operator=(const Tunnel&) = delete;

    /// Runs on a library thread and returns at once.
    void start() { check(mpt_tunnel_start(h_.get())); }
    /// Runs on the calling thread until stop() (from another thread).
    void run() { check(mpt_tunnel_run(h_.get())); }
    /// Stops and waits; stopping twice is fine.
    void stop() { check(mpt_tunnel_stop(h_.get())); }

    std::string stats_json() const { return detail::read_text(mpt_tunnel_stats_json, h_.get()); }
    std::string stats_text() const { return detail::read_text(mpt_tunnel_stats_text, h_.get()); }
    /// The bound listen address, e.g. "127.0.0.1:40123".
    std::string local_addr() const { return detail::read_text(mpt_tunnel_local_addr, h_.get()); }

    mpt_tunnel* get() const noexcept { return h_.get(); }
    explicit operator bool() const noexcept { return h_ != nullptr; }

private:
    detail::Handle<mpt_tunnel, mpt_tunnel_free> h_;
};

/// The client side of in-process multipath datagrams (to an mpserver or a Listener).
class Socket {
public:
    /// Starts a client endpoint over the config's paths.
    static Socket connect(const Config& config) {
        mpt_socket* s = nullptr;
        check(mpt_socket_connect(config.get(), &s));
        return Socket(s);
    }
    Socket(Socket&&) noexcept = default;
    Socket& operator=(Socket&&) noexcept = default;
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;

    /// Queues one datagram; Error with MPT_ERR_WOULD_BLOCK when the queue is full.
    void send(const void* data, std::size_t len) {
        check(mpt_socket_send(h_.get(), static_cast<const std::uint8_t*>(data), len));
    }
    void send(std::string_view data) { send(data.data(), data.size()); }
    void send(const std::vector<std::uint8_t>& data) { send(data.data(), data.size()); }

    /// The next datagram, or std::nullopt after timeout_ms (0 = do not wait, negative =
    /// wait). Throws Error (MPT_ERR_CLOSED) once the socket is closed.
    std::optional<std::vector<std::uint8_t>> recv(int timeout_ms) {
        std::vector<std::uint8_t> buf(detail::kRecvInitial);
        for (;;) {
            std::size_t len = 0;
            mpt_result r = mpt_socket_recv(h_.get(), buf.data(), buf.size(), &len, timeout_ms);
            if (r == MPT_OK) {
                buf.resize(len);
                return buf;
            }
            if (r == MPT_ERR_TIMEOUT) {
                return std::nullopt;
            }
            if (r != MPT_ERR_BUFFER_TOO_SMALL) {
                check(r);
            }
            buf.resize(len);  // the datagram stays queued; take it with a larger buffer
        }
    }

    /// Readable (POLLIN) while a datagram waits; owned by the socket. MPT_INVALID_FD if
    /// the socket is empty or the platform has none.
    mpt_fd fd() const noexcept { return mpt_socket_fd(h_.get()); }
    /// Closes (idempotent) and wakes blocked recv() calls; the destructor frees.
    void close() { check(mpt_socket_close(h_.get())); }
    std::string stats_json() const { return detail::read_text(mpt_socket_stats_json, h_.get()); }
    /// The largest datagram send() accepts.
    std::size_t max_datagram() const noexcept { return mpt_socket_max_datagram(h_.get()); }

    mpt_socket* get() const noexcept { return h_.get(); }
    explicit operator bool() const noexcept { return h_ != nullptr; }

private:
    explicit Socket(mpt_socket* s) noexcept : h_(s) {}
    detail::Handle<mpt_socket, mpt_socket_free> h_;
};

/// The server side of in-process multipath datagrams: each client session is a peer id.
class Listener {
public:
    /// One received datagram and the session that sent it (answer with send(peer, ...)).
    struct Datagram {
        std::uint64_t peer;
        std::vector<std::uint8_t> data;
    };

    /// Binds the config's `listen` address (port 0: see local_addr()).
    static Listener bind(const Config& config) {
        mpt_listener* l = nullptr;
        check(mpt_listener_bind(config.get(), &l));
        return Listener(l);
    }
    Listener(Listener&&) noexcept = default;
    Listener& operator=(Listener&&) noexcept = default;
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;

    /// The next datagram from any peer, or std::nullopt after timeout_ms (as Socket::recv).
    std::optional<Datagram> recv(int timeout_ms) {
        std::vector<std::uint8_t> buf(detail::kRecvInitial);
        for (;;) {
            std::size_t len = 0;
            std::uint64_t peer = 0;
            mpt_result r =
                mpt_listener_recv(h_.get(), buf.data(), buf.size(), &len, &peer, timeout_ms);
            if (r == MPT_OK) {
                buf.resize(len);
                return Datagram{peer, std::move(buf)};
            }
            if (r == MPT_ERR_TIMEOUT) {
                return std::nullopt;
            }
            if (r != MPT_ERR_BUFFER_TOO_SMALL) {
                check(r);
            }
            buf.resize(len);
        }
    }

    /// Sends one datagram to a peer (a peer that has gone away is not an error).
    void send(std::uint64_t peer, const void* data, std::size_t len) {
        check(mpt_listener_send(h_.get(), peer, static_cast<const std::uint8_t*>(data), len));
    }
    void send(std::uint64_t peer, std::string_view data) { send(peer, data.data(), data.size()); }
    void send(std::uint64_t peer, const std::vector<std::uint8_t>& data) {
        send(peer, data.data(), data.size());
    }

    /// As Socket::fd().
    mpt_fd fd() const noexcept { return mpt_listener_fd(h_.get()); }
    /// Closes (CLOSE to every peer) and wakes blocked recv() calls; the destructor frees.
    void close() { check(mpt_listener_close(h_.get())); }
    /// The bound address, e.g. "127.0.0.1:40123".
    std::string local_addr() const {
        return detail::read_text(mpt_listener_local_addr, h_.get());
    }
    std::string stats_json() const {
        return detail::read_text(mpt_listener_stats_json, h_.get());
    }

    mpt_listener* get() const noexcept { return h_.get(); }
    explicit operator bool() const noexcept { return h_ != nullptr; }

private:
    explicit Listener(mpt_listener* l) noexcept : h_(l) {}
    detail::Handle<mpt_listener, mpt_listener_free> h_;
};

}  // namespace mptunnel

#endif  // MPTUNNEL_HPP
