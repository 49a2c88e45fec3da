package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func (a *app) endpointsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "endpoints SERVICE",
		Short: "List the ready endpoints of a service",
		Long: `List the ready endpoints of SERVICE: every ready copy of the group named
SERVICE, as GROUP NODE ADDRESS PORTS: for a cluster group, its copies on
every node. ADDRESS is where this node reaches the endpoint at its
container ports (the group's address on the node bridge, 127.0.0.1 for
network = "host"; "-" for a copy on another node); PORTS are its published
ports, on another node with the address to connect to. A copy that is not
ready is not listed. -o json prints the list.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeOneGroup,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			eps, err := a.client().Endpoints(ctx, args[0])
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, eps)
			}
			if len(eps) == 0 {
				fmt.Fprintf(a.stderr, "no ready endpoints for service %s\n", args[0])
				return nil
			}
			return printEndpoints(a.stdout, eps)
		},
	}
}

func printEndpoints(w io.Writer, eps []api.Endpoint) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "GROUP\tNODE\tADDRESS\tPORTS")
	for _, e := range eps {
		ports := make([]string, len(e.Ports))
		for i, p := range e.Ports {
			ports[i] = p.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Group, e.Node, orDash(e.Address), orDash(strings.Join(ports, ",")))
	}
	return tw.Flush()
}
