package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// DefaultConfigPath is where agentd looks for its config file.
const DefaultConfigPath = "/etc/berth/agent.toml"

// NewCommand returns agentd's command line: config file, then flags.
func NewCommand() *cobra.Command {
	var (
		configPath      string
		flags           Config
		managed         string
		drainOnShutdown bool
	)
	cmd := &cobra.Command{
		Use:           "agentd",
		Short:         "Berth node agent: runs groups of containers on containerd",
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := DefaultConfig()
			if _, err := os.Stat(configPath); err == nil || cmd.Flags().Changed("config") {
				if err := LoadConfigFile(configPath, &cfg); err != nil {
					return err
				}
			}
			set := func(name string, dst *string, v string) {
				if cmd.Flags().Changed(name) {
					*dst = v
				}
			}
			set("node-name", &cfg.NodeName, flags.NodeName)
			set("state-dir", &cfg.StateDir, flags.StateDir)
			set("run-dir", &cfg.RunDir, flags.RunDir)
			set("groups-dir", &cfg.GroupsDir, flags.GroupsDir)
			set("socket", &cfg.Socket, flags.Socket)
			set("log-level", &cfg.LogLevel, flags.LogLevel)
			set("log-format", &cfg.LogFormat, flags.LogFormat)
			set("containerd-address", &cfg.Containerd.Address, flags.Containerd.Address)
			set("namespace", &cfg.Containerd.Namespace, flags.Containerd.Namespace)
			set("managed-containerd", &cfg.Containerd.Managed, managed)
			if cmd.Flags().Changed("host-path-prefix") {
				cfg.Volumes.HostPathPrefixes = flags.Volumes.HostPathPrefixes
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if cmd.Flags().Changed("drain-on-shutdown") {
				cfg.DrainOnShutdown = drainOnShutdown
			}
			log := NewLogger(cfg.LogFormat, cfg.LogLevel)
			slog.SetDefault(log)
			ag := New(cfg, log)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
			defer signal.Stop(sigs)
			go func() {
				select {
				case <-sigs:
				case <-ctx.Done():
					return
				}
				if cfg.DrainOnShutdown {
					log.Info("draining before shutdown (a second signal stops at once)")
					dctx, dcancel := context.WithCancel(ctx)
					go func() {
						select {
						case <-sigs:
							dcancel()
						case <-dctx.Done():
						}
					}()
					if err := ag.Drain(dctx); err != nil {
						log.Error("drain", "err", err)
					}
					dcancel()
				}
				cancel()
			}()
			return ag.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", DefaultConfigPath, "agent config file (TOML); optional unless given")
	f.StringVar(&flags.NodeName, "node-name", "", "this node's name (default: hostname)")
	f.StringVar(&flags.StateDir, "state-dir", "", "state directory (default /var/lib/berth)")
	f.StringVar(&flags.RunDir, "run-dir", "", "runtime directory (default /run/berth)")
	f.StringVar(&flags.GroupsDir, "groups-dir", "", "directory of local group files (default /etc/berth/groups.d)")
	f.StringVar(&flags.Socket, "socket", "", "admin API unix socket (default /run/berth/agent.sock)")
	f.StringVar(&flags.LogLevel, "log-level", "", "debug, info, warn or error")
	f.StringVar(&flags.LogFormat, "log-format", "", "text or json")
	f.StringVar(&flags.Containerd.Address, "containerd-address", "", "containerd socket (default /run/containerd/containerd.sock)")
	f.StringVar(&flags.Containerd.Namespace, "namespace", "", "containerd namespace (default berth)")
	f.StringVar(&managed, "managed-containerd", "", "auto, always or never: start a private containerd when none answers")
	f.BoolVar(&drainOnShutdown, "drain-on-shutdown", false, "on SIGTERM stop every group (lowest priority first) instead of leaving them running")
	f.StringSliceVar(&flags.Volumes.HostPathPrefixes, "host-path-prefix", nil, "allow host volumes under this path (repeatable)")
	return cmd
}

// NewLogger returns the agent's structured logger on stdout, for journald.
func NewLogger(format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stdout, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stdout, opts))
}

// Main runs agentd and returns its exit code: 0, 1 on failure, 2 for an
// invalid configuration.
func Main(args []string) int {
	cmd := NewCommand()
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "agentd:", err)
		if errors.Is(err, api.ErrInvalid) {
			return 2
		}
		return 1
	}
	return 0
}
