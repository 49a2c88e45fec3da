package api

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"
)

// Decode decodes one group from the TOML in data, fills its defaults
// (SetDefaults) and validates it, so the spec returned is the effective
// config. file names the source in errors.
//
// On any problem it returns an ErrorList with every problem found, sorted
// by position: TOML syntax, unknown keys, values of the wrong type, values
// the unit types refuse ("64MB!", "10 seconds"), and the rules of Validate.
// Each FieldError carries the file, line and column, the group and
// container when known, and the key path ("container[1].mount[0].volume").
//
// Decoding happens in three passes over the same bytes:
//
//  1. BurntSushi/toml parses the file into plain maps and slices, so a
//     syntax error stops here with its position.
//  2. A walk of those values against the GroupSpec types (by reflection
//     over the toml struct tags) finds every unknown key and wrongly typed
//     value at once, where a typed decode would stop at the first one.
//  3. BurntSushi/toml decodes into GroupSpec; then Validate's rules run.
//
// Positions come from a separate index of the file (see position.go).
func Decode(file string, data []byte) (*GroupSpec, error) {
	idx := indexPositions(data)
	fail := func(errs ErrorList, group string, containers []string) error {
		return finish(errs, idx, file, group, containers)
	}

	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, fail(ErrorList{idx.tomlError(err, "invalid TOML: ")}, "", nil)
	}
	group, containers := rawNames(raw)
	var c checker
	c.value("", raw, reflect.TypeFor[GroupSpec]())
	if len(c.errs) > 0 {
		return nil, fail(c.errs, group, containers)
	}

	var spec GroupSpec
	md, err := toml.Decode(string(data), &spec)
	if err != nil {
		// The walk accepts only what the decoder accepts; this is a
		// safety net, not a path a file is expected to take.
		return nil, fail(ErrorList{idx.tomlError(err, "")}, group, containers)
	}
	if errs := undecoded(md, idx); len(errs) > 0 {
		return nil, fail(errs, group, containers)
	}
	spec.SetDefaults()
	if errs := spec.validate(idx, file); len(errs) > 0 {
		return nil, fail(errs, group, containers)
	}
	return &spec, nil
}

// finish fills in what every error of one file shares (file, position,
// group, container) and sorts the list by position.
func finish(errs ErrorList, idx *positionIndex, file, group string, containers []string) ErrorList {
	for _, e := range errs {
		e.File = file
		if e.Line == 0 && idx != nil {
			p := idx.locate(e.Field)
			e.Line, e.Col = p.Line, p.Col
		}
		if e.Group == "" {
			e.Group = group
		}
		if i, ok := containerIndex(e.Field); ok && e.Container == "" && i < len(containers) {
			e.Container = containers[i]
		}
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i], errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return errs
}

// rawNames returns the group and container names of an undecoded file, for
// errors found before it could be decoded.
func rawNames(raw map[string]any) (string, []string) {
	group, _ := raw["name"].(string)
	var containers []string
	for _, c := range asSlice(raw["container"]) {
		m, _ := c.(map[string]any)
		name, _ := m["name"].(string)
		containers = append(containers, name)
	}
	return group, containers
}

// tomlError converts an error of BurntSushi/toml to a FieldError whose
// message starts with prefix.
func (x *positionIndex) tomlError(err error, prefix string) *FieldError {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return &FieldError{Line: 1, Col: 1, Message: prefix + err.Error()}
	}
	line, col := pe.Position.Line, pe.Position.Col
	// ParseError's column can be off when the error starts a line;
	// recompute it from the byte offset when that lies on the line.
	if line >= 1 && line <= len(x.lineStarts) && pe.Position.Start >= x.lineStarts[line-1] {
		if p := x.pos(pe.Position.Start); p.Line == line {
			col = p.Col
		}
	}
	if line < 1 || line > len(x.lineStarts) {
		line, col = min(max(line, 1), len(x.lineStarts)), 1
	}
	if col < 1 {
		col = 1
	}
	return &FieldError{Line: line, Col: col, Message: prefix + pe.Message}
}

// undecoded reports keys BurntSushi/toml did not decode. The walk has
// already refused unknown keys, so this only catches a schema type the walk
// does not understand.
func undecoded(md toml.MetaData, idx *positionIndex) ErrorList {
	var errs ErrorList
	seen := make(map[string]bool)
	for _, k := range md.Undecoded() {
		if len(k) > 1 && seen[toml.Key(k[:len(k)-1]).String()] {
			seen[k.String()] = true // inside an unknown table: reported there
			continue
		}
		seen[k.String()] = true
		paths := idx.withKey(k)
		if len(paths) == 0 {
			paths = []string{k.String()}
		}
		for _, p := range paths {
			errs = append(errs, &FieldError{Field: p, Message: fmt.Sprintf("unknown key %q; remove it", k[len(k)-1])})
		}
	}
	return errs
}

// checker walks decoded TOML values against the Go types they will be
// decoded into and records every unknown key and wrongly typed value.
type checker struct {
	errs ErrorList
}

func (c *checker) add(field, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

var (
	tomlUnmarshaler = reflect.TypeFor[toml.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// value checks v, found at path, against type t, the way BurntSushi/toml
// would decode it: unmarshalers first, then by kind.
func (c *checker) value(path string, v any, t reflect.Type) {
	pt := reflect.PointerTo(t)
	switch {
	case pt.Implements(tomlUnmarshaler):
		if err := reflect.New(t).Interface().(toml.Unmarshaler).UnmarshalTOML(v); err != nil {
			if isComposite(v) {
				c.wrongType(path, t, v)
			} else {
				c.add(path, "%s", err.Error())
			}
		}
		return
	case pt.Implements(textUnmarshaler):
		s, ok := textOf(v)
		if !ok {
			c.wrongType(path, t, v)
			return
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			c.add(path, "%s", err.Error())
		}
		return
	}

	ok := true
	switch t.Kind() {
	case reflect.Struct:
		c.table(path, v, t)
	case reflect.Map:
		var m map[string]any
		if m, ok = v.(map[string]any); ok {
			for _, k := range sortedKeys(m) {
				c.value(pathKey(path, k), m[k], t.Elem())
			}
		}
	case reflect.Slice, reflect.Array:
		if ok = reflect.ValueOf(v).Kind() == reflect.Slice; ok {
			for i, e := range asSlice(v) {
				c.value(pathIndex(path, i), e, t.Elem())
			}
		}
	case reflect.String:
		_, ok = v.(string)
	case reflect.Bool:
		_, ok = v.(bool)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var n int64
		if n, ok = v.(int64); ok && reflect.New(t).Elem().OverflowInt(n) {
			c.add(path, "%d is out of range for this key", n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var n int64
		if n, ok = v.(int64); ok && (n < 0 || reflect.New(t).Elem().OverflowUint(uint64(n))) {
			c.add(path, "%d is out of range for this key", n)
		}
	case reflect.Float32, reflect.Float64:
		switch v.(type) {
		case float64, int64:
		default:
			ok = false
		}
	case reflect.Pointer:
		c.value(path, v, t.Elem())
	}
	if !ok {
		c.wrongType(path, t, v)
	}
}

// table checks a TOML table against struct type t.
func (c *checker) table(path string, v any, t reflect.Type) {
	m, ok := v.(map[string]any)
	if !ok {
		c.wrongType(path, t, v)
		return
	}
	fields := tomlFields(t)
	for _, k := range sortedKeys(m) {
		f, ok := fields.byName[k]
		if !ok {
			c.add(pathKey(path, k), "%s", unknownKeyMessage(path, k, fields))
			continue
		}
		c.value(pathKey(path, k), m[k], f)
	}
}

// unknownKeyMessage says what is wrong with key and what to write instead.
func unknownKeyMessage(path, key string, fields *structFields) string {
	msg := fmt.Sprintf("unknown key %q", key)
	if s := closest(key, fields.names); s != "" {
		return msg + fmt.Sprintf("; did you mean %q?", s)
	}
	// A key of a nested table written one level too high.
	for _, name := range fields.names {
		ft := fields.byName[name]
		isArray := ft.Kind() == reflect.Slice
		if isArray {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Struct || reflect.PointerTo(ft).Implements(tomlUnmarshaler) {
			continue
		}
		if _, ok := tomlFields(ft).byName[key]; ok {
			header := unindexed(pathKey(path, name))
			if isArray {
				return msg + fmt.Sprintf("; %q belongs in a [[%s]] table", key, header)
			}
			return msg + fmt.Sprintf("; %q belongs in the [%s] table", key, header)
		}
	}
	return msg + "; the keys here are " + quoteList(fields.names)
}

// wrongType reports v at path that cannot become a t.
func (c *checker) wrongType(path string, t reflect.Type, v any) {
	want, hint := expected(path, t)
	msg := fmt.Sprintf("wrong type: expected %s, found %s", want, describe(v))
	if hint != "" {
		msg += "; " + hint
	}
	c.add(path, "%s", msg)
}

// expected names what a value of type t is written as, and how.
func expected(path string, t reflect.Type) (want, hint string) {
	pt := reflect.PointerTo(t)
	switch {
	case pt.Implements(tomlUnmarshaler):
		return "a string or a number", ""
	case pt.Implements(textUnmarshaler):
		return "a string", ""
	}
	switch t.Kind() {
	case reflect.String:
		return "a string", "put the value in double quotes"
	case reflect.Bool:
		return "a boolean", "write true or false, without quotes"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer", "write a whole number, without quotes"
	case reflect.Float32, reflect.Float64:
		return "a number", "write a number, without quotes"
	case reflect.Slice, reflect.Array:
		if e := t.Elem(); e.Kind() == reflect.Struct && !reflect.PointerTo(e).Implements(tomlUnmarshaler) {
			return "an array of tables", fmt.Sprintf("start each entry with its own [[%s]] header", unindexed(path))
		}
		return "an array", `write a list like ["a", "b"]`
	case reflect.Struct, reflect.Map:
		return "a table", fmt.Sprintf(`write it under a [%s] header, or inline as { key = "value" }`, unindexed(path))
	}
	return t.String(), ""
}

// describe names a decoded TOML value for an error message.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "…"
		}
		return fmt.Sprintf("a string (%q)", x)
	case int64:
		return fmt.Sprintf("an integer (%d)", x)
	case float64:
		return fmt.Sprintf("a float (%v)", x)
	case bool:
		return fmt.Sprintf("a boolean (%v)", x)
	case time.Time:
		return "a date-time"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// textOf renders a scalar the way BurntSushi/toml hands it to
// UnmarshalText; false for tables and arrays.
func textOf(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case encoding.TextMarshaler:
		b, err := x.MarshalText()
		return string(b), err == nil
	case fmt.Stringer:
		return x.String(), true
	case bool:
		return fmt.Sprintf("%v", x), true
	case int64:
		return fmt.Sprintf("%d", x), true
	case float64:
		return fmt.Sprintf("%f", x), true
	}
	return "", false
}

func isComposite(v any) bool {
	switch v.(type) {
	case map[string]any, []any, []map[string]any:
		return true
	}
	return false
}

// asSlice returns the elements of a TOML array or array of tables.
func asSlice(v any) []any {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice {
		return nil
	}
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// structFields are the TOML keys of a struct type, from its toml tags (the
// field name when untagged, as BurntSushi/toml does; embedded structs are
// flattened). Adding a field to a spec type is all it takes to make its key
// known.
type structFields struct {
	names  []string // in field order
	byName map[string]reflect.Type
}

var fieldCache sync.Map // reflect.Type → *structFields

func tomlFields(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{byName: make(map[string]reflect.Type)}
	f.add(t)
	fieldCache.Store(t, f)
	return f
}

func (f *structFields) add(t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if name == "-" {
			continue
		}
		if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
			f.add(sf.Type)
			continue
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if _, dup := f.byName[name]; !dup {
			f.names = append(f.names, name)
			f.byName[name] = sf.Type
		}
	}
}

// closest returns the candidate that key is most likely a misspelling of,
// or "" when none is close.
func closest(key string, candidates []string) string {
	norm := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r == '_' || r == '-' {
				return -1
			}
			return unicode.ToLower(r)
		}, s)
	}
	best, bestDist, prefix := "", 0, ""
	for _, c := range candidates {
		if norm(c) == norm(key) {
			return c
		}
		d := editDistance(strings.ToLower(key), c)
		limit := 1 + len(c)/4
		if d <= limit && (best == "" || d < bestDist) {
			best, bestDist = c, d
		}
		// "grace" for "grace_period".
		if n := norm(key); len(n) >= 4 && strings.HasPrefix(norm(c), n) && prefix == "" {
			prefix = c
		}
	}
	if best == "" {
		best = prefix
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// bytes each cost one.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// quoteList renders names as "a", "b" and "c".
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	switch len(q) {
	case 0:
		return "(none)"
	case 1:
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}
