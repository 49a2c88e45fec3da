package api

import "github.com/BurntSushi/toml"

// PeekName returns the group name of a file even when the file does not
// validate, so an error can be attached to the group it was meant for.
// It returns "" when not even the name can be read.
func PeekName(data []byte) string {
	var v struct {
		Name string `toml:"name"`
	}
	if _, err := toml.Decode(string(data), &v); err != nil || !IsDNSLabel(v.Name) {
		return ""
	}
	return v.Name
}
