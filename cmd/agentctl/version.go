package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// version is agentctl's version, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

// versionOutput is what `version -o json` prints.
type versionOutput struct {
	Client clientVersion    `json:"client"`
	Server *api.VersionInfo `json:"server,omitempty"`
}

type clientVersion struct {
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
}

func (a *app) versionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of agentctl and agentd",
		Long: `Print the versions of agentctl and agentd.

The client version prints even when agentd cannot be reached; the error
follows on stderr and the exit code is 5.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := versionOutput{Client: clientVersion{Version: version, GoVersion: runtime.Version()}}
			var err error
			if !clientOnly {
				ctx, cancel := a.requestContext(cmd.Context())
				out.Server, err = a.client().Version(ctx)
				cancel()
			}
			if a.output == outputJSON {
				if perr := printJSON(a.stdout, out); perr != nil {
					return perr
				}
				return err
			}
			fmt.Fprintf(a.stdout, "Client:      %s (%s)\n", out.Client.Version, out.Client.GoVersion)
			if s := out.Server; s != nil {
				fmt.Fprintf(a.stdout, "Server:      %s (%s) on node %s\n", s.Version, s.GoVersion, orDash(s.Node))
				containerd := orDash(s.Containerd)
				if !s.ContainerdOK {
					containerd = "not answering"
				}
				fmt.Fprintf(a.stdout, "Containerd:  %s\n", containerd)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the client version; do not contact agentd")
	return cmd
}
