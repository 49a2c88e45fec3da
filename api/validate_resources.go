package api

import "fmt"

// The resource rules of a group: the limits and requests of its
// containers, and what becomes of the group when it is evicted.
// validate.go calls them.

// resources checks the [container.resources] table at p. A limit of 0 is
// no limit; a request of 0 stands for the limit (ContainerSpec.Request).
func (v *validator) resources(p string, r ResourceSpec) {
	switch {
	case r.Memory < 0:
		v.add(pathKey(p, "memory"), "memory must not be negative; write 0 for no limit")
	case r.Memory > 0 && r.Memory < MinMemory:
		v.add(pathKey(p, "memory"), "memory %s is below the minimum of %s; raise it, or write 0 for no limit", r.Memory, MinMemory)
	}
	if r.CPU < 0 {
		v.add(pathKey(p, "cpu"), "cpu must not be negative; write 0 for no limit")
	}
	if r.Pids < 0 {
		v.add(pathKey(p, "pids"), "pids must not be negative; write 0 for no limit")
	}

	rp := pathKey(p, "requests")
	checkRequest(v, rp, "cpu", r.Requests.CPU, r.CPU)
	checkRequest(v, rp, "memory", r.Requests.Memory, r.Memory)
}

// checkRequest checks the request of one resource, key under p, against
// its limit.
func checkRequest[T interface {
	~int64
	fmt.Stringer
}](v *validator, p, key string, req, limit T) {
	field := pathKey(p, key)
	switch {
	case req < 0:
		v.add(field, "requests.%s must not be negative: leave it out to request the limit", key)
	case limit > 0 && req > limit:
		v.add(field, "requests.%s %s is above the limit %s %s; lower the request or raise the limit", key, req, key, limit)
	}
}

// onEvict checks what becomes of the group when it is evicted.
func (v *validator) onEvict(policy EvictPolicy) {
	switch policy {
	case "", EvictWait, EvictStop:
		return
	}
	msg := fmt.Sprintf("%q is not an on_evict policy: use \"wait\" (the default: the group starts again when there is room) or \"stop\" (it stays stopped until you start it)", policy)
	if s := closest(string(policy), []string{string(EvictWait), string(EvictStop)}); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	v.add("on_evict", "%s", msg)
}
