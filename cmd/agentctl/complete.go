package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// completionTimeout bounds the request a shell completion makes: a slow
// agent must not hang the user's shell.
const completionTimeout = 2 * time.Second

// completeGroups completes group names not already on the command line.
func (a *app) completeGroups(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	groups, err := a.client().List(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	var out []string
	for _, g := range groups {
		if strings.HasPrefix(g.Name, toComplete) && !slices.Contains(args, g.Name) {
			out = append(out, g.Name)
		}
	}
	slices.Sort(out)
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeOneGroup completes the single GROUP argument of a command.
func (a *app) completeOneGroup(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return a.completeGroups(cmd, args, toComplete)
}

// completeGroupContainer completes GROUP[/CONTAINER]: group names, then
// after a slash the containers of that group.
func (a *app) completeGroupContainer(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	group, prefix, ok := strings.Cut(toComplete, "/")
	if !ok {
		names, dir := a.completeGroups(cmd, args, toComplete)
		return names, dir | cobra.ShellCompDirectiveNoSpace
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	g, err := a.client().Get(ctx, group)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	var out []string
	for _, c := range g.Containers {
		if strings.HasPrefix(c.Name, prefix) {
			out = append(out, group+"/"+c.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
