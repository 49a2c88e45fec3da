package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

const usage = `usage: testapp serve|sleep|alloc [flags]  (testapp <command> -h for flags)`

// out and errOut serialize lines to stdout and stderr.
var (
	out    = log.New(os.Stdout, "", 0)
	errOut = log.New(os.Stderr, "", 0)
)

// common holds the flags every subcommand takes.
type common struct {
	termDelay    time.Duration
	ignoreTerm   bool
	logEvery     time.Duration
	onTermAppend string
	name         string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.DurationVar(&c.termDelay, "term-delay", 0, "on SIGTERM wait this long, then exit 0")
	fs.BoolVar(&c.ignoreTerm, "ignore-term", false, "log SIGTERM and keep running")
	fs.DurationVar(&c.logEvery, "log-every", 0, `print "tick N" to stdout this often (every 10th also to stderr)`)
	fs.StringVar(&c.onTermAppend, "on-term-append", "", `on SIGTERM append "<name> term <unix-nanos>" to this file`)
	fs.StringVar(&c.name, "name", "", "name for --on-term-append (default $HOSTNAME)")
}

// commands are the subcommands defined in other files (one file each):
// each registers its flags on fs and returns the function to run after
// the flags are parsed.
var commands = map[string]func(fs *flag.FlagSet) func() error{}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var c common
	fs := flag.NewFlagSet("testapp "+os.Args[1], flag.ExitOnError)
	c.register(fs)
	var run func() error
	switch os.Args[1] {
	case "serve":
		s := newServer()
		fs.StringVar(&s.listen, "listen", ":8080", "address to serve HTTP on")
		fs.StringVar(&s.readyFile, "ready-file", "", "ready only while this file exists")
		run = s.run
	case "sleep":
		run = func() error { select {} }
	case "alloc":
		mib := fs.Int("mib", 0, "MiB to allocate and touch")
		run = func() error { return alloc(*mib) }
	default:
		cmd, ok := commands[os.Args[1]]
		if !ok {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		run = cmd(fs)
	}
	_ = fs.Parse(os.Args[2:])
	c.start()
	if err := run(); err != nil {
		errOut.Printf("testapp %s: %v", os.Args[1], err)
		os.Exit(1)
	}
}

// start installs the signal handler and the ticker.
func (c *common) start() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for sig := range sigs {
			c.onSignal(sig)
		}
	}()
	if c.logEvery > 0 {
		go tick(c.logEvery)
	}
}

func (c *common) onSignal(sig os.Signal) {
	at := time.Now()
	name := "SIGTERM"
	if sig == syscall.SIGINT {
		name = "SIGINT"
	}
	out.Printf("got %s", name)
	if sig == syscall.SIGTERM && c.onTermAppend != "" {
		if err := appendLine(c.onTermAppend, fmt.Sprintf("%s term %d\n", c.nameOrHost(), at.UnixNano())); err != nil {
			errOut.Printf("append to %s: %v", c.onTermAppend, err)
		}
	}
	if c.ignoreTerm {
		out.Printf("ignoring %s", name)
		return
	}
	if c.termDelay > 0 {
		out.Printf("exiting in %s", c.termDelay)
		time.Sleep(c.termDelay)
	}
	out.Printf("exiting")
	os.Exit(0)
}

func (c *common) nameOrHost() string {
	if c.name != "" {
		return c.name
	}
	if h := os.Getenv("HOSTNAME"); h != "" {
		return h
	}
	h, _ := os.Hostname()
	return h
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func tick(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		<-t.C
		out.Printf("tick %d", n)
		if n%10 == 0 {
			errOut.Printf("tick %d", n)
		}
	}
}

// held keeps allocated memory reachable.
var held atomic.Pointer[[]byte]

// alloc allocates and touches mib MiB, then blocks.
func alloc(mib int) error {
	if mib < 0 {
		return errors.New("--mib must not be negative")
	}
	b := make([]byte, mib<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	held.Store(&b)
	out.Printf("allocated %d MiB", mib)
	select {}
}

// atoiDefault parses s, or returns def when s is empty.
func atoiDefault(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	return strconv.Atoi(s)
}
