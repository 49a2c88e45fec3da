package api

import (
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// This file indexes where every key of a group file is written.
//
// BurntSushi/toml stays the decoder of group files. But its MetaData keeps
// one position per key path *without array indices*: the `name` of the first
// and of the second [[container]] share the entry "container.name", so it
// cannot say where a problem inside the second container is. The parser of
// go-toml/v2/unstable gives the byte range of every node, so one pass over
// its AST records the position of every key under its full path with indices
// ("container[1].mount[0].volume", "container[0].env.FOO", inline tables and
// arrays of inline tables included).
//
// The second parser is only an index of positions: it never produces values.
// If it stops early (the two parsers disagree on some corner of TOML), what it
// indexed so far is kept, and lookups fall back to the closest known parent
// path, then to line 1 column 1, so a missing position never hides an error.

// filePos is a 1-based line and column; columns count bytes, as
// BurntSushi/toml's ParseError does. The zero value means "no position".
type filePos struct{ Line, Col int }

// indexedKey is one key of the file: its path with indices and its key parts
// without them, the form BurntSushi's MetaData uses.
type indexedKey struct {
	path string
	key  []string
}

// positionIndex maps key paths with indices to where they are written.
type positionIndex struct {
	data       []byte
	lineStarts []int
	at         map[string]filePos
	keys       []indexedKey   // every key, in document order
	arrays     map[string]int // [[x]] tables seen, by array path
	err        error          // why the parser stopped early, if it did
}

// indexPositions parses data and records the position of every key path.
func indexPositions(data []byte) *positionIndex {
	x := &positionIndex{
		data:       data,
		lineStarts: []int{0},
		at:         make(map[string]filePos),
		arrays:     make(map[string]int),
	}
	for i, c := range data {
		if c == '\n' {
			x.lineStarts = append(x.lineStarts, i+1)
		}
	}
	var p unstable.Parser
	p.Reset(data)
	table, tableKey := "", []string(nil)
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table, tableKey = x.header(e)
		case unstable.KeyValue:
			x.keyValue(table, tableKey, e)
		}
	}
	x.err = p.Error()
	return x
}

// header records a [table] or [[array table]] header and returns the path
// that the following keys belong to.
func (x *positionIndex) header(e *unstable.Node) (string, []string) {
	path, key := "", []string(nil)
	start := filePos{}
	it := e.Key()
	for it.Next() {
		k := it.Node()
		if start.Line == 0 {
			start = x.headerStart(int(k.Raw.Offset))
		}
		name := string(k.Data)
		key = append(key, name)
		path = pathKey(path, name)
		last := it.IsLast()
		switch {
		case last && e.Kind == unstable.ArrayTable:
			x.record(path, key, x.pos(int(k.Raw.Offset)))
			n := x.arrays[path]
			x.arrays[path] = n + 1
			path = pathIndex(path, n)
			x.record(path, nil, start)
		case last:
			x.record(path, key, start)
		default:
			x.record(path, key, x.pos(int(k.Raw.Offset)))
			if n := x.arrays[path]; n > 0 {
				// [container.resources] after [[container]] belongs to
				// the last container.
				path = pathIndex(path, n-1)
			}
		}
	}
	return path, key
}

// keyValue records `a.b = value` under table, and whatever value contains.
func (x *positionIndex) keyValue(table string, tableKey []string, e *unstable.Node) {
	path := table
	key := append([]string(nil), tableKey...)
	it := e.Key()
	for it.Next() {
		k := it.Node()
		name := string(k.Data)
		key = append(key, name)
		path = pathKey(path, name)
		x.record(path, key, x.pos(int(k.Raw.Offset)))
	}
	x.value(path, key, e.Value())
}

// value records the keys of inline tables and the elements of arrays.
func (x *positionIndex) value(path string, key []string, v *unstable.Node) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				x.keyValue(path, key, c)
			}
		}
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			elem := pathIndex(path, i)
			if off := valueOffset(c); off >= 0 {
				x.record(elem, nil, x.pos(off))
			}
			x.value(elem, key, c)
			i++
		}
	}
}

// valueOffset is where a value starts. Arrays carry no range of their own,
// so an array starts where its first element does; -1 if unknown.
func valueOffset(v *unstable.Node) int {
	if v.Kind != unstable.Array {
		return int(v.Raw.Offset)
	}
	it := v.Children()
	for it.Next() {
		if c := it.Node(); c.Kind != unstable.Comment {
			return valueOffset(c)
		}
	}
	return -1
}

// record keeps the first position seen for path; key, if set, is listed
// for lookups by key parts.
func (x *positionIndex) record(path string, key []string, p filePos) {
	if _, ok := x.at[path]; ok {
		return
	}
	x.at[path] = p
	if key != nil {
		x.keys = append(x.keys, indexedKey{path: path, key: append([]string(nil), key...)})
	}
}

// headerStart is the position of the '[' that opens the header whose first
// key starts at off: "[[ container.mount ]]" starts before "container".
func (x *positionIndex) headerStart(off int) filePos {
	i := off
	for i > 0 {
		c := x.data[i-1]
		if c != '[' && c != ' ' && c != '\t' {
			break
		}
		i--
	}
	for i < off && x.data[i] != '[' {
		i++
	}
	return x.pos(i)
}

// pos converts a byte offset to a line and column.
func (x *positionIndex) pos(off int) filePos {
	if off < 0 {
		off = 0
	}
	if off > len(x.data) {
		off = len(x.data)
	}
	line := sort.Search(len(x.lineStarts), func(i int) bool { return x.lineStarts[i] > off })
	return filePos{Line: line, Col: off - x.lineStarts[line-1] + 1}
}

// lookup returns the position of exactly path.
func (x *positionIndex) lookup(path string) (filePos, bool) {
	if x == nil {
		return filePos{}, false
	}
	p, ok := x.at[path]
	return p, ok
}

// locate returns the position of path, else of its closest indexed parent,
// else line 1 column 1. A nil index (a spec that came without a file) has
// no positions.
func (x *positionIndex) locate(path string) filePos {
	if x == nil {
		return filePos{}
	}
	for {
		if p, ok := x.at[path]; ok {
			return p
		}
		parent, ok := parentPath(path)
		if !ok {
			return filePos{Line: 1, Col: 1}
		}
		path = parent
	}
}

// withKey returns the paths of every key whose parts (without indices) are
// key, in document order.
func (x *positionIndex) withKey(key []string) []string {
	if x == nil {
		return nil
	}
	var out []string
	for _, k := range x.keys {
		if equalStrings(k.key, key) {
			out = append(out, k.path)
		}
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Key paths name a value in a group file the way errors show it:
// dotted keys, "[i]" for array elements, and keys that are not bare TOML keys
// in double quotes: `container[1].env."A.B"`. The index and the validator
// build them with the same two helpers, so they always agree.

// pathKey appends key to path.
func pathKey(path, key string) string {
	if !isBareKey(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// pathIndex appends an array index to path.
func pathIndex(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// parentPath strips the last key or index of path; false for the root "".
func parentPath(path string) (string, bool) {
	if path == "" {
		return "", false
	}
	last, i := 0, 0
	for i < len(path) {
		last = i
		switch path[i] {
		case '[':
			j := strings.IndexByte(path[i:], ']')
			if j < 0 {
				return path[:i], true
			}
			i += j + 1
			continue
		case '.':
			i++
		}
		i = skipPathKey(path, i)
	}
	return path[:last], true
}

// skipPathKey returns the end of the key that starts at path[i].
func skipPathKey(path string, i int) int {
	if i < len(path) && path[i] == '"' {
		for j := i + 1; j < len(path); j++ {
			switch path[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
		return len(path)
	}
	for i < len(path) && path[i] != '.' && path[i] != '[' {
		i++
	}
	return i
}

// unindexed drops the array indices of path: "container[1].mount" becomes
// "container.mount", the name of the [[header]] that writes it.
func unindexed(path string) string {
	var b strings.Builder
	inQuote := false
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case inQuote && c == '\\':
			b.WriteByte(c)
			i++
			if i < len(path) {
				b.WriteByte(path[i])
			}
			continue
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '[':
			if j := strings.IndexByte(path[i:], ']'); j >= 0 {
				i += j
				continue
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

// containerIndex returns i when path is inside container[i].
func containerIndex(path string) (int, bool) {
	rest, ok := strings.CutPrefix(path, "container[")
	if !ok {
		return 0, false
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return 0, false
	}
	i, err := strconv.Atoi(rest[:end])
	return i, err == nil && i >= 0
}
