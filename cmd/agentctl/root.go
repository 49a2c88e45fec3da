package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster/pki"
)

// Exit codes:
//
//	0  success
//	1  any other failure
//	2  usage error: unknown command, bad flags or arguments
//	3  invalid input: agentd refused what was sent (api.ErrInvalid); each
//	   problem is printed on its own line as file:line:col: …
//	4  not found (api.ErrNotFound): no such group, container or image
//	5  agentd unreachable or unavailable (api.ErrUnavailable), or it did
//	   not answer within --timeout
//
// Errors print on stderr as "error: <message>".
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitInvalid     = 3
	exitNotFound    = 4
	exitUnavailable = 5
)

// Output formats of -o.
const (
	outputTable = "table"
	outputWide  = "wide"
	outputJSON  = "json"
)

// Environment variables that set the defaults of the connection flags.
const (
	envSocket = "BERTH_SOCKET"
	envAddr   = "BERTH_ADDR"
	envTLSDir = "BERTH_TLS_DIR"
)

// Defaults of the remote connection: where `agentctl tls init` files are
// installed, the certificate agentctl presents, and the port of an agent's
// inter-agent API when --addr names none.
const (
	defaultTLSDir  = "/etc/berth/tls"
	defaultTLSName = "agentctl"
	defaultAPIPort = "7948"
)

// offlineCommands never talk to agentd, so --addr (from the environment,
// say) does not make them load certificates.
var offlineCommands = map[string]bool{"tls": true, "keygen": true, "help": true, "completion": true,
	cobra.ShellCompRequestCmd: true, cobra.ShellCompNoDescRequestCmd: true}

// app holds the global flags and the process's surroundings, so tests can
// run commands in-process.
type app struct {
	socket  string
	output  string
	timeout time.Duration

	// addr, when set, is a remote agent's inter-agent API (host:port),
	// reached over mutual TLS with tlsDir/ca.crt and tlsDir/tlsName.crt,
	// .key instead of the socket; remote is its client, made by connect.
	addr    string
	tlsDir  string
	tlsName string
	remote  *api.Client

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	now        func() time.Time
	isTerminal func(w io.Writer) bool
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *app {
	return &app{
		stdin:      stdin,
		stdout:     stdout,
		stderr:     stderr,
		now:        time.Now,
		isTerminal: isCharDevice,
	}
}

// run executes the command line args and returns the exit code.
func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	return a.report(cmd, err)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "agentctl",
		Short: "Control agentd, the Berth node agent",
		Long: `agentctl controls agentd, the Berth node agent, over its unix socket, or
with --addr over the inter-agent API of any agent of a cluster: HTTPS with
mutual TLS, presenting the certificate --tls-dir/--tls-name.crt (made by
agentctl tls init) and trusting only --tls-dir/ca.crt.

Exit codes: 0 success, 1 other failure, 2 usage error, 3 invalid input,
4 not found, 5 agentd unreachable or unavailable.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	pf := root.PersistentFlags()
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		switch a.output {
		case outputTable, outputWide, outputJSON:
		default:
			return usageErrorf("invalid --output %q: use table, wide or json", a.output)
		}
		switch {
		case pf.Changed("socket") && pf.Changed("addr"):
			return usageErrorf("--socket and --addr exclude each other: give one")
		case pf.Changed("socket"):
			a.addr = "" // an explicit --socket beats $BERTH_ADDR
		}
		if a.addr == "" || isOffline(cmd) {
			return nil
		}
		return a.connect()
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf.StringVar(&a.socket, "socket", envOr(envSocket, api.DefaultSocket), "agentd's admin socket (env "+envSocket+")")
	pf.StringVar(&a.addr, "addr", os.Getenv(envAddr), "a remote agent's API, host[:port] (port "+defaultAPIPort+" when omitted), over mutual TLS instead of the socket (env "+envAddr+")")
	pf.StringVar(&a.tlsDir, "tls-dir", envOr(envTLSDir, defaultTLSDir), "with --addr: the directory holding ca.crt and the client certificate (env "+envTLSDir+")")
	pf.StringVar(&a.tlsName, "tls-name", defaultTLSName, "with --addr: present --tls-dir/NAME.crt and NAME.key")
	pf.StringVarP(&a.output, "output", "o", outputTable, "output format: table, wide or json")
	pf.DurationVar(&a.timeout, "timeout", 0, "give up on agentd after this long, e.g. 30s (0: no limit; -f streams run until interrupted)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{outputTable, outputWide, outputJSON}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		a.applyCommand(),
		a.getCommand(),
		a.describeCommand(),
		a.deleteCommand(),
		a.stopCommand(),
		a.startCommand(),
		a.logsCommand(),
		a.eventsCommand(),
		a.imageCommand(),
		a.nodeCommand(),
		a.topCommand(),
		a.tlsCommand(),
		a.keygenCommand(),
		a.versionCommand(),
	)
	root.AddCommand(a.clusterCommands()...)
	root.AddCommand(a.endpointsCommand())
	root.AddCommand(a.queueCommand())
	markRunErrors(root)
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// isOffline reports whether cmd is, or is under, a command that never
// talks to agentd, or is `version --client`.
func isOffline(cmd *cobra.Command) bool {
	if f := cmd.Flags().Lookup("client"); f != nil && cmd.Name() == "version" && f.Value.String() == "true" {
		return true
	}
	for c := cmd; c.HasParent(); c = c.Parent() {
		if !c.Parent().HasParent() {
			return offlineCommands[c.Name()]
		}
	}
	return false
}

// client returns a client for --addr when given, else for --socket.
func (a *app) client() *api.Client {
	if a.addr == "" {
		return api.NewClient(a.socket)
	}
	if a.remote == nil {
		// Only shell completion gets here: the pre-run hook has not run.
		if err := a.connect(); err != nil {
			return api.NewHTTPClient("https://"+a.addr, &http.Client{Transport: failingTransport{err}})
		}
	}
	return a.remote
}

// failingTransport fails every request with err.
type failingTransport struct{ err error }

func (t failingTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, t.err }

// connect makes the client for --addr from the files in --tls-dir. Missing
// or unusable files are explained in terms of the flags and of
// `agentctl tls init`.
func (a *app) connect() error {
	addr, err := remoteAddr(a.addr)
	if err != nil {
		return &usageError{err}
	}
	caPEM, certPEM, keyPEM, err := pki.ReadNode(a.tlsDir, a.tlsName)
	if err != nil {
		return a.tlsFilesError(err)
	}
	cfg, err := pki.ClientConfig(caPEM, certPEM, keyPEM, "")
	if err != nil {
		return &runError{fmt.Errorf("--addr: %s and %s: %v", a.tlsPath(".crt"), a.tlsPath(".key"), err)}
	}
	a.addr, a.remote = addr, api.NewRemoteClient(addr, cfg)
	return nil
}

func (a *app) tlsPath(ext string) string { return filepath.Join(a.tlsDir, a.tlsName+ext) }

// tlsFilesError says which file connect could not read and what to do.
func (a *app) tlsFilesError(err error) error {
	if errors.Is(err, api.ErrInvalid) {
		return usageErrorf("--tls-name: %v", err)
	}
	ca := filepath.Join(a.tlsDir, "ca.crt")
	for _, f := range []struct{ path, what, hint string }{
		{ca, "the cluster's CA certificate", "copy ca.crt from where agentctl tls init ran into --tls-dir"},
		{a.tlsPath(".crt"), "a client certificate", "create it with agentctl tls init, or choose another with --tls-dir and --tls-name"},
		{a.tlsPath(".key"), "the key of its client certificate", "copy it next to " + a.tlsName + ".crt (agentctl tls init writes both)"},
	} {
		if _, serr := os.Stat(f.path); errors.Is(serr, fs.ErrNotExist) {
			return &runError{fmt.Errorf("--addr needs %s: %s: no such file; %s", f.what, f.path, f.hint)}
		}
	}
	return &runError{fmt.Errorf("--addr: %v", errors.Unwrap(err))}
}

// remoteAddr checks --addr and adds the default port when it has none.
func remoteAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if h, p, err2 := net.SplitHostPort(s + ":" + defaultAPIPort); err2 == nil {
			host, port, err = h, p, nil
		}
	}
	if err != nil || host == "" {
		return "", fmt.Errorf("invalid --addr %q: want host:port, e.g. 10.0.0.1:%s or [fd00::1]:%s", s, defaultAPIPort, defaultAPIPort)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("invalid --addr %q: port %q is not a number from 1 to 65535", s, port)
	}
	return net.JoinHostPort(host, port), nil
}

// remoteTLSError is a failed TLS handshake with the agent at --addr,
// explained; it keeps the original error's class.
type remoteTLSError struct {
	msg string
	err error
}

func (e *remoteTLSError) Error() string { return e.msg }
func (e *remoteTLSError) Unwrap() error { return e.err }

// explainRemote turns a TLS failure with the agent at --addr into what to
// check; other errors are returned as they are.
func (a *app) explainRemote(err error) error {
	if a.remote == nil {
		return err
	}
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	var op *net.OpError
	var msg string
	switch {
	case errors.As(err, &host):
		msg = fmt.Sprintf("agentd at %s presented the certificate of %q, which does not name %s: reissue that node's certificate with its address (agentctl tls init --node %s=IP), or give --addr as a name or address it lists",
			a.addr, host.Certificate.Subject.CommonName, host.Host, host.Certificate.Subject.CommonName)
	case errors.As(err, &verify):
		msg = fmt.Sprintf("agentd at %s presented a certificate that the cluster CA in %s does not vouch for (%v): is --tls-dir the directory of this cluster?",
			a.addr, filepath.Join(a.tlsDir, "ca.crt"), verify.Err)
	case errors.As(err, &op) && op.Op == "remote error":
		msg = fmt.Sprintf("agentd at %s refused the client certificate %s (%v): present one issued by that cluster's CA (--tls-dir, --tls-name)",
			a.addr, a.tlsPath(".crt"), op.Err)
	default:
		return err
	}
	return &remoteTLSError{msg: msg, err: err}
}

// requestContext bounds one request by --timeout.
func (a *app) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.timeout > 0 {
		return context.WithTimeout(ctx, a.timeout)
	}
	return context.WithCancel(ctx)
}

// usageError is a mistake in the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// runError marks an error returned by a command's RunE. Errors without it
// come from cobra itself: unknown commands, wrong argument counts, missing
// required flags; they are usage errors.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

func markRunErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := run(cmd, args); err != nil {
				return &runError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}

// reportedError has been printed already; only its exit code is left.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

// problemsError summarises an api.ErrorList whose problems are printed one
// a line before the summary.
type problemsError struct {
	summary string
	list    error
}

func (e *problemsError) Error() string { return e.summary }
func (e *problemsError) Unwrap() error { return e.list }

// exitCode maps an error to the process exit code.
func exitCode(err error) int {
	var ue *usageError
	var re *runError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue), !errors.As(err, &re):
		return exitUsage
	case errors.Is(err, api.ErrInvalid):
		return exitInvalid
	case errors.Is(err, api.ErrNotFound):
		return exitNotFound
	case errors.Is(err, api.ErrUnavailable):
		return exitUnavailable
	}
	return exitFailure
}

// report prints err on stderr and returns the exit code.
func (a *app) report(cmd *cobra.Command, err error) int {
	if errors.Is(err, context.DeadlineExceeded) && a.timeout > 0 {
		err = &runError{&timeoutError{a.timeout, err}}
	}
	code := exitCode(err)
	var done *reportedError
	if errors.As(err, &done) {
		return code
	}
	a.printError(err)
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// printError prints err as "error: <message>"; an api.ErrorList prints
// one problem a line first.
func (a *app) printError(err error) {
	err = a.explainRemote(err)
	var list api.ErrorList
	if errors.As(err, &list) && len(list) > 0 {
		for _, fe := range list {
			fmt.Fprintln(a.stderr, fe.Error())
		}
		var pe *problemsError
		if !errors.As(err, &pe) {
			err = &problemsError{summary: "invalid input: " + plural(len(list), "problem") + " found", list: err}
		} else {
			err = pe
		}
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(a.stderr, "error: interrupted")
		return
	}
	fmt.Fprintf(a.stderr, "error: %s\n", err)
}

// timeoutError is --timeout running out: agentd did not answer in time.
type timeoutError struct {
	after time.Duration
	err   error
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("agentd did not answer within %s (--timeout)", e.after)
}
func (e *timeoutError) Unwrap() []error { return []error{api.ErrUnavailable, e.err} }

// forEach runs fn for every name, printing each failure as it happens so
// one bad name does not hide the others. It returns the first failure,
// already reported.
func (a *app) forEach(names []string, fn func(name string) error) error {
	var first error
	for _, name := range names {
		if err := fn(name); err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			if errors.Is(err, context.DeadlineExceeded) && a.timeout > 0 {
				err = &timeoutError{a.timeout, err}
			}
			a.printError(err)
			if first == nil {
				first = err
			}
		}
	}
	if first != nil {
		return &reportedError{first}
	}
	return nil
}

// isCharDevice reports whether w is a terminal (or another character
// device, where a progress line does no harm).
func isCharDevice(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
