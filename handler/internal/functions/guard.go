package functions

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// clientAddress is the key the consent callback's rate is bounded by: the
// address the request came from, an IPv6 one cut to its /64 (what one
// client is usually given).
//
// Standalone, that is the connection's peer. Behind the Functions host
// (forwardedByHost) the peer is always the host on 127.0.0.1; the host
// proxies with YARP's IHttpForwarder.SendAsync without a transformer
// (azure-functions-host src/WebJobs.Script.Grpc/Server/DefaultHttpProxyService.cs,
// StartForwarding), that is HttpTransformer.Default, whose X-Forwarded-For
// transform sets the header to the address the host's server saw
// (https://learn.microsoft.com/aspnet/core/fundamentals/servers/yarp/transforms,
// "Defaults": "X-Forwarded-For - Sets the client's IP address"). The last
// element is read: it is the one the nearest proxy wrote, where a client
// can only put its own guesses before it. Without a usable value the key
// is the peer, so such requests share one bound rather than none.
func clientAddress(r *http.Request, forwardedByHost bool) string {
	addr := r.RemoteAddr
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	if forwardedByHost {
		if v := lastForwardedHost(r.Header.Values("X-Forwarded-For")); v != "" {
			addr = v
			if ap, err := netip.ParseAddrPort(v); err == nil {
				addr = ap.Addr().String()
			}
		}
	}
	ip, err := netip.ParseAddr(strings.Trim(addr, "[]"))
	if err != nil {
		return addr
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// addrLimiter is a token bucket per client address: burst requests at
// once, then one per every. The table is bounded: when it is full, buckets
// that have refilled are dropped, and if none has, new addresses share one
// bucket, so that many addresses cannot grow memory or reset each other.
type addrLimiter struct {
	burst int
	every time.Duration
	max   int

	mu      sync.Mutex
	buckets map[string]bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// Consent callbacks: a person needs one or two per consent.
const (
	callbackBurst   = 10
	callbackEvery   = 6 * time.Second
	callbackClients = 4096
)

func newAddrLimiter() *addrLimiter {
	return &addrLimiter{burst: callbackBurst, every: callbackEvery, max: callbackClients, buckets: map[string]bucket{}}
}

// allow takes a token of addr's bucket, or says how long until there is one.
func (l *addrLimiter) allow(addr string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[addr]
	if !ok && len(l.buckets) >= l.max {
		for k, old := range l.buckets {
			if l.refill(old, now) >= float64(l.burst) {
				delete(l.buckets, k)
			}
		}
		if len(l.buckets) >= l.max {
			addr = "(overflow)"
			b, ok = l.buckets[addr]
		}
	}
	if ok {
		b.tokens = l.refill(b, now)
	} else {
		b.tokens = float64(l.burst)
	}
	b.at = now
	if b.tokens < 1 {
		l.buckets[addr] = b
		return false, time.Duration((1 - b.tokens) * float64(l.every))
	}
	b.tokens--
	l.buckets[addr] = b
	return true, 0
}

func (l *addrLimiter) refill(b bucket, now time.Time) float64 {
	return min(float64(l.burst), b.tokens+float64(now.Sub(b.at))/float64(l.every))
}

// usedTickets remembers the consent links used, until they expire, so that
// each starts one consent, where no locker is shared (consentRoutes.claim):
// once in this process.
type usedTickets struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// use records ticket, valid until expiry, and reports whether it was new.
func (u *usedTickets) use(ticket string, expiry, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seen == nil {
		u.seen = map[string]time.Time{}
	}
	for k, until := range u.seen {
		if !now.Before(until) {
			delete(u.seen, k)
		}
	}
	if _, used := u.seen[ticket]; used {
		return false
	}
	u.seen[ticket] = expiry
	return true
}

// guardLocal keeps web pages out of a standalone handler. On a workstation
// it listens on loopback, often without an API key, and the operator's
// browser can reach it, driven by any page it shows:
//
//   - DNS rebinding: a page's own host name made to resolve to 127.0.0.1
//     reads the answers, since the browser takes them as same-origin. Its
//     requests carry that name in Host, so on loopback (LoopbackPort) a
//     Host that is not localhost or a loopback address at the listening
//     port is refused.
//   - Cross-site requests: a page can send (not read) requests anywhere:
//     force refreshes, token calls that refresh, sweeps. A request whose
//     Sec-Fetch-Site is not same-origin or none (typed by the user), or
//     whose Origin is not the handler's own, is refused; browsers send
//     both on every POST and Sec-Fetch-Site on every request (Fetch
//     Metadata). GET and HEAD on the consent routes are let through: the
//     callback is the provider's redirect, cross-site by nature, and
//     checks its own state; the start needs a consent link (checkLink),
//     and its POST (the link page's button) is same-origin.
//
// Behind the Functions host neither applies: the host sets Host to
// 127.0.0.1:<port> whatever the client sent (see callbackURL) and checks
// the keys itself.
func guardLocal(loopbackPort int, h http.Handler) http.Handler {
	port := strconv.Itoa(loopbackPort)
	// The Host every local caller sends is one of these two; comparing
	// with them first spares each request the parse (loopbackHostAt).
	usual := [2]string{"127.0.0.1:" + port, "localhost:" + port}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopbackPort != 0 && r.Host != usual[0] && r.Host != usual[1] && !loopbackHostAt(r.Host, port) {
			encodeError(w, &broker.Error{Code: broker.CodeForbidden,
				Message:     "the request's Host names neither localhost nor a loopback address at this handler's port; a web page whose name was made to resolve to this machine (DNS rebinding) sends such requests",
				Remediation: "Call http://127.0.0.1:" + port + "/ or http://localhost:" + port + "/."})
			return
		}
		if crossSite(r) && !(isConsentPath(r.URL.Path) && (r.Method == http.MethodGet || r.Method == http.MethodHead)) {
			encodeError(w, &broker.Error{Code: broker.CodeForbidden,
				Message:     "the request comes from another web site (its Origin or Sec-Fetch-Site headers say so); a standalone handler serves its own pages, programs and typed addresses only",
				Remediation: "Call the handler from a program or the command line, not from a web page."})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// loopbackHostAt reports whether a Host value is localhost or a loopback
// address, with port (80 when it has none: standalone serves plain HTTP).
func loopbackHostAt(host, port string) bool {
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		h, p = strings.Trim(host, "[]"), "80"
	}
	return p == port && broker.LoopbackHost(h)
}

// crossSite reports whether a browser says the request comes from a page
// of another origin.
func crossSite(r *http.Request) bool {
	// The keys are canonical, as net/http stores a request's header keys,
	// so the map is read directly: Header.Get would canonicalize them
	// again on every request.
	if sites := r.Header["Sec-Fetch-Site"]; len(sites) > 0 {
		switch sites[0] {
		case "", "same-origin", "none":
		default:
			return true
		}
	}
	origins := r.Header["Origin"]
	if len(origins) == 0 {
		return false
	}
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	return len(origins) > 1 || !strings.EqualFold(origins[0], scheme+r.Host)
}

// isConsentPath reports whether p is under /api/consent/, as the host
// router matches it (literal segments ignoring case).
func isConsentPath(p string) bool {
	const prefix = "/" + routePrefix + "/consent/"
	return len(p) > len(prefix) && equalFoldASCII(p[:len(prefix)], prefix)
}
