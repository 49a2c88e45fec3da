#!/usr/bin/env bash
# install-deps.sh installs what agentd, `make run` and the integration tests
# need on a Debian or Ubuntu machine, and checks that it is there:
#
#   containerd (with containerd-shim-runc-v2), runc, containernetworking-plugins,
#   busybox-static (/bin/busybox, for the demo and test images), iproute2 (ip),
#   iptables, ca-certificates, systemd (systemd-analyze lints the unit file); and
#   the Go toolchain (not installed, only checked).
#
# Usage:
#   contrib/scripts/install-deps.sh           install what is missing (as root), then check
#   contrib/scripts/install-deps.sh --check   only report; exit 1 if something is missing
#
# It is idempotent: it runs `apt-get update` and `apt-get install` only when a
# package is missing, and does nothing else on a machine that has everything.
# A package counts as present when dpkg has it installed, or when the files it
# would provide are already there (a containerd installed by hand or from
# Docker's containerd.io package is left alone rather than replaced).
#
# Exit status: 0 everything is there; 1 something is missing (or could not be
# installed); 2 usage error.
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins busybox-static iproute2 iptables ca-certificates systemd)

# The Go version this module asks for (go.mod's go line), shown when go is
# missing.
GO_WANT=1.26.8
gomod="$(dirname "$0")/../../go.mod"
if [[ -r "$gomod" ]]; then
	GO_WANT=$(awk '$1 == "go" { print $2; exit }' "$gomod")
	GO_WANT=${GO_WANT:-1.26.8}
fi
# Release archives are named go1.N.P: "1.26" in go.mod means go1.26.0.
[[ "$GO_WANT" == *.*.* ]] || GO_WANT="$GO_WANT.0"

# sbin directories hold runc, ip and iptables; a non-root PATH may lack them.
SBIN_PATH="/usr/local/sbin:/usr/sbin:/sbin"
ORIG_PATH="$PATH"
export PATH="$PATH:$SBIN_PATH"

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

check_only=false
case "${1-}" in
"") ;;
--check) check_only=true ;;
-h | --help)
	usage
	exit 0
	;;
*)
	echo "install-deps.sh: unknown argument ${1}; use --check or no argument" >&2
	exit 2
	;;
esac
if [[ $# -gt 1 ]]; then
	echo "install-deps.sh: too many arguments" >&2
	exit 2
fi

say() { printf 'install-deps: %s\n' "$*"; }

# pkg_installed PKG: dpkg has PKG installed.
pkg_installed() {
	command -v dpkg-query >/dev/null 2>&1 || return 1
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# pkg_files PKG: the first file PKG would provide that exists, if any (for
# packages installed some other way than dpkg).
pkg_files() {
	local f
	case "$1" in
	containerd) set -- containerd ;;
	runc) set -- runc ;;
	containernetworking-plugins) set -- /usr/lib/cni/bridge /opt/cni/bin/bridge ;;
	busybox-static) set -- /bin/busybox ;;
	iproute2) set -- ip ;;
	iptables) set -- iptables ;;
	ca-certificates) set -- /etc/ssl/certs/ca-certificates.crt ;;
	*) return 1 ;;
	esac
	for f in "$@"; do
		if [[ "$f" == /* ]]; then
			[[ -e "$f" ]] && { echo "$f"; return 0; }
		elif command -v "$f" >/dev/null 2>&1; then
			command -v "$f"
			return 0
		fi
	done
	return 1
}

# missing_packages: the packages neither dpkg nor the file system has.
missing_packages() {
	local p
	for p in "${PACKAGES[@]}"; do
		if pkg_installed "$p"; then
			continue
		fi
		if pkg_files "$p" >/dev/null; then
			continue
		fi
		echo "$p"
	done
}

# report_packages prints one line per package.
report_packages() {
	local p f
	for p in "${PACKAGES[@]}"; do
		if pkg_installed "$p"; then
			say "  package $p: installed ($(dpkg-query -W -f='${Version}' "$p"))"
		elif f=$(pkg_files "$p"); then
			say "  package $p: not installed by dpkg, but $f is there; leaving it alone"
		else
			say "  package $p: MISSING"
		fi
	done
}

# check_binaries prints the state of every binary the agent and the tests
# run and returns 1 if one is missing.
check_binaries() {
	local ok=0 b path
	for b in containerd containerd-shim-runc-v2 runc ip iptables; do
		if path=$(command -v "$b" 2>/dev/null); then
			case ":${ORIG_PATH}:" in
			*":$(dirname "$path"):"*) say "  binary $b: $path" ;;
			*) say "  binary $b: $path (note: $(dirname "$path") is not in your PATH; agentd's PATH needs it)" ;;
			esac
		else
			say "  binary $b: MISSING"
			ok=1
		fi
	done
	# The image builder reads busybox from /bin/busybox (see
	# contrib/imagebuild); a busybox elsewhere works with build-images -busybox.
	if [[ -x /bin/busybox ]]; then
		say "  binary busybox: /bin/busybox"
	elif path=$(command -v busybox 2>/dev/null); then
		say "  binary busybox: $path (note: the image builder looks for /bin/busybox; pass build-images -busybox $path)"
	else
		say "  binary busybox: MISSING"
		ok=1
	fi
	return "$ok"
}

# check_go reports the Go toolchain; returns 1 if there is none.
check_go() {
	local g
	if g=$(command -v go 2>/dev/null) || { [[ -x /usr/local/go/bin/go ]] && g=/usr/local/go/bin/go; }; then
		say "  go: $g ($("$g" env GOVERSION 2>/dev/null || echo "version unknown"))"
		return 0
	fi
	say "  go: MISSING"
	say "    Berth needs Go $GO_WANT or newer. Install it from https://go.dev/dl/, e.g.:"
	say "      curl -fsSL https://go.dev/dl/go${GO_WANT}.linux-$(dpkg --print-architecture 2>/dev/null || echo amd64).tar.gz | tar -C /usr/local -xz"
	say "    (Debian's golang-go package is older than that.) The Makefile adds /usr/local/go/bin to PATH."
	return 1
}

# final_check prints the state of everything and returns 1 if anything is
# missing.
final_check() {
	local ok=0
	say "packages:"
	report_packages
	[[ -z "$(missing_packages)" ]] || ok=1
	say "binaries:"
	check_binaries || ok=1
	say "toolchain:"
	check_go || ok=1
	return "$ok"
}

if $check_only; then
	if final_check; then
		say "OK: everything Berth needs is installed"
		exit 0
	fi
	say "FAILED: something is missing; run contrib/scripts/install-deps.sh as root (or make deps) to install it"
	exit 1
fi

mapfile -t missing < <(missing_packages)
if [[ ${#missing[@]} -eq 0 ]]; then
	say "all packages present; nothing to install"
else
	say "missing packages: ${missing[*]}"
	if [[ "$(id -u)" -ne 0 ]]; then
		say "ERROR: installing packages needs root; run: sudo $0" >&2
		exit 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		say "ERROR: apt-get not found: this script installs Debian packages; install the equivalents of ${missing[*]} with your distribution's package manager" >&2
		exit 1
	fi
	say "running apt-get update"
	apt-get update
	say "running apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
	say "installed: ${missing[*]}"
fi

if final_check; then
	say "OK: everything Berth needs is installed"
	exit 0
fi
say "FAILED: something is still missing after the install (see above)" >&2
exit 1
