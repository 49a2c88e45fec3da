package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
)

// The work queue subcommands:
//
//	testapp queue-worker  a pull-mode worker: leases items of a queue over
//	                      the group's downward socket, works on them and
//	                      acks them, and can crash in the middle of one
//	testapp queue-item    a container-mode worker: reads the item at
//	                      /berth/work/item once, records the execution and
//	                      writes a result under /berth/work/out
func init() {
	commands["queue-worker"] = queueWorker
	commands["queue-item"] = queueItem
}

// queueWorker registers the flags of queue-worker.
func queueWorker(fs *flag.FlagSet) func() error {
	w := &worker{}
	fs.StringVar(&w.queue, "queue", os.Getenv("BERTH_GROUP"), "the queue to lease from (default $BERTH_GROUP)")
	fs.StringVar(&w.socket, "socket", envOrDefault("BERTH_AGENT_SOCKET", api.DownwardSocket), "the downward API socket")
	fs.IntVar(&w.max, "max", 1, "items to lease at once")
	fs.DurationVar(&w.work, "work", 0, "time spent on each item")
	fs.DurationVar(&w.visibility, "visibility", 0, "visibility asked for at lease (0: the queue's)")
	fs.StringVar(&w.record, "record", "", `append "<worker> <id> <token> <attempt> <data>" to this file for each item worked on, before the ack`)
	fs.StringVar(&w.crashOnce, "crash-once", "", "on the first item, if this file does not exist: create it, record the item as crashed and exit 3 without an ack")
	return w.run
}

type worker struct {
	queue, socket, record, crashOnce string
	max                              int
	work, visibility                 time.Duration
}

func (w *worker) run() error {
	if w.queue == "" {
		return errors.New("--queue is required (or $BERTH_GROUP)")
	}
	c := api.NewClient(w.socket)
	name, _ := os.Hostname()
	ctx := context.Background()
	out.Printf("queue-worker %s: leasing from %s", name, w.queue)
	for {
		res, err := c.LeaseItems(ctx, w.queue, api.LeaseRequest{Max: w.max, Wait: api.Duration(5 * time.Second),
			Visibility: api.Duration(w.visibility), Worker: name})
		if err != nil {
			errOut.Printf("lease: %v", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var acks []api.Ack
		for _, it := range res.Items {
			line := fmt.Sprintf("%s %d %d %d %s\n", name, it.ID, it.Token, it.Attempt, oneLine(it.Data))
			if w.crashOnce != "" {
				if f, err := os.OpenFile(w.crashOnce, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
					fmt.Fprint(f, line)
					f.Close()
					out.Printf("crashing on item %d", it.ID)
					os.Exit(3)
				}
			}
			time.Sleep(w.work)
			if w.record != "" {
				if err := appendLine(w.record, line); err != nil {
					return err
				}
			}
			acks = append(acks, api.Ack{ID: it.ID, Token: it.Token, Result: []byte("ok " + oneLine(it.Data))})
		}
		if len(acks) == 0 {
			continue
		}
		ar, err := c.Ack(ctx, w.queue, acks...)
		if err != nil {
			errOut.Printf("ack: %v", err)
			continue
		}
		for _, r := range ar.Results {
			out.Printf("item %d: %s", r.ID, r.Outcome)
		}
	}
}

// queueItem registers the flags of queue-item.
func queueItem(fs *flag.FlagSet) func() error {
	var (
		record, failOn string
		work           time.Duration
	)
	fs.StringVar(&record, "record", "", `append "<hostname> <item>" to this file`)
	fs.StringVar(&failOn, "fail-on", "", "exit 1 when the item contains this text")
	fs.DurationVar(&work, "work", 0, "time spent on the item")
	return func() error {
		data, err := os.ReadFile("/berth/work/item")
		if err != nil {
			return err
		}
		host, _ := os.Hostname()
		time.Sleep(work)
		if record != "" {
			if err := appendLine(record, fmt.Sprintf("%s %s\n", host, oneLine(data))); err != nil {
				return err
			}
		}
		if failOn != "" && strings.Contains(string(data), failOn) {
			errOut.Printf("item %q contains %q: failing", oneLine(data), failOn)
			os.Exit(1)
		}
		return os.WriteFile(filepath.Join("/berth/work/out", "result"), append([]byte("done "), data...), 0o644)
	}
}

func oneLine(b []byte) string {
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", " ")
}

func envOrDefault(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
