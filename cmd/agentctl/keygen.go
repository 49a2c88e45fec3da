package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/cluster"
)

func (a *app) keygenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new gossip encryption key for a cluster",
		Long: `Print a new random 32-byte key, base64-encoded, for the agents' gossip
(memberlist) encryption. Every agent of a cluster needs the same key; it is
required whenever more than one node is configured.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := cluster.GenerateKey()
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, key)
			return nil
		},
	}
}
