package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
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

// envSocket overrides the default of --socket.
const envSocket = "BERTH_SOCKET"

// app holds the global flags and the process's surroundings, so tests can
// run commands in-process.
type app struct {
	socket  string
	output  string
	timeout time.Duration

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
	defSocket := api.DefaultSocket
	if s := os.Getenv(envSocket); s != "" {
		defSocket = s
	}
	root := &cobra.Command{
		Use:   "agentctl",
		Short: "Control agentd, the Berth node agent",
		Long: `agentctl controls agentd, the Berth node agent, over its unix socket.

Exit codes: 0 success, 1 other failure, 2 usage error, 3 invalid input,
4 not found, 5 agentd unreachable or unavailable.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			switch a.output {
			case outputTable, outputWide, outputJSON:
				return nil
			}
			return usageErrorf("invalid --output %q: use table, wide or json", a.output)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.socket, "socket", defSocket, "agentd's admin socket (env "+envSocket+")")
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
	markRunErrors(root)
	return root
}

// client returns a client for --socket.
func (a *app) client() *api.Client { return api.NewClient(a.socket) }

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
