package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster/pki"
)

func (a *app) tlsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Create the certificates a cluster's agents use to talk to each other",
	}
	cmd.AddCommand(a.tlsInitCommand())
	return cmd
}

func (a *app) tlsInitCommand() *cobra.Command {
	var (
		dir      string
		nodes    []string
		ips      []string
		validity time.Duration
		force    bool
	)
	cmd := &cobra.Command{
		Use:   "init --dir DIR --node NAME[=IP,...] ...",
		Short: "Create a cluster CA, a certificate per node and one for agentctl",
		Long: `Create a small certificate authority for one cluster, a certificate for
every node (server and client use: agents talk to each other over mutual
TLS and refuse plain connections) and a client-only certificate for
agentctl. Files: DIR/ca.crt, DIR/ca.key (keep it offline once the nodes
have theirs), DIR/NODE.crt and DIR/NODE.key per node, DIR/agentctl.crt and
DIR/agentctl.key. Existing files are never overwritten without --force.

A node's certificate names the node; give its addresses with NAME=IP,IP.`,
		Example: `  agentctl tls init --dir /etc/berth/tls --node a=10.0.0.1 --node b=10.0.0.2 --node c=10.0.0.3`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || len(nodes) == 0 {
				return fmt.Errorf("tls init needs --dir and at least one --node: %w", api.ErrInvalid)
			}
			ca, err := pki.NewCA("berth cluster CA", validity)
			if err != nil {
				return err
			}
			if err := pki.WriteCA(dir, ca, force); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %s/ca.crt and ca.key\n", dir)
			for _, n := range nodes {
				name, addrs, _ := strings.Cut(n, "=")
				nc := pki.NodeCert{Name: name, Server: true, Client: true}
				for _, s := range append(strings.Split(addrs, ","), ips...) {
					if s == "" {
						continue
					}
					ip := net.ParseIP(s)
					if ip == nil {
						return fmt.Errorf("node %s: %q is not an IP address: %w", name, s, api.ErrInvalid)
					}
					nc.IPs = append(nc.IPs, ip)
				}
				certPEM, keyPEM, err := ca.Issue(nc)
				if err != nil {
					return fmt.Errorf("node %s: %w", name, err)
				}
				if err := pki.WriteNode(dir, name, certPEM, keyPEM, force); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "wrote %s/%s.crt and %s.key\n", dir, name, name)
			}
			certPEM, keyPEM, err := ca.Issue(pki.NodeCert{Name: "agentctl", Client: true})
			if err != nil {
				return err
			}
			if err := pki.WriteNode(dir, "agentctl", certPEM, keyPEM, force); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %s/agentctl.crt and agentctl.key\n", dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write the files to")
	f.StringArrayVar(&nodes, "node", nil, "a node: NAME or NAME=IP[,IP…] (repeatable)")
	f.StringSliceVar(&ips, "ip", nil, "an address every node certificate also names, e.g. 127.0.0.1")
	f.DurationVar(&validity, "validity", 10*365*24*time.Hour, "how long the CA is valid")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}
