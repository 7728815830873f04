package txn

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// Allow is the list of places a coordinator may call branches at: without
// it, whoever may begin a transaction can make the coordinator POST to any
// URL it reaches (an internal admin endpoint, a cloud metadata address).
// Entries are host or registry-service names — exact ("orders.internal")
// or a suffix ("*.svc.cluster.local") — and networks ("10.0.0.0/8", or one
// address). A target is allowed if its host (or, for rpc://SERVICE/…, its
// service name) matches a name, or its address lies in a network: an IP
// literal is checked when the branch is registered, a host name that no
// name entry matches when the coordinator connects — every address it
// connects to must lie in a network, so a name that resolves somewhere
// else (DNS rebinding) is refused at the socket. A registry service's
// instances are trusted: registering them takes the registry's own
// permission.
type Allow struct {
	names []string       // lower case; "*.x" matches names ending in ".x"
	nets  []netip.Prefix // addresses as /32 or /128
	spec  string         // the entries, for error messages
}

// ParseAllow parses the entries (nil, nil for none: every target is
// allowed).
func ParseAllow(entries []string) (*Allow, error) {
	var a Allow
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		if e == "" {
			continue
		}
		if p, err := netip.ParsePrefix(e); err == nil {
			a.nets = append(a.nets, p.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(e); err == nil {
			a.nets = append(a.nets, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		name := strings.TrimPrefix(e, "*.")
		if name == "" || strings.ContainsAny(name, "/:*@ ") {
			return nil, fmt.Errorf("txn: allowed branch target %q: want a host or service name, *.domain, an address or a network (10.0.0.0/8)", e)
		}
		a.names = append(a.names, e)
	}
	if len(a.names)+len(a.nets) == 0 {
		return nil, nil
	}
	a.spec = strings.Join(entries, ",")
	return &a, nil
}

// named reports whether host matches a name entry.
func (a *Allow) named(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, n := range a.names {
		if suffix, ok := strings.CutPrefix(n, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == n {
			return true
		}
	}
	return false
}

func (a *Allow) inNets(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range a.nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Check tells whether a branch may be registered at t (a nil Allow allows
// everything). A host name no name entry matches passes when there are
// networks to check its addresses against at connection time.
func (a *Allow) Check(t Target) error {
	if a == nil {
		return nil
	}
	var host, shown string
	switch {
	case !t.RPC():
		u, err := url.Parse(t.URL)
		if err != nil {
			return fmt.Errorf("%w: target %q: %v", ErrBadRequest, t.URL, err)
		}
		host, shown = u.Hostname(), t.URL
	case t.Direct():
		host, _, _ = net.SplitHostPort(t.Host)
		shown = "rpc://" + t.Host + "/" + t.Method
	default:
		shown = "rpc://" + t.Host + "/" + t.Method
		if a.named(t.Host) {
			return nil
		}
		return fmt.Errorf("%w: target %q: service %s is not among the coordinator's allowed branch targets (%s)", ErrBadRequest, shown, t.Host, a.spec)
	}
	if a.named(host) {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if a.inNets(ip) {
			return nil
		}
	} else if len(a.nets) > 0 {
		return nil // its addresses are checked as it is dialled
	}
	return fmt.Errorf("%w: target %q: host %s is not among the coordinator's allowed branch targets (%s)", ErrBadRequest, shown, host, a.spec)
}

// DialContext wraps d for HTTP and direct RPC branch connections: a host
// that matches a name entry is dialled as it is; any other must connect
// to an address within a network entry.
func (a *Allow) DialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if a.named(host) {
			return d.DialContext(ctx, network, addr)
		}
		checked := *d
		checked.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("txn: branch host %s: address %s: %w", host, address, err)
			}
			if !a.inNets(ap.Addr()) {
				return fmt.Errorf("txn: branch host %s is at %s, outside the coordinator's allowed branch targets (%s)", host, ap.Addr(), a.spec)
			}
			return nil
		}
		return checked.DialContext(ctx, network, addr)
	}
}
