// Package network connects containers to a bridge: a Linux bridge on the
// host (tangram0 by default) with the first address of a subnet, one veth
// pair per container (the host end on the bridge, the other end moved into
// the container's network namespace as eth0 with an address from the
// subnet and a default route through the bridge), NAT to the outside
// (masquerade), and published ports (DNAT from the host's addresses,
// 127.0.0.1 included, to the container). Addresses are handed out from a
// file kept under a lock, so several runtime processes share one subnet.
// Rules live in an nftables table named after the bridge, each rule of a
// container tagged with its ID.
package network

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config names the bridge and its subnet.
type Config struct {
	// Bridge is the host bridge's name (default tangram0); the nftables
	// table has the same name.
	Bridge string
	// Subnet is the containers' network (default 10.88.0.0/16); the
	// bridge takes its first address.
	Subnet string
	// StateDir keeps the address allocations (required).
	StateDir string
}

// DefaultConfig returns the defaults (StateDir left empty).
func DefaultConfig() Config { return Config{Bridge: "tangram0", Subnet: "10.88.0.0/16"} }

// Port is one published port: HostPort on the host to ContainerPort in
// the container.
type Port struct {
	HostPort      uint16 `json:"host_port"`
	ContainerPort uint16 `json:"container_port"`
	Protocol      string `json:"protocol"` // tcp or udp
}

// ParsePort reads "8080:80", "8080:80/udp" or "80" (the same port on both).
func ParsePort(s string) (Port, error) {
	p := Port{Protocol: "tcp"}
	spec, proto, hasProto := strings.Cut(s, "/")
	if hasProto {
		if proto != "tcp" && proto != "udp" {
			return p, fmt.Errorf("network: port %q: protocol must be tcp or udp", s)
		}
		p.Protocol = proto
	}
	host, ctr, pair := strings.Cut(spec, ":")
	if !pair {
		ctr = host
	}
	hp, err1 := strconv.ParseUint(host, 10, 16)
	cp, err2 := strconv.ParseUint(ctr, 10, 16)
	if err1 != nil || err2 != nil || hp == 0 || cp == 0 {
		return p, fmt.Errorf("network: port %q: want HOST:CONTAINER[/tcp|udp] with ports 1-65535", s)
	}
	p.HostPort, p.ContainerPort = uint16(hp), uint16(cp)
	return p, nil
}

// Endpoint is a container's place on the bridge.
type Endpoint struct {
	Bridge  string `json:"bridge"`
	IP      string `json:"ip"`
	Gateway string `json:"gateway"`
	HostIf  string `json:"host_if"`
	Ports   []Port `json:"ports,omitempty"`
}

// Network is one bridge and its subnet.
type Network struct {
	cfg     Config
	subnet  *net.IPNet
	gateway net.IP
}

// New checks cfg. It changes nothing on the host until Attach.
func New(cfg Config) (*Network, error) {
	d := DefaultConfig()
	if cfg.Bridge == "" {
		cfg.Bridge = d.Bridge
	}
	if cfg.Subnet == "" {
		cfg.Subnet = d.Subnet
	}
	if cfg.StateDir == "" {
		return nil, errors.New("network: a state directory is required")
	}
	if len(cfg.Bridge) > 15 || strings.ContainsAny(cfg.Bridge, "/ \x00") {
		return nil, fmt.Errorf("network: bridge name %q: at most 15 characters, no '/' or spaces", cfg.Bridge)
	}
	_, sub, err := net.ParseCIDR(cfg.Subnet)
	if err != nil || sub.IP.To4() == nil {
		return nil, fmt.Errorf("network: subnet %q: want an IPv4 CIDR such as 10.88.0.0/16", cfg.Subnet)
	}
	if ones, _ := sub.Mask.Size(); ones > 30 {
		return nil, fmt.Errorf("network: subnet %s is too small", cfg.Subnet)
	}
	gw := make(net.IP, 4)
	copy(gw, sub.IP.To4())
	gw[3]++
	return &Network{cfg: cfg, subnet: sub, gateway: gw}, nil
}

// ifNames are the host and temporary peer interface names of a container.
func ifNames(id string) (host, peer string) {
	h := sha256.Sum256([]byte(id))
	s := hex.EncodeToString(h[:])[:11]
	return "tg" + s, "tp" + s
}

// Attach puts the container whose init is pid on the bridge and publishes
// ports. The init must be alive in its own network namespace.
func (n *Network) Attach(id string, pid int, ports []Port) (_ *Endpoint, err error) {
	br, err := n.ensureBridge()
	if err != nil {
		return nil, err
	}
	ip, err := n.allocate(id)
	if err != nil {
		return nil, err
	}
	hostIf, peerIf := ifNames(id)
	ep := &Endpoint{Bridge: n.cfg.Bridge, IP: ip.String(), Gateway: n.gateway.String(), HostIf: hostIf, Ports: ports}
	defer func() {
		if err != nil {
			n.Detach(id, ep)
		}
	}()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf, MasterIndex: br.Attrs().Index}, PeerName: peerIf}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("network: add veth %s: %w", hostIf, err)
	}
	peer, err := netlink.LinkByName(peerIf)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if err := netlink.LinkSetNsPid(peer, pid); err != nil {
		return nil, fmt.Errorf("network: move %s into the container: %w", peerIf, err)
	}
	host, err := netlink.LinkByName(hostIf)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("network: up %s: %w", hostIf, err)
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("network: the container's namespace: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(peerIf)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if err := h.LinkSetName(link, "eth0"); err != nil {
		return nil, fmt.Errorf("network: name eth0: %w", err)
	}
	ones, _ := n.subnet.Mask.Size()
	addr, _ := netlink.ParseAddr(fmt.Sprintf("%s/%d", ip, ones))
	if err := h.AddrAdd(link, addr); err != nil {
		return nil, fmt.Errorf("network: address eth0: %w", err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("network: up eth0: %w", err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: n.gateway}); err != nil {
		return nil, fmt.Errorf("network: default route: %w", err)
	}
	if len(ports) > 0 {
		if err := n.publish(id, ip, ports); err != nil {
			return nil, err
		}
	}
	return ep, nil
}

// Detach undoes Attach: port rules, the host's veth end (the other end
// goes with the container's namespace), the address. Parts already gone
// are not errors.
func (n *Network) Detach(id string, ep *Endpoint) error {
	var errs []error
	if err := n.unpublish(id); err != nil {
		errs = append(errs, err)
	}
	hostIf, _ := ifNames(id)
	if l, err := netlink.LinkByName(hostIf); err == nil {
		// The kernel removes the pair when the container's namespace goes:
		// it may have gone between the look-up and the delete.
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
			errs = append(errs, fmt.Errorf("network: delete %s: %w", hostIf, err))
		}
	}
	if err := n.release(id); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *Network) ensureBridge() (netlink.Link, error) {
	br, err := netlink.LinkByName(n.cfg.Bridge)
	if err != nil {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.cfg.Bridge}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("network: add bridge %s: %w", n.cfg.Bridge, err)
		}
		if br, err = netlink.LinkByName(n.cfg.Bridge); err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
	}
	ones, _ := n.subnet.Mask.Size()
	addr, _ := netlink.ParseAddr(fmt.Sprintf("%s/%d", n.gateway, ones))
	if err := netlink.AddrAdd(br, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("network: address %s on %s: %w", addr, n.cfg.Bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("network: up %s: %w", n.cfg.Bridge, err)
	}
	for _, s := range []struct{ path, val string }{
		{"/proc/sys/net/ipv4/ip_forward", "1"},
		// Published ports answer on 127.0.0.1 too: loopback-sourced
		// packets may then be routed out of the bridge.
		{"/proc/sys/net/ipv4/conf/" + n.cfg.Bridge + "/route_localnet", "1"},
	} {
		if err := os.WriteFile(s.path, []byte(s.val), 0); err != nil {
			return nil, fmt.Errorf("network: %s: %w", s.path, err)
		}
	}
	if err := n.ensureNAT(); err != nil {
		return nil, err
	}
	return br, nil
}

func (n *Network) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: n.cfg.Bridge}
}

func (n *Network) chains(t *nftables.Table) (post, pre, out *nftables.Chain) {
	post = &nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}
	pre = &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest}
	out = &nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest}
	return
}

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

// ensureNAT makes the table, its chains and the two masquerade rules:
// containers' traffic leaving by another interface, and loopback-sourced
// traffic (a published port reached at 127.0.0.1) leaving by the bridge.
func (n *Network) ensureNAT() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	t := n.table()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	for _, x := range tables {
		if x.Name == t.Name {
			return nil // made by an earlier attach
		}
	}
	c.AddTable(t)
	post, pre, out := n.chains(t)
	c.AddChain(post)
	c.AddChain(pre)
	c.AddChain(out)
	saddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	c.AddRule(&nftables.Rule{Table: t, Chain: post, UserData: []byte("tangram:masquerade"), Exprs: []expr.Any{
		saddr,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: n.subnet.Mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.subnet.IP.To4()},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(n.cfg.Bridge)},
		&expr.Masq{},
	}})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, UserData: []byte("tangram:localnet"), Exprs: []expr.Any{
		saddr,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127, 0, 0, 0}},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(n.cfg.Bridge)},
		&expr.Masq{},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: nftables table %s: %w", t.Name, err)
	}
	return nil
}

// publish adds, for each port, a DNAT rule in prerouting (traffic from
// elsewhere) and one in output (this host's own), both for packets to any
// of the host's local addresses.
func (n *Network) publish(id string, ip net.IP, ports []Port) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	t := n.table()
	_, pre, out := n.chains(t)
	for _, p := range ports {
		proto := byte(unix.IPPROTO_TCP)
		if p.Protocol == "udp" {
			proto = unix.IPPROTO_UDP
		}
		hp := make([]byte, 2)
		binary.BigEndian.PutUint16(hp, p.HostPort)
		cp := make([]byte, 2)
		binary.BigEndian.PutUint16(cp, p.ContainerPort)
		local := make([]byte, 4)
		binary.NativeEndian.PutUint32(local, unix.RTN_LOCAL)
		exprs := []expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: local},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: hp},
			&expr.Immediate{Register: 1, Data: ip.To4()},
			&expr.Immediate{Register: 2, Data: cp},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
		}
		for _, ch := range []*nftables.Chain{pre, out} {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: []byte("tangram:" + id)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: publish ports of %s: %w", id, err)
	}
	return nil
}

func (n *Network) unpublish(id string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	t := n.table()
	_, pre, out := n.chains(t)
	tag := "tangram:" + id
	found := false
	for _, ch := range []*nftables.Chain{pre, out} {
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil // no table: nothing published
		}
		for _, r := range rules {
			if string(r.UserData) == tag {
				if err := c.DelRule(r); err != nil {
					return fmt.Errorf("network: %w", err)
				}
				found = true
			}
		}
	}
	if !found {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: unpublish ports of %s: %w", id, err)
	}
	return nil
}

// allocations is the address file: IP → container ID.
type allocations map[string]string

func (n *Network) withAllocations(f func(a allocations) error) error {
	if err := os.MkdirAll(n.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	path := filepath.Join(n.cfg.StateDir, n.cfg.Bridge+".json")
	lf, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("network: lock addresses: %w", err)
	}
	a := allocations{}
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &a); err != nil {
			return fmt.Errorf("network: %s is corrupt: %w", path, err)
		}
	}
	if err := f(a); err != nil {
		return err
	}
	b, _ := json.Marshal(a)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

func (n *Network) allocate(id string) (net.IP, error) {
	var got net.IP
	err := n.withAllocations(func(a allocations) error {
		for ip, owner := range a {
			if owner == id {
				got = net.ParseIP(ip).To4()
				return nil
			}
		}
		base := binary.BigEndian.Uint32(n.subnet.IP.To4())
		ones, bits := n.subnet.Mask.Size()
		size := uint32(1) << (bits - ones)
		for off := uint32(2); off < size-1; off++ {
			ip := make(net.IP, 4)
			binary.BigEndian.PutUint32(ip, base+off)
			if _, used := a[ip.String()]; !used {
				a[ip.String()] = id
				got = ip
				return nil
			}
		}
		return fmt.Errorf("network: no address left in %s", n.cfg.Subnet)
	})
	return got, err
}

func (n *Network) release(id string) error {
	return n.withAllocations(func(a allocations) error {
		for ip, owner := range a {
			if owner == id {
				delete(a, ip)
			}
		}
		return nil
	})
}

// Remove takes the network off the host: its nftables table (NAT and
// published ports) and its bridge, under the address file's lock so no
// Attach runs meanwhile. attached says whether a container still exists:
// if any with an address does, nothing is removed and the error names
// them; addresses of containers that are gone (left by a crash) are
// dropped. Parts already gone are not errors, so Remove may run twice. The
// forwarding sysctls are left as they are: other software may rely on
// them.
func (n *Network) Remove(attached func(id string) bool) error {
	return n.withAllocations(func(a allocations) error {
		var busy []string
		for ip, id := range a {
			if attached(id) {
				busy = append(busy, id)
			} else {
				delete(a, ip)
			}
		}
		if len(busy) > 0 {
			slices.Sort(busy)
			return fmt.Errorf("network: %s still has containers: %s (delete them first)", n.cfg.Bridge, strings.Join(busy, ", "))
		}
		c, err := nftables.New()
		if err != nil {
			return fmt.Errorf("network: nftables: %w", err)
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return fmt.Errorf("network: nftables: %w", err)
		}
		for _, t := range tables {
			if t.Name == n.cfg.Bridge {
				c.DelTable(t)
				if err := c.Flush(); err != nil {
					return fmt.Errorf("network: delete the nftables table %s: %w", t.Name, err)
				}
			}
		}
		if l, err := netlink.LinkByName(n.cfg.Bridge); err == nil {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
				return fmt.Errorf("network: delete bridge %s: %w", n.cfg.Bridge, err)
			}
		}
		return nil
	})
}
