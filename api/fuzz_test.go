package api

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzDecode proves that Decode never panics, that every error it returns
// is a sorted ErrorList whose positions lie inside the file, and that a
// spec it accepts survives encoding to TOML and decoding again unchanged.
// Seeds: testdata/fuzz/FuzzDecode, the example files and the ones below.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(base))
	files, _ := filepath.Glob("testdata/*.toml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	for _, s := range []string{
		"",
		"name = 3\n[[container]]\nimage = []\n",
		"name = \"x\"\n[container]\nname = \"a\"\n",
		"name = \"x\"\n[[container]]\nname = \"a\"\nimage = \"b\"\nmount = [{ volume = \"v\", path = \"/\" }]\n",
		"name = \"x\"\n[[container]]\nname = \"a\"\nimage = \"b\"\nresources = { cpu = 0.5, memory = 4194304, pids = 1 }\n",
		"name = \"x\"\npriority = \"high\"\ngrace_period = \"1h\"\n[[container]]\nname = \"a\"\nimage = \"b\"\nenv.\"A B\" = \"\\u00e9\"\n",
		"a = [[[[[[1]]]]]]\n[[b.c]]\n[b]\n",
		"name = \"x\"\r\n[[container]]\r\nname = \"a\"\r\nimage = \"b\"\r\n",
		"name = \"x\"\nafter = []\nrestart_backoff.factor = 1.0000001\n[[container]]\nname = \"a\"\nimage = \"b\"\nrole = \"sidecar\"\nliveness.http.port = 1\nliveness.http.headers = {}\npre_stop.exec.command = [\"a\"]\n",
		"name = \"x\"\n[[container]]\nname = \"a\"\nimage = \"b\"\n[container.readiness]\ntcp.port = 1\nperiod = \"1ns\"\ntimeout = \"1ns\"\nsuccess_threshold = 9223372036854775807\n",
		"name = \"x\"\n[[container]]\nname = \"a\"\nimage = \"b\"\nrole = \"init\"\n[container.post_start]\ntimeout = \"1s\"\n",
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := Decode("fuzz.toml", data)
		if err != nil {
			checkFuzzErrors(t, data, err)
			return
		}
		if err := spec.Validate(); err != nil {
			t.Fatalf("Decode accepted a spec that Validate refuses: %v", err)
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(spec); err != nil {
			t.Fatalf("encode an accepted spec: %v", err)
		}
		again, err := Decode("again.toml", buf.Bytes())
		if err != nil {
			t.Fatalf("re-encoded spec does not decode: %v\n%s", err, buf.Bytes())
		}
		if a, b := withoutEmpty(spec), withoutEmpty(again); !reflect.DeepEqual(a, b) {
			t.Fatalf("spec changed through encode and decode:\n%+v\n%+v\n%s", a, b, buf.Bytes())
		}
	})
}

// TestFuzzSeedCorpus keeps the checked-in seeds honest: "valid-*" seeds
// decode, "broken-*" seeds do not.
func TestFuzzSeedCorpus(t *testing.T) {
	seeds, err := filepath.Glob("testdata/fuzz/FuzzDecode/*")
	if err != nil || len(seeds) < 10 {
		t.Fatalf("seed corpus: %d files, %v", len(seeds), err)
	}
	for _, path := range seeds {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			body, ok := strings.CutPrefix(string(raw), "go test fuzz v1\n[]byte(")
			body, ok2 := strings.CutSuffix(strings.TrimSpace(body), ")")
			data, err := strconv.Unquote(body)
			if !ok || !ok2 || err != nil {
				t.Fatalf("not a []byte corpus file: %v", err)
			}
			_, err = Decode(name, []byte(data))
			switch {
			case strings.HasPrefix(name, "valid-") && err != nil:
				t.Errorf("valid seed refused: %v", err)
			case strings.HasPrefix(name, "broken-") && err == nil:
				t.Errorf("broken seed accepted")
			}
		})
	}
}

func checkFuzzErrors(t *testing.T, data []byte, err error) {
	t.Helper()
	var list ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("error %T is not a non-empty ErrorList: %v", err, err)
	}
	lines := bytes.Count(data, []byte("\n")) + 1
	for i, e := range list {
		if e.File != "fuzz.toml" || e.Line < 1 || e.Line > lines || e.Col < 1 || e.Message == "" {
			t.Fatalf("error without a file position in the file (%d lines): %+v", lines, *e)
		}
		if i > 0 {
			p := list[i-1]
			if p.Line > e.Line || p.Line == e.Line && p.Col > e.Col {
				t.Fatalf("errors not sorted by position:\n%v", err)
			}
		}
	}
}

// withoutEmpty returns a copy of g with empty slices and maps set to nil,
// also behind pointers (probes, hooks): TOML cannot tell an empty list from
// an absent one.
func withoutEmpty(g *GroupSpec) GroupSpec {
	c := *g
	clearEmpty(reflect.ValueOf(&c).Elem())
	return c
}

func clearEmpty(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				clearEmpty(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			v.SetZero()
			return
		}
		// Copy before changing elements, so the caller's spec is left alone.
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(s, v)
		for i := 0; i < s.Len(); i++ {
			clearEmpty(s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		if v.Len() == 0 {
			v.SetZero()
		}
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		// Copy the value pointed to, as for slices.
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(v.Elem())
		clearEmpty(p.Elem())
		v.Set(p)
	}
}
