// Command pki writes the certificates and keys of the local e2e control plane.
//
//	pki -dir DIR
//
// It writes into DIR (PEM files, keys mode 0600):
//
//	ca.crt ca.key                      cluster CA (clients and serving)
//	front-proxy-ca.crt/.key            request-header CA of the aggregation layer
//	front-proxy-client.crt/.key        CN=front-proxy-client, signed by it
//	apiserver.crt apiserver.key        kube-apiserver serving cert (127.0.0.1, localhost,
//	                                   kubernetes.default.svc..., first service IP)
//	admin.crt admin.key                CN=voicetyped-e2e-admin, O=system:masters
//	kube-controller-manager.crt/.key   CN=system:kube-controller-manager
//	kube-scheduler.crt/.key            CN=system:kube-scheduler
//	kwok.crt kwok.key                  CN=kwok, O=system:masters
//	kubelet.crt kubelet.key            CN=system:node:<node-name>, O=system:nodes (its client)
//	kubelet-serving.crt/.key           the kubelet's serving cert (node IP, node name)
//	kube-proxy.crt kube-proxy.key      CN=system:kube-proxy
//	coredns.crt coredns.key            CN=voicetyped-e2e-coredns (RBAC: read Services etc.)
//	apiserver-kubelet-client.crt/.key  CN=kube-apiserver-kubelet-client, O=system:masters
//	sa.key sa.pub                      service-account token signing key pair
//
// Only the Go standard library is used, so the cluster needs no openssl.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

type client struct {
	name string
	cn   string
	orgs []string
}

func main() {
	dir := flag.String("dir", "", "output directory")
	serviceIP := flag.String("service-ip", "10.96.0.1", "first IP of the service CIDR")
	nodeIP := flag.String("node-ip", "", "the real node's address (the API server listens there too)")
	nodeName := flag.String("node-name", "voicetyped-node", "the real node's name")
	validity := flag.Duration("validity", 365*24*time.Hour, "certificate lifetime")
	flag.Parse()
	if *dir == "" {
		fail(fmt.Errorf("-dir is required"))
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fail(err)
	}
	var node net.IP
	if *nodeIP != "" {
		if node = net.ParseIP(*nodeIP); node == nil {
			fail(fmt.Errorf("invalid -node-ip %q", *nodeIP))
		}
	}
	if err := run(*dir, net.ParseIP(*serviceIP), node, *nodeName, *validity); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pki:", err)
	os.Exit(1)
}

func run(dir string, serviceIP, nodeIP net.IP, nodeName string, validity time.Duration) error {
	if serviceIP == nil {
		return fmt.Errorf("invalid -service-ip")
	}
	now := time.Now().Add(-time.Hour)
	ca, caKey, err := newCA(dir, "ca", "voicetyped-e2e-ca", now, validity)
	if err != nil {
		return err
	}
	// The aggregation layer's request-header CA is a separate one, as kubeadm has it.
	proxyCA, proxyCAKey, err := newCA(dir, "front-proxy-ca", "voicetyped-e2e-front-proxy-ca", now, validity)
	if err != nil {
		return err
	}
	proxyClient := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "front-proxy-client"},
		NotBefore:    now,
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := issue(dir, "front-proxy-client", proxyClient, proxyCA, proxyCAKey); err != nil {
		return err
	}

	serving := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, serviceIP},
	}
	if nodeIP != nil {
		serving.IPAddresses = append(serving.IPAddresses, nodeIP)
	}
	if err := issue(dir, "apiserver", serving, ca, caKey); err != nil {
		return err
	}
	kubeletServing := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}},
		NotBefore:    now,
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{nodeName},
	}
	if nodeIP != nil {
		kubeletServing.IPAddresses = []net.IP{nodeIP}
	}
	if err := issue(dir, "kubelet-serving", kubeletServing, ca, caKey); err != nil {
		return err
	}

	clients := []client{
		{"admin", "voicetyped-e2e-admin", []string{"system:masters"}},
		{"kube-controller-manager", "system:kube-controller-manager", nil},
		{"kube-scheduler", "system:kube-scheduler", nil},
		{"kwok", "kwok", []string{"system:masters"}},
		{"kubelet", "system:node:" + nodeName, []string{"system:nodes"}},
		{"kube-proxy", "system:kube-proxy", nil},
		{"coredns", "voicetyped-e2e-coredns", nil},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}},
	}
	for _, c := range clients {
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: c.cn, Organization: c.orgs},
			NotBefore:    now,
			NotAfter:     now.Add(validity),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := issue(dir, c.name, tmpl, ca, caKey); err != nil {
			return err
		}
	}

	saKey, err := newKey()
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, "sa.key"), saKey); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub, 0o644)
}

func newCA(dir, name, cn string, now time.Time, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now,
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, write(dir, name, der, key)
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		fail(err)
	}
	return n
}

func issue(dir, name string, tmpl, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	return write(dir, name, der, key)
}

func write(dir, name string, der []byte, key *ecdsa.PrivateKey) error {
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, name+".key"), key)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
