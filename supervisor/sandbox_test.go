package supervisor

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-project/berth/api"
)

func TestCheckHostVolumes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		volumes  []api.VolumeSpec
		prefixes []string
		wantErr  string // substring; "" means allowed
	}{
		{"no volumes", nil, nil, ""},
		{"other types ignore the path", []api.VolumeSpec{{Name: "e", Type: api.VolumeEmpty, Path: "/etc"},
			{Name: "t", Type: api.VolumeTmpfs, Path: "/etc"}}, nil, ""},
		{"under a prefix", []api.VolumeSpec{{Name: "d", Type: api.VolumeHost, Path: "/srv/data"}}, []string{"/srv"}, ""},
		{"the prefix itself", []api.VolumeSpec{{Name: "d", Type: api.VolumeHost, Path: "/srv"}}, []string{"/srv"}, ""},
		{"prefix with a trailing slash", []api.VolumeSpec{{Name: "d", Type: api.VolumeHost, Path: "/srv/data"}}, []string{"/srv/"}, ""},
		{"second prefix", []api.VolumeSpec{{Name: "d", Type: api.VolumeHost, Path: "/mnt/x/"}}, []string{"/srv", "/mnt"}, ""},
		{"sibling sharing the prefix's letters", []api.VolumeSpec{{Name: "d", Type: api.VolumeHost, Path: "/srvx/data"}},
			[]string{"/srv"}, `volume "d": host path /srvx/data is not under an allowed prefix (allowed: /srv`},
		{"dot-dot out of the prefix", []api.VolumeSpec{{Name: "d", Type: api.VolumeHost, Path: "/srv/../etc"}},
			[]string{"/srv"}, "host path /srv/../etc is not under"},
		{"relative path", []api.VolumeSpec{{Name: "d", Type: api.VolumeHost, Path: "srv/data"}}, []string{"/srv"}, "not under"},
		{"no prefixes", []api.VolumeSpec{{Name: "d", Type: api.VolumeHost, Path: "/srv"}}, nil, "none are allowed; set volumes.host_path_prefixes"},
		{"second volume refused", []api.VolumeSpec{{Name: "ok", Type: api.VolumeHost, Path: "/srv/a"},
			{Name: "bad", Type: api.VolumeHost, Path: "/etc"}}, []string{"/srv"}, `volume "bad"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckHostVolumes(&api.GroupSpec{Name: "web", Volumes: tc.volumes}, tc.prefixes)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("allowed; want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && (!strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), `group "web"`)):
				t.Errorf("error %q; want it to name the group and contain %q", err, tc.wantErr)
			case tc.wantErr != "" && !errors.Is(err, api.ErrInvalid):
				t.Errorf("error %v is not ErrInvalid", err)
			}
		})
	}
}

func TestSandboxMounts(t *testing.T) {
	sb := &Sandbox{
		Group:   "web",
		Files:   map[string]string{"/etc/resolv.conf": "/s/resolv.conf", "/etc/hosts": "/s/hosts", "/etc/motd": "/s/motd"},
		Volumes: map[string]string{"data": "/v/data", "cache": "/v/cache"},
	}
	bind := func(dst, src, mode string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", mode}}
	}
	for _, tc := range []struct {
		name    string
		mounts  []api.MountSpec
		want    []specs.Mount
		wantErr string
	}{
		{"etc files only", nil, []specs.Mount{bind("/etc/hosts", "/s/hosts", "ro"), bind("/etc/resolv.conf", "/s/resolv.conf", "ro")}, ""},
		{"volumes after the etc files, rw unless read-only",
			[]api.MountSpec{{Volume: "data", Path: "/data"}, {Volume: "cache", Path: "/cache", ReadOnly: true}},
			[]specs.Mount{bind("/etc/hosts", "/s/hosts", "ro"), bind("/etc/resolv.conf", "/s/resolv.conf", "ro"),
				bind("/data", "/v/data", "rw"), bind("/cache", "/v/cache", "ro")}, ""},
		{"unknown volume", []api.MountSpec{{Volume: "logs", Path: "/logs"}}, nil, `container "app" mounts volume "logs" which the group does not define`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sb.Mounts(&api.ContainerSpec{Name: "app", Mounts: tc.mounts})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, api.ErrInvalid) {
					t.Errorf("err %v; want ErrInvalid containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Mounts = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if got, err := (&Sandbox{}).Mounts(&api.ContainerSpec{Name: "app"}); err != nil || len(got) != 0 {
		t.Errorf("empty sandbox: %v, %v; want no mounts", got, err)
	}
}
