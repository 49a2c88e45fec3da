package api

import (
	"encoding/json"
	"testing"
)

// TestNetworkRules decodes base (decode_test.go) with network and ports
// written on line 2 and asserts every error with its exact position.
func TestNetworkRules(t *testing.T) {
	tests := []struct {
		name string
		line string
		want []wantErr
	}{
		{"bridge", `network = "bridge"`, nil},
		{"host", `network = "host"`, nil},
		{"none", `network = "none"`, nil},
		{"unknown mode", `network = "overlay"`,
			[]wantErr{{2, 1, "network", "", `"overlay" is not a network mode: use "bridge" (the default), "host" or "none"`}}},
		{"ports with the default network", `ports = ["8080:80", "127.0.0.1:9000:9000/udp", "0.0.0.0:53:53/udp", "53:53/tcp"]`, nil},
		{"ports with network bridge", "network = \"bridge\"\nports = [\"8080:80\"]", nil},
		{"container port out of range", `ports = ["8080:80", "80:99999"]`,
			[]wantErr{{2, 21, "ports[1]", "", `"80:99999": container port 99999 is out of range 1-65535`}}},
		{"host port out of range", `ports = ["0:80"]`,
			[]wantErr{{2, 10, "ports[0]", "", `"0:80": host port 0 is out of range 1-65535`}}},
		{"port is a number", `ports = ["http:80"]`,
			[]wantErr{{2, 10, "ports[0]", "", `"http:80": host port "http" is not a number`}}},
		{"host port is required", `ports = ["80"]`,
			[]wantErr{{2, 10, "ports[0]", "", `"80": a published port needs a host port and a container port: write "80:80" (host:container)`}}},
		{"container port is required", `ports = ["80:"]`,
			[]wantErr{{2, 10, "ports[0]", "", `"80:": the container port is missing`}}},
		{"no port ranges", `ports = ["8000-8010:8000-8010"]`,
			[]wantErr{{2, 10, "ports[0]", "", `port ranges are not supported`}}},
		{"protocol tcp or udp", `ports = ["8080:80/sctp"]`,
			[]wantErr{{2, 10, "ports[0]", "", `"8080:80/sctp": protocol "sctp" is not supported: use tcp (the default) or udp`}}},
		{"empty protocol", `ports = ["8080:80/"]`,
			[]wantErr{{2, 10, "ports[0]", "", `the protocol after '/' is missing`}}},
		{"host IP is an address", `ports = ["localhost:8080:80"]`,
			[]wantErr{{2, 10, "ports[0]", "", `"localhost:8080:80": host IP "localhost" is not an IPv4 address`}}},
		{"host IP is IPv4", `ports = ["[::1]:8080:80"]`,
			[]wantErr{{2, 10, "ports[0]", "", `IPv6 host addresses are not supported`}}},
		{"too many colons", `ports = ["1.2.3.4:1:2:3"]`,
			[]wantErr{{2, 10, "ports[0]", "", `too many ':'`}}},
		{"duplicate host port", "ports = [\n  \"8080:80\",\n  \"8081:81\",\n  \"8080:82\",\n]",
			[]wantErr{{5, 3, "ports[2]", "", `"8080:82": host port 8080/tcp is already published by ports[0] "8080:80" (at web.toml:3:3); publish each host port once`}}},
		{"every address overlaps one address", `ports = ["127.0.0.1:8080:80", "8080:81"]`,
			[]wantErr{{2, 31, "ports[1]", "", `host port 8080/tcp is already published by ports[0] "127.0.0.1:8080:80"`}}},
		{"0.0.0.0 is every address", `ports = ["0.0.0.0:8080:80", "8080:81"]`,
			[]wantErr{{2, 29, "ports[1]", "", `host port 8080/tcp is already published by ports[0]`}}},
		{"same port on two addresses", `ports = ["127.0.0.1:8080:80", "127.0.0.2:8080:80"]`, nil},
		{"same port tcp and udp", `ports = ["53:53/udp", "53:53"]`, nil},
		{"same container port twice", `ports = ["8080:80", "8081:80"]`, nil},
		{"no ports with network host", "network = \"host\"\nports = [\"8080:80\"]",
			[]wantErr{{3, 1, "ports", "", `ports are published only with network = "bridge": with network = "host" the containers listen on the node's addresses themselves; remove ports`}}},
		{"no ports with network none", "network = \"none\"\nports = [\"8080:80\"]",
			[]wantErr{{3, 1, "ports", "", `with network = "none" the group has no address to forward them to`}}},
		{"empty ports with network none", "network = \"none\"\nports = []", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("web.toml", []byte(edit(t, base, 2, tt.line)))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("valid file refused: %v", err)
				}
				return
			}
			checkErrors(t, err, tt.want...)
		})
	}
}

func TestParsePort(t *testing.T) {
	tests := []struct {
		in   string
		want PortMapping
		str  string
	}{
		{"8080:80", PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: ProtocolTCP}, "8080->80/tcp"},
		{"8080:80/tcp", PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: ProtocolTCP}, "8080->80/tcp"},
		{"127.0.0.1:9000:9000/udp", PortMapping{HostIP: "127.0.0.1", HostPort: 9000, ContainerPort: 9000, Protocol: ProtocolUDP}, "127.0.0.1:9000->9000/udp"},
		{"0.0.0.0:1:65535", PortMapping{HostPort: 1, ContainerPort: 65535, Protocol: ProtocolTCP}, "1->65535/tcp"},
	}
	for _, tt := range tests {
		got, err := ParsePort(tt.in)
		if err != nil {
			t.Errorf("ParsePort(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want || got.String() != tt.str {
			t.Errorf("ParsePort(%q) = %+v (%s), want %+v (%s)", tt.in, got, got, tt.want, tt.str)
		}
	}
}

func TestPortOverlaps(t *testing.T) {
	p := func(s string) PortMapping {
		m, err := ParsePort(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		a, b string
		want bool
	}{
		{"8080:80", "8080:81", true},
		{"8080:80", "127.0.0.1:8080:80", true},
		{"127.0.0.1:8080:80", "127.0.0.1:8080:80", true},
		{"127.0.0.1:8080:80", "127.0.0.2:8080:80", false},
		{"8080:80", "8080:80/udp", false},
		{"8080:80", "8081:80", false},
	}
	for _, tt := range tests {
		if got := p(tt.a).Overlaps(p(tt.b)); got != tt.want {
			t.Errorf("%s overlaps %s = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := p(tt.b).Overlaps(p(tt.a)); got != tt.want {
			t.Errorf("%s overlaps %s = %v, want %v (not symmetric)", tt.b, tt.a, got, tt.want)
		}
	}
}

// TestNetworkValidateWithoutPositions: a spec that came as JSON gets the
// same rules, with key paths and no positions.
func TestNetworkValidateWithoutPositions(t *testing.T) {
	g := &GroupSpec{Name: "web", Network: NetworkBridge, Ports: []string{"8080:80", "8080:81"},
		Containers: []ContainerSpec{{Name: "app", Image: "berth.local/app:1"}}}
	g.SetDefaults()
	err := g.Validate()
	want := `group "web": ports[1]: "8080:81": host port 8080/tcp is already published by ports[0] "8080:80" (at ports[0]); publish each host port once`
	if err == nil || err.Error() != want {
		t.Errorf("Validate() = %v\nwant %s", err, want)
	}
	g.Ports = []string{"8080:80"}
	if err := g.Validate(); err != nil {
		t.Errorf("valid spec refused: %v", err)
	}
	if g.Network = ""; g.EffectiveNetwork() != NetworkBridge {
		t.Errorf("EffectiveNetwork() of no mode = %q, want bridge", g.EffectiveNetwork())
	}
}

func TestPortFieldError(t *testing.T) {
	data := []byte(edit(t, base, 2, `ports = ["8081:81", "8080:80"]`))
	spec, err := Decode("web.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	e := PortFieldError("web.toml", data, spec, 1, `port 8080/tcp is already published by group "api"`)
	want := `web.toml:2:21: group "web": ports[1]: port 8080/tcp is already published by group "api"`
	if e.Error() != want {
		t.Errorf("got  %s\nwant %s", e, want)
	}
	if e := PortFieldError("web.toml", nil, spec, 0, "x"); e.Line != 0 || e.Error() != `web.toml: group "web": ports[0]: x` {
		t.Errorf("without data: %s (line %d)", e, e.Line)
	}
}

func TestNetworkStatusJSON(t *testing.T) {
	st := GroupStatus{Name: "web", Network: &NetworkStatus{Mode: NetworkBridge, Address: "10.89.0.2",
		Ports: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: ProtocolTCP}}}}
	b, err := json.Marshal(st.Network)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"mode":"bridge","address":"10.89.0.2","ports":[{"host_port":8080,"container_port":80,"protocol":"tcp"}]}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
