package api

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Defaults and limits of a group spec.
const (
	// DefaultGracePeriod is the grace period of a group that sets none.
	DefaultGracePeriod = Duration(30 * time.Second)
	// MaxGracePeriod is the longest grace period a group may ask for.
	MaxGracePeriod = Duration(time.Hour)
	// MinMemory is the smallest memory limit a container may have (runc
	// fails to start a container in much less); 0 means no limit.
	MinMemory = ByteSize(4 << 20)
)

// SetDefaults fills the fields whose zero value means "the default", so g
// becomes the effective config: schema, restart, grace_period,
// restart_backoff, on_evict, and the timing of probes, the timeout of
// post_start hooks and the path of HTTP actions. Decode calls it; call it for a spec
// that came from elsewhere (JSON).
func (g *GroupSpec) SetDefaults() {
	if g.Schema == 0 {
		g.Schema = SchemaVersion
	}
	if g.Restart == "" {
		g.Restart = RestartAlways
	}
	if g.GracePeriod == 0 {
		g.GracePeriod = DefaultGracePeriod
	}
	g.RestartBackoff = g.RestartBackoff.effective()
	if g.OnEvict == "" {
		g.OnEvict = EvictWait
	}
	for i := range g.Containers {
		c := &g.Containers[i]
		c.Startup.setDefaults()
		c.Liveness.setDefaults()
		c.Readiness.setDefaults()
		c.PostStart.setDefaults(DefaultHookTimeout)
		c.PreStop.setDefaults(0) // bounded by the grace period
	}
	g.setCoordDefaults()
}

// orDefault returns def when v is the zero value, else v.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Validate checks g against the rules of a group file and returns nil or an
// ErrorList with every problem. It is for a spec that did not come from a
// file (JSON, or built in code): its FieldErrors name the group, container
// and key path but carry no file position. Zero values that stand for a
// default are valid. Decode runs the same rules and adds positions.
func (g *GroupSpec) Validate() error {
	errs := g.validate(nil, "")
	if len(errs) == 0 {
		return nil
	}
	containers := make([]string, len(g.Containers))
	for i, c := range g.Containers {
		containers[i] = c.Name
	}
	return finish(errs, nil, "", g.Name, containers)
}

// validator collects the problems of one spec. idx, when set, locates the
// first definition of a duplicate.
type validator struct {
	errs ErrorList
	idx  *positionIndex
	file string
}

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// where says where field is written, for a message that points at a
// second place: "web.toml:12:1", or the key path when there is no file.
func (v *validator) where(field string) string {
	if v.idx == nil {
		return field
	}
	p := v.idx.locate(field)
	if v.file == "" {
		return fmt.Sprintf("line %d, column %d", p.Line, p.Col)
	}
	return fmt.Sprintf("%s:%d:%d", v.file, p.Line, p.Col)
}

func (g *GroupSpec) validate(idx *positionIndex, file string) ErrorList {
	v := &validator{idx: idx, file: file}
	if g.Schema != 0 && g.Schema != SchemaVersion {
		v.add("schema", "schema %d is not supported: this build reads schema %d; write schema = %d or leave the key out",
			g.Schema, SchemaVersion, SchemaVersion)
	}
	v.name("name", "group", g.Name)
	if g.Priority.Class != "" && !IsDNSLabel(g.Priority.Class) {
		v.add("priority", "invalid priority class %q: use a number or a class name such as \"high\", \"normal\", \"batch\"", g.Priority.Class)
	}
	switch g.Restart {
	case "", RestartAlways, RestartOnFailure, RestartNever:
	default:
		v.add("restart", "%q is not a restart policy: use \"always\" (the default), \"on-failure\" or \"never\"", g.Restart)
	}
	switch {
	case g.GracePeriod < 0:
		v.add("grace_period", "grace_period must not be negative")
	case g.GracePeriod > MaxGracePeriod:
		v.add("grace_period", "grace_period %s is longer than the maximum of %s; shorten it", g.GracePeriod, time.Duration(MaxGracePeriod))
	}
	v.labels(g.Labels)
	v.after(g)
	v.backoff(g.RestartBackoff)
	v.onEvict(g.OnEvict)
	v.placement(g)
	v.network(g)
	v.ambassadors(g)
	v.leases(g)
	v.queue(g)

	v.uniqueNames("volume", len(g.Volumes), func(i int) string { return g.Volumes[i].Name })
	for i := range g.Volumes {
		v.volume(pathIndex("volume", i), &g.Volumes[i])
	}
	if len(g.Containers) == 0 {
		v.add("container", "a group needs at least one container: add a [[container]] table with a name and an image")
	}
	v.uniqueNames("container", len(g.Containers), func(i int) string { return g.Containers[i].Name })
	for i := range g.Containers {
		v.container(pathIndex("container", i), &g.Containers[i], g)
	}
	v.needsNonInit(g.Containers)
	return v.errs
}

// name checks one name that must be a DNS label.
func (v *validator) name(field, what, name string) {
	if name == "" {
		v.add(field, "the %s needs a name: add name = %q (lowercase letters, digits and '-')", what, "my-"+what)
		return
	}
	if msg := nameProblem(name, what); msg != "" {
		v.add(field, "%s", msg)
	}
}

// nameProblem says what is wrong with a name that must be a DNS label, or "".
func nameProblem(name, what string) string {
	if IsDNSLabel(name) {
		return ""
	}
	msg := fmt.Sprintf("%q is not a valid %s name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", name, what)
	if s := labelLike(name); s != "" && s != name {
		msg += fmt.Sprintf(", e.g. %q", s)
	}
	return msg
}

// labelLike turns s into a DNS label if it can: "My_App" → "my-app".
func labelLike(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := b.String()
	if len(out) > 63 {
		out = out[:63]
	}
	out = strings.Trim(out, "-")
	if !IsDNSLabel(out) {
		return ""
	}
	return out
}

// uniqueNames names and checks the n entries of the array of tables
// table, and refuses a name used twice.
func (v *validator) uniqueNames(table string, n int, name func(int) string) {
	first := make(map[string]int)
	for i := 0; i < n; i++ {
		field := pathKey(pathIndex(table, i), "name")
		nm := name(i)
		v.name(field, table, nm)
		if nm == "" {
			continue
		}
		if j, dup := first[nm]; dup {
			v.add(field, "%s %q is defined twice (first at %s); give each %s its own name",
				table, nm, v.where(pathKey(pathIndex(table, j), "name")), table)
			continue
		}
		first[nm] = i
	}
}

func (v *validator) labels(labels map[string]string) {
	for _, k := range sortedStringKeys(labels) {
		field := pathKey("labels", k)
		switch {
		case k == "":
			v.add(field, "label keys must not be empty")
		case len(k) > 63:
			v.add(field, "label key is %d characters long; the limit is 63", len(k))
		case strings.IndexFunc(k, notLabelKeyRune) >= 0:
			v.add(field, "label key %q may only contain letters, digits, '.', '_', '/' and '-'", k)
		}
		if n := len(labels[k]); n > 255 {
			v.add(field, "label value is %d characters long; the limit is 255", n)
		}
	}
}

func notLabelKeyRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '.' || r == '_' || r == '/' || r == '-')
}

func (v *validator) volume(p string, vol *VolumeSpec) {
	switch vol.Type {
	case VolumeEmpty, VolumeHost, VolumeTmpfs:
	case "":
		v.add(pathKey(p, "type"), "the volume needs a type: add type = \"empty\", \"host\" or \"tmpfs\"")
		return
	default:
		v.add(pathKey(p, "type"), "%q is not a volume type: use \"empty\" (a directory that lives as long as the group), \"host\" (a host path) or \"tmpfs\" (memory; needs a size)", vol.Type)
		return
	}

	switch {
	case vol.Type == VolumeHost && vol.Path == "":
		v.add(pathKey(p, "path"), "a host volume needs the host path to bind: add path = \"/srv/data\"")
	case vol.Type == VolumeHost:
		if msg := absPathProblem(vol.Path); msg != "" {
			v.add(pathKey(p, "path"), "%s", msg)
		} else if c := path.Clean(vol.Path); c != vol.Path {
			v.add(pathKey(p, "path"), "%q is not a clean path: write %q", vol.Path, c)
		}
	case vol.Path != "":
		v.add(pathKey(p, "path"), "path is only for host volumes; remove it (Berth creates %s volumes itself)", vol.Type)
	}

	switch {
	case vol.Type == VolumeTmpfs && vol.Size <= 0:
		v.add(pathKey(p, "size"), "a tmpfs volume needs a size: add size = \"64MiB\"")
	case vol.Type != VolumeTmpfs && vol.Size != 0:
		v.add(pathKey(p, "size"), "size only applies to tmpfs volumes; remove it")
	}
}

func (v *validator) container(p string, c *ContainerSpec, g *GroupSpec) {
	if c.Image == "" {
		v.add(pathKey(p, "image"), "the container needs an image: add image = \"registry/name:tag\"")
	} else if msg := imageProblem(c.Image); msg != "" {
		v.add(pathKey(p, "image"), "%s", msg)
	}
	if c.StopSignal != "" {
		if _, err := c.StopSignal.Parse(); err != nil {
			v.add(pathKey(p, "stop_signal"), "%s", err.Error())
		}
	}
	if c.WorkingDir != "" && !path.IsAbs(c.WorkingDir) {
		v.add(pathKey(p, "working_dir"), "working_dir %q must be an absolute path, like \"/app\"", c.WorkingDir)
	}
	if c.User != "" {
		if msg := userProblem(c.User); msg != "" {
			v.add(pathKey(p, "user"), "%s", msg)
		}
	}
	for _, k := range sortedStringKeys(c.Env) {
		field := pathKey(pathKey(p, "env"), k)
		switch {
		case k == "":
			v.add(field, "environment variable names must not be empty")
		case strings.ContainsAny(k, "=\x00"):
			v.add(field, "environment variable name %q must not contain '=' or a NUL character", k)
		}
		if strings.ContainsRune(c.Env[k], 0) {
			v.add(field, "the value must not contain a NUL character")
		}
	}
	v.mounts(pathKey(p, "mount"), c.Mounts, g)
	v.lifecycle(p, c)

	v.resources(pathKey(p, "resources"), c.Resources)
}

func (v *validator) mounts(p string, mounts []MountSpec, g *GroupSpec) {
	first := make(map[string]int)
	for i, m := range mounts {
		mp := pathIndex(p, i)
		switch _, ok := g.Volume(m.Volume); {
		case m.Volume == "":
			v.add(pathKey(mp, "volume"), "the mount needs a volume: add volume = \"name\" naming one of %s", volumeNames(g))
		case !ok:
			v.add(pathKey(mp, "volume"), "volume %q is not defined in this group; %s", m.Volume, volumeHint(m.Volume, g))
		}

		field := pathKey(mp, "path")
		if m.Path == "" {
			v.add(field, "the mount needs a path in the container: add path = \"/data\"")
			continue
		}
		if msg := absPathProblem(m.Path); msg != "" {
			v.add(field, "%s", msg)
			continue
		}
		clean := path.Clean(m.Path)
		if clean == "/" {
			v.add(field, "cannot mount over the container's root \"/\"; pick a directory such as \"/data\"")
			continue
		}
		if j, dup := first[clean]; dup {
			v.add(field, "%q is already mounted by mount[%d] (at %s); mount each path once",
				m.Path, j, v.where(pathKey(pathIndex(p, j), "path")))
			continue
		}
		first[clean] = i
	}
}

func volumeNames(g *GroupSpec) string {
	if len(g.Volumes) == 0 {
		return "the group's volumes (it defines none yet: add a [[volume]] table)"
	}
	names := make([]string, len(g.Volumes))
	for i, vol := range g.Volumes {
		names[i] = vol.Name
	}
	return quoteList(names)
}

func volumeHint(name string, g *GroupSpec) string {
	if len(g.Volumes) == 0 {
		return "the group defines no volumes: add a [[volume]] table"
	}
	names := make([]string, len(g.Volumes))
	for i, vol := range g.Volumes {
		names[i] = vol.Name
	}
	hint := "the group defines " + quoteList(names)
	if s := closest(name, names); s != "" {
		hint += fmt.Sprintf("; did you mean %q?", s)
	}
	return hint
}

// written returns field when it is written in the file (or there is no
// file), else other: of two keys that conflict, it blames the one written.
func (v *validator) written(field, other string) string {
	if v.idx == nil {
		return field
	}
	if _, ok := v.idx.lookup(field); ok {
		return field
	}
	return other
}

// absPathProblem says what is wrong with p as an absolute path, or "".
func absPathProblem(p string) string {
	if !path.IsAbs(p) {
		return fmt.Sprintf("%q is not an absolute path: start it with '/'", p)
	}
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return fmt.Sprintf("%q must not contain \"..\"", p)
		}
	}
	return ""
}

// userProblem says what is wrong with a user of the form "uid" or
// "uid:gid", or "".
func userProblem(u string) string {
	uid, gid, hasGID := strings.Cut(u, ":")
	isID := func(s string) bool {
		_, err := strconv.ParseUint(s, 10, 32)
		return err == nil
	}
	if isID(uid) && (!hasGID || isID(gid)) {
		return ""
	}
	isName := func(s string) bool {
		return s != "" && strings.IndexFunc(s, unicode.IsLetter) >= 0
	}
	if isName(uid) || hasGID && isName(gid) {
		return fmt.Sprintf("user %q uses a name: Berth does not read the image's /etc/passwd or /etc/group, so write numeric ids, \"uid\" or \"uid:gid\" (e.g. \"65534:65534\")", u)
	}
	return fmt.Sprintf("user %q is not \"uid\" or \"uid:gid\" with numeric ids from 0 to 4294967295", u)
}

// Image references, after the grammar of the OCI distribution reference:
// [domain[:port]/]path-component[/path-component]…[:tag][@digest].
var imageRef = func() *regexp.Regexp {
	const (
		domainPart = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
		domain     = `(?:` + domainPart + `(?:\.` + domainPart + `)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?`
		component  = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
		tag        = `[\w][\w.-]{0,127}`
		digest     = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
	)
	return regexp.MustCompile(`^(?:` + domain + `/)?` + component + `(?:/` + component + `)*` +
		`(?::` + tag + `)?(?:@` + digest + `)?$`)
}()

// imageProblem says what is wrong with an image reference, or "".
func imageProblem(ref string) string {
	const example = `"docker.io/library/busybox:1.36"`
	switch {
	case strings.IndexFunc(ref, unicode.IsSpace) >= 0:
		return fmt.Sprintf("image %q must not contain whitespace", ref)
	case strings.Contains(ref, "://"):
		return fmt.Sprintf("image %q is written as a URL: drop the scheme, like %s", ref, example)
	case len(ref) > 512:
		return fmt.Sprintf("image reference is %d characters long; the limit is 512", len(ref))
	case imageRef.MatchString(ref):
		return ""
	case imageRef.MatchString(strings.ToLower(ref)):
		return fmt.Sprintf("image %q: repository names must be lowercase", ref)
	}
	return fmt.Sprintf("image %q is not a valid image reference: write [registry/]name[:tag][@digest], like %s", ref, example)
}

func sortedStringKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
