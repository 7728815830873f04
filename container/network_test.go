package container

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"

	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/internal/wait"
)

// TestBridgeNetwork: two containers on a bridge reach each other; the host
// reaches one through a published port, at 127.0.0.1 and at the bridge's
// address; deleting them takes their interfaces, rules and addresses away.
func TestBridgeNetwork(t *testing.T) {
	needRoot(t)
	r, err := New(Config{Root: t.TempDir(), Bridge: "tgtest0", Subnet: "10.199.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName("tgtest0"); err == nil {
			netlink.LinkDel(l)
		}
	})
	_, portText, _ := net.SplitHostPort(port.Free(t))
	hostPort, _ := strconv.Atoi(portText)
	web := busyboxBundle(t, "sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www")
	editSpec(t, web, func(s *specs.Spec) {
		s.Annotations = map[string]string{AnnotationNetwork: "bridge", AnnotationPorts: fmt.Sprintf("%d:80", hostPort)}
	})
	start(t, r, "web", web, CreateOptions{})
	st, err := r.State("web")
	if err != nil || st.Network == nil || !strings.HasPrefix(st.Network.IP, "10.199.") {
		t.Fatalf("web's network: %+v %v", st, err)
	}
	get := func(url string) string {
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for _, host := range []string{"127.0.0.1", st.Network.Gateway} {
		url := fmt.Sprintf("http://%s:%d/", host, hostPort)
		var got string
		if !wait.Until(10*time.Second, func() bool { got = get(url); return got == "hello-from-web\n" }) {
			t.Fatalf("host → %s: %q", url, got)
		}
	}
	// Another container on the bridge fetches from web by its address.
	client := busyboxBundle(t, "wget", "-q", "-O-", "http://"+st.Network.IP+"/")
	editSpec(t, client, func(s *specs.Spec) { s.Annotations = map[string]string{AnnotationNetwork: "bridge"} })
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := r.Run(ctx, "client", client, CreateOptions{Stdout: &out, Stderr: &out})
	if err != nil || code != 0 || out.String() != "hello-from-web\n" {
		t.Fatalf("container → container: %d %v %q", code, err, out.String())
	}
	if err := r.RemoveNetwork(); err == nil || !strings.Contains(err.Error(), "web") {
		t.Fatalf("removing the network under a container: %v (want refused, naming it)", err)
	}
	if err := r.Delete(context.Background(), "web", true); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(st.Network.HostIf); err == nil {
		t.Errorf("host interface %s left behind", st.Network.HostIf)
	}
	if got := get(fmt.Sprintf("http://127.0.0.1:%d/", hostPort)); got == "hello-from-web\n" {
		t.Errorf("the published port still answers after delete")
	}
	alloc, _ := os.ReadFile(filepath.Join(r.cfg.Root, ".net", "tgtest0.json"))
	if strings.Contains(string(alloc), "web") || strings.Contains(string(alloc), "client") {
		t.Errorf("addresses not released: %s", alloc)
	}
	// With no container left the network comes off the host, twice over.
	for range 2 {
		if err := r.RemoveNetwork(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := netlink.LinkByName("tgtest0"); err == nil {
		t.Error("the bridge is still there")
	}
	nft, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := nft.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == "tgtest0" {
			t.Error("the nftables table is still there")
		}
	}
}
