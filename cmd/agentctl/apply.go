package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// stdinName names group files read from stdin in error messages.
const stdinName = "<stdin>"

func (a *app) applyCommand() *cobra.Command {
	var (
		files  []string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|- [-f …]",
		Short: "Create or update groups from TOML files, all or nothing",
		Long: `Create or update groups from TOML group files.

-f takes a file, a directory (every *.toml file in it, not recursing) or -
for stdin, and can be repeated. All files go to agentd in one request: if
any is invalid, nothing is applied and every problem is printed on its own
line as file:line:col: … (exit code 3).`,
		Example: `  agentctl apply -f web.toml
  agentctl apply -f /etc/berth/groups/ -f extra.toml
  cat web.toml | agentctl apply -f - --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := a.readGroupFiles(files)
			if err != nil {
				return err
			}
			req.DryRun = dryRun
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			res, err := a.client().Apply(ctx, req)
			var list api.ErrorList
			if errors.As(err, &list) {
				return &problemsError{
					summary: fmt.Sprintf("%s in the group files; nothing was applied", plural(len(list), "problem")),
					list:    err,
				}
			}
			if err != nil {
				return err
			}
			if a.output == outputJSON {
				return printJSON(a.stdout, res)
			}
			suffix := ""
			if dryRun {
				suffix = " (dry run)"
			}
			for _, r := range res {
				fmt.Fprintf(a.stdout, "group/%s %s%s\n", r.Group, r.Action, suffix)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "group file, directory of *.toml files, or - for stdin (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and show what would change, without applying")
	_ = cmd.MarkFlagRequired("filename")
	_ = cmd.MarkFlagFilename("filename", "toml")
	return cmd
}

// readGroupFiles reads every file the -f arguments name, in order, each
// once.
func (a *app) readGroupFiles(args []string) (api.ApplyRequest, error) {
	var req api.ApplyRequest
	seen := map[string]bool{}
	add := func(name string, data []byte) {
		req.Files = append(req.Files, api.ApplyFile{Name: name, Content: string(data)})
	}
	for _, arg := range args {
		if arg == "-" {
			if seen[stdinName] {
				return req, usageErrorf("-f - given twice: stdin can be read only once")
			}
			seen[stdinName] = true
			data, err := io.ReadAll(a.stdin)
			if err != nil {
				return req, fmt.Errorf("read stdin: %w", err)
			}
			add(stdinName, data)
			continue
		}
		paths, err := groupFilePaths(arg)
		if err != nil {
			return req, err
		}
		for _, p := range paths {
			if seen[filepath.Clean(p)] {
				continue
			}
			seen[filepath.Clean(p)] = true
			data, err := os.ReadFile(p)
			if err != nil {
				return req, err
			}
			add(p, data)
		}
	}
	return req, nil
}

// groupFilePaths returns arg itself when it is a file, or the *.toml files
// in it, sorted, when it is a directory.
func groupFilePaths(arg string) ([]string, error) {
	fi, err := os.Stat(arg)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{arg}, nil
	}
	entries, err := os.ReadDir(arg)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".toml") && !e.IsDir() {
			paths = append(paths, filepath.Join(arg, e.Name()))
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no *.toml files in directory %s: %w", arg, api.ErrInvalid)
	}
	sort.Strings(paths)
	return paths, nil
}
