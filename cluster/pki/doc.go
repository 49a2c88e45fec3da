// Package pki owns the certificates of the inter-agent API: a small
// per-cluster certificate authority, node certificates issued by it, their
// on-disk layout, and the TLS configurations that make every inter-agent
// connection mutually authenticated.
//
// It does not serve or dial anything, decide which peer may do what
// (authorization belongs to the handler, which asks Peer for the verified
// name), rotate or revoke certificates, or trust the system roots: the
// cluster CA is the only trust anchor on both sides.
//
// Usage, as `agentctl tls init` does it:
//
//	ca, err := pki.NewCA("berth-ca", 10*365*24*time.Hour)
//	err = pki.WriteCA(dir, ca, false)
//	cert, key, err := ca.Issue(pki.NodeCert{Name: "node-a",
//		IPs: []net.IP{ip}, Client: true, Server: true})
//	err = pki.WriteNode(dir, "node-a", cert, key, false)
//	cert, key, err = ca.Issue(pki.NodeCert{Name: "agentctl", Client: true})
//
// and as the agent does it:
//
//	caPEM, cert, key, err := pki.ReadNode(dir, "node-a")
//	srv, err := pki.ServerConfig(caPEM, cert, key) // tls.NewListener(ln, srv)
//	cli, err := pki.ClientConfig(caPEM, cert, key, "node-b")
//	name, err := pki.Peer(r.TLS) // in a handler: the caller's node name
//
// Layout of a directory (see files.go): DIR/ca.crt, DIR/ca.key (0600),
// DIR/NODE.crt, DIR/NODE.key (0600). Certificates are 0644. Nothing is
// overwritten unless the caller passes force.
//
// Keys are ECDSA P-256, stored as PKCS#8 PEM. Certificates are backdated by
// ClockSkew so that nodes with slightly different clocks accept them at
// once.
package pki
