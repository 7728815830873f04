package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
)

// Capability flags (the ones the proxy speaks).
const (
	capLongPassword     = 1 << 0
	capFoundRows        = 1 << 1
	capLongFlag         = 1 << 2
	capConnectWithDB    = 1 << 3
	capProtocol41       = 1 << 9
	capSSL              = 1 << 11
	capTransactions     = 1 << 13
	capSecureConn       = 1 << 15
	capMultiStatements  = 1 << 16
	capMultiResults     = 1 << 17
	capPSMultiResults   = 1 << 18
	capPluginAuth       = 1 << 19
	capConnectAttrs     = 1 << 20
	capPluginAuthLenenc = 1 << 21

	serverCaps = capLongPassword | capFoundRows | capLongFlag | capConnectWithDB | capProtocol41 |
		capTransactions | capSecureConn | capMultiResults | capPSMultiResults | capPluginAuth |
		capConnectAttrs | capPluginAuthLenenc
)

// Server status flags.
const (
	statusInTrans    = 1 << 0
	statusAutocommit = 1 << 1
)

// Authentication plugins.
const (
	NativePassword      = "mysql_native_password"
	CachingSHA2Password = "caching_sha2_password"
)

// charsetUTF8MB4 is utf8mb4_general_ci, the connection character set
// the proxy announces (the data sources are opened in utf8mb4).
const charsetUTF8MB4 = 45

// newNonce returns the 20 random bytes a client scrambles its password
// with (printable, never NUL: clients read the second part up to a NUL).
func newNonce() ([]byte, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	for i := range b {
		b[i] = 0x21 + b[i]%0x5e
	}
	return b, nil
}

// appendHandshake appends the initial handshake (protocol version 10).
func appendHandshake(b []byte, version string, connID uint32, nonce []byte, plugin string) []byte {
	b = append(b, 10)
	b = appendNulStr(b, version)
	b = appendU32(b, connID)
	b = append(b, nonce[:8]...)
	b = append(b, 0)
	b = appendU16(b, uint16(serverCaps&0xffff))
	b = append(b, charsetUTF8MB4)
	b = appendU16(b, statusAutocommit)
	b = appendU16(b, uint16(serverCaps>>16))
	b = append(b, byte(len(nonce)+1))
	b = append(b, make([]byte, 10)...)
	b = append(b, nonce[8:]...)
	b = append(b, 0)
	return appendNulStr(b, plugin)
}

// handshakeResponse is a client's HandshakeResponse41.
type handshakeResponse struct {
	caps   uint32
	user   string
	auth   []byte
	db     string
	plugin string
}

// parseHandshakeResponse decodes a client's answer to the handshake.
func parseHandshakeResponse(p []byte) (handshakeResponse, error) {
	var h handshakeResponse
	r := reader{b: p}
	h.caps = r.u32("capability flags")
	if r.err == nil && h.caps&capProtocol41 == 0 {
		return h, fmt.Errorf("proxy: the client speaks the pre-4.1 protocol, which the proxy does not")
	}
	r.u32("max packet size")
	r.u8("character set")
	r.bytes(23, "filler")
	if r.err == nil && h.caps&capSSL != 0 && len(r.b) == 0 {
		return h, fmt.Errorf("proxy: the client asks for TLS, which the proxy does not offer (connect without TLS, e.g. --ssl=0 or tls=false)")
	}
	h.user = string(r.nulStr("user name", false))
	switch {
	case h.caps&capPluginAuthLenenc != 0:
		h.auth = r.lenStr("auth response")
	case h.caps&capSecureConn != 0:
		h.auth = r.bytes(int(r.u8("auth response length")), "auth response")
	default:
		h.auth = r.nulStr("auth response", false)
	}
	if h.caps&capConnectWithDB != 0 && len(r.b) > 0 {
		h.db = string(r.nulStr("database", true))
	}
	if h.caps&capPluginAuth != 0 && len(r.b) > 0 {
		h.plugin = string(r.nulStr("auth plugin", true))
	}
	// Connection attributes follow; the proxy does not use them.
	if r.err != nil {
		return h, r.err
	}
	h.auth = bytes.Clone(h.auth)
	return h, nil
}

// checkPassword reports whether a client's scramble of the nonce matches
// password under plugin.
func checkPassword(plugin string, password string, nonce, scramble []byte) bool {
	if password == "" {
		return len(scramble) == 0 || (len(scramble) == 1 && scramble[0] == 0)
	}
	var want []byte
	switch plugin {
	case NativePassword:
		// SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))
		h1 := sha1.Sum([]byte(password))
		h2 := sha1.Sum(h1[:])
		m := sha1.New()
		m.Write(nonce)
		m.Write(h2[:])
		want = m.Sum(nil)
		for i := range want {
			want[i] ^= h1[i]
		}
	case CachingSHA2Password:
		// SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce)
		h1 := sha256.Sum256([]byte(password))
		h2 := sha256.Sum256(h1[:])
		m := sha256.New()
		m.Write(h2[:])
		m.Write(nonce)
		want = m.Sum(nil)
		for i := range want {
			want[i] ^= h1[i]
		}
	default:
		return false
	}
	return subtle.ConstantTimeCompare(want, scramble) == 1
}
