# Berth: build, test and demo targets. `make help` lists them.
#
# Every recipe runs as one bash script (.ONESHELL) with -euo pipefail, so a
# failing command, an unset variable or a failing stage of a pipe fails the
# target.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
# Targets run one after another, in the order given (make test: unit, fuzz,
# integration), also under -j.
.NOTPARALLEL:
.DEFAULT_GOAL := build

# Go from /usr/local/go when it is not already in PATH.
export PATH := $(PATH):/usr/local/go/bin

GO ?= go
GOFMT ?= gofmt
PREFIX ?= /usr/local

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/berth-project/berth/agent.Version=$(VERSION) -X main.version=$(VERSION)

OUT := _output
BIN := $(OUT)/bin
IMAGES := $(OUT)/images

# Extra arguments for `go run ./integration/bench`.
BENCH_FLAGS ?=

# The demo (make run / stop / clean-demo). Its groups are copies of
# contrib/examples in $(DEMO_DIR)/groups.d: agentd refuses `agentctl delete`
# for a group defined by a file, so clean-demo deletes the copies, which
# must not be the files in the repository.
DEMO_DIR := $(CURDIR)/$(OUT)/demo
DEMO_GROUPS := $(DEMO_DIR)/groups.d
DEMO_PIDFILE := $(DEMO_DIR)/agentd.pid
DEMO_LOG := $(DEMO_DIR)/agentd.log
DEMO_RUN_DIR ?= /run/berth-demo
DEMO_SOCKET ?= /run/berth/agent.sock
DEMO_NAMESPACE ?= berth-demo
# The demo's agentd binary, and extra flags for it, e.g. --log-level debug.
DEMO_AGENTD ?= $(CURDIR)/$(BIN)/agentd
DEMO_AGENTD_FLAGS ?=
DEMO_CONTAINERD_SOCK := $(DEMO_RUN_DIR)/containerd/containerd.sock
DEMO_AGENTCTL := $(CURDIR)/$(BIN)/agentctl --socket $(DEMO_SOCKET)
# How the demo's agentctl is spelled in the hints make run prints.
ifeq ($(DEMO_SOCKET),/run/berth/agent.sock)
DEMO_HINT := $(BIN)/agentctl
else
DEMO_HINT := $(BIN)/agentctl --socket $(DEMO_SOCKET)
endif

.PHONY: help build deps images demo-not-running run stop clean-demo test test-unit test-fuzz \
	test-integration bench lint install clean

help: ## list the targets
	@echo "Berth make targets (make TARGET):"
	awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  %-17s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	echo "Variables: GO=$(GO) PREFIX=$(PREFIX) VERSION=$(VERSION) DEMO_SOCKET=$(DEMO_SOCKET)"

build: ## build agentd and agentctl into _output/bin
	mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/agentd ./cmd/agentctl

deps: ## install containerd, runc, busybox-static, ... (Debian, as root) and check them
	contrib/scripts/install-deps.sh

images: ## build the demo/test images into _output/images (busybox.tar, testapp.tar)
	$(GO) run ./contrib/imagebuild/cmd/build-images -out $(IMAGES)

# Shell functions of the demo targets, pasted at the start of their recipes.
define DEMO_FUNCS
# demo_pid prints the demo agentd's pid when it runs.
demo_pid() {
	local p
	[[ -r $(DEMO_PIDFILE) ]] || return 1
	p=$$(<$(DEMO_PIDFILE))
	[[ $$p =~ ^[0-9]+$$ ]] && kill -0 "$$p" 2>/dev/null || return 1
	# (No pipe into grep -q here: under pipefail its early exit can fail it.)
	[[ "$$(tr '\0' ' ' <"/proc/$$p/cmdline" 2>/dev/null)" == *agentd* ]] || return 1
	echo "$$p"
}
# demo_answers: the demo's socket answers.
demo_answers() { $(DEMO_AGENTCTL) --timeout 2s version >/dev/null 2>&1; }
# demo_start starts agentd in the background, in its own session so it
# outlives make and the terminal, and waits up to 30 s for its socket.
demo_start() {
	mkdir -p $(DEMO_DIR)/state $(DEMO_GROUPS)
	echo "starting agentd (log: $(OUT)/demo/agentd.log)"
	setsid bash -c 'echo $$$$ >$(DEMO_PIDFILE); exec "$$0" "$$@"' \
		$(DEMO_AGENTD) \
		--state-dir $(DEMO_DIR)/state \
		--run-dir $(DEMO_RUN_DIR) \
		--groups-dir $(DEMO_GROUPS) \
		--socket $(DEMO_SOCKET) \
		--namespace $(DEMO_NAMESPACE) \
		--managed-containerd auto \
		$(DEMO_AGENTD_FLAGS) \
		</dev/null >>$(DEMO_LOG) 2>&1 &
	local deadline=$$((SECONDS + 30))
	sleep 0.2
	while ! demo_answers; do
		# (Twice, as the pid file may not be written yet.)
		if ! demo_pid >/dev/null && ! { sleep 1; demo_pid >/dev/null; }; then
			echo "agentd exited; the end of $(OUT)/demo/agentd.log:" >&2
			tail -n 20 $(DEMO_LOG) >&2 || true
			return 1
		fi
		if (( SECONDS >= deadline )); then
			echo "agentd (pid $$(demo_pid)) did not answer at $(DEMO_SOCKET) within 30 s; see $(OUT)/demo/agentd.log" >&2
			return 1
		fi
		sleep 0.5
	done
	echo "agentd (pid $$(demo_pid)) answers at $(DEMO_SOCKET)"
}
# demo_stop sends SIGTERM to the demo agentd and waits up to 30 s for it.
demo_stop() {
	local p
	if ! p=$$(demo_pid); then
		rm -f $(DEMO_PIDFILE)
		return 1
	fi
	kill -TERM "$$p"
	local deadline=$$((SECONDS + 30))
	while kill -0 "$$p" 2>/dev/null; do
		if (( SECONDS >= deadline )); then
			echo "agentd (pid $$p) is still running 30 s after SIGTERM; see $(OUT)/demo/agentd.log" >&2
			return 2
		fi
		sleep 0.2
	done
	rm -f $(DEMO_PIDFILE)
	echo "stopped agentd (pid $$p)"
}
endef

# Refuse before building when the demo already runs.
demo-not-running:
	@$(DEMO_FUNCS)
	if p=$$(demo_pid); then
		echo "The demo agentd is already running (pid $$p); make stop first."
		exit 1
	fi
	if [[ -x $(CURDIR)/$(BIN)/agentctl ]] && demo_answers; then
		echo "An agentd that is not the demo's answers at $(DEMO_SOCKET); stop it first, or run make run DEMO_SOCKET=/run/berth-demo/agent.sock." >&2
		exit 1
	fi

run: demo-not-running deps build images ## start the demo: agentd in the background with the groups of contrib/examples
	@$(DEMO_FUNCS)
	if p=$$(demo_pid); then
		echo "The demo agentd is already running (pid $$p); make stop first."
		exit 1
	fi
	if demo_answers; then
		echo "An agentd that is not the demo's answers at $(DEMO_SOCKET); stop it first, or run make run DEMO_SOCKET=/run/berth-demo/agent.sock." >&2
		exit 1
	fi
	rm -f $(DEMO_PIDFILE)
	demo_start
	$(DEMO_AGENTCTL) image import $(IMAGES)/busybox.tar
	$(DEMO_AGENTCTL) image import $(IMAGES)/testapp.tar
	# The groups come after the images they run; files already there (an
	# earlier run, perhaps edited) stay as they are.
	for f in contrib/examples/*.toml; do
		if [[ ! -e $(DEMO_GROUPS)/$${f##*/} ]]; then
			cp "$$f" $(DEMO_GROUPS)/
			echo "added group file $(OUT)/demo/groups.d/$${f##*/}"
		fi
	done
	# Cluster groups ([placement]) are not files of groups.d: they go
	# through agentctl into the Raft state of the demo's one-node cluster
	# (the embedded default), whose scheduler places them on this node.
	# Like the files above, one that exists already (an earlier run,
	# perhaps changed or scaled since) stays as it is.
	have=$$($(DEMO_AGENTCTL) get | awk '/^CLUSTER GROUP/ { c = 1; next } c && NF { print $$1 }')
	for f in contrib/examples/cluster/*.toml; do
		name=$$(sed -n 's/^name *= *"\(.*\)".*/\1/p' "$$f" | head -n 1)
		if ! grep -qxF -- "$$name" <<<"$$have"; then
			$(DEMO_AGENTCTL) apply -f "$$f"
		fi
	done
	sleep 5
	echo
	echo "\$$ $(DEMO_HINT) get"
	$(DEMO_AGENTCTL) get || true
	# (echo, not a here-document: make strips the indentation of recipe lines.)
	echo
	echo "The demo runs: agentd (pid $$(demo_pid)) with the groups in $(OUT)/demo/groups.d"
	echo "(copies of contrib/examples: edit, add or remove files there and agentd follows)."
	echo "agentd's log: $(OUT)/demo/agentd.log"
	echo
	echo "Next, try:"
	echo "  $(DEMO_HINT) get"
	echo "  $(DEMO_HINT) describe web"
	echo "  $(DEMO_HINT) logs -f web"
	echo "  $(DEMO_HINT) events -f"
	echo "  $(DEMO_HINT) shards cache       the shard map of the cluster group cache"
	echo "  $(DEMO_HINT) scale hello --replicas 2"
	echo "  make stop          stop agentd; the groups keep running"
	echo "  make clean-demo    delete the groups, stop agentd and containerd, remove the demo's files"

stop: ## stop the demo agentd (SIGTERM); its groups keep running
	@$(DEMO_FUNCS)
	rc=0
	demo_stop || rc=$$?
	case $$rc in
	0) echo "The groups keep running; make run picks them up again, make clean-demo removes them." ;;
	1) echo "The demo agentd is not running. (make clean-demo removes the demo's groups and files.)" ;;
	*) exit 1 ;;
	esac

clean-demo: build ## delete the demo's groups, stop its agentd and containerd, remove _output/demo
	@$(DEMO_FUNCS)
	case "$(DEMO_RUN_DIR)" in
	/?*/?*) ;;
	*) echo "DEMO_RUN_DIR=$(DEMO_RUN_DIR): refusing to remove that; use a directory of its own such as /run/berth-demo" >&2; exit 2 ;;
	esac
	if [[ ! -e $(DEMO_DIR) ]]; then
		if [[ -e $(DEMO_RUN_DIR) && -z "$(FORCE)" ]]; then
			echo "No demo of this checkout ($(OUT)/demo does not exist), but $(DEMO_RUN_DIR) does: another demo may be using it, so it is left alone (make clean-demo FORCE=1 removes it)." >&2
			exit 1
		fi
		if [[ ! -e $(DEMO_RUN_DIR) ]]; then
			echo "No demo to clean up."
			exit 0
		fi
	fi
	# The groups are deleted by agentd, so it must run: start it again if
	# make stop stopped it.
	if ! demo_pid >/dev/null; then
		if demo_answers; then
			echo "An agentd that is not the demo's answers at $(DEMO_SOCKET); stop it first, so the demo's agentd can be started to delete its groups." >&2
			exit 1
		fi
		rm -f $(DEMO_PIDFILE)
		if ! demo_start; then
			echo "Could not start the demo agentd to delete the groups." >&2
			[[ -n "$(FORCE)" ]] || { echo "Fix that and run make clean-demo again, or make clean-demo FORCE=1 to remove the demo's files anyway (its containers may keep running)." >&2; exit 1; }
		fi
	fi
	if demo_pid >/dev/null; then
		# File groups go when their file goes; groups applied with agentctl
		# are deleted with agentctl. delete waits until each one is gone.
		rm -f $(DEMO_GROUPS)/*.toml
		deadline=$$((SECONDS + 120))
		while :; do
			if ! out=$$($(DEMO_AGENTCTL) --timeout 10s get 2>/dev/null); then
				echo "agentctl get failed; see $(OUT)/demo/agentd.log" >&2
				exit 1
			fi
			names=$$(awk 'NR > 1 { print $$1 }' <<<"$$out")
			[[ -n "$$names" ]] || break
			if (( SECONDS >= deadline )); then
				echo "These groups are still there after 120 s: $$names" >&2
				echo "agentd keeps running (see $(OUT)/demo/agentd.log); run make clean-demo again." >&2
				exit 1
			fi
			for n in $$names; do
				$(DEMO_AGENTCTL) --timeout 60s delete "$$n" 2>/dev/null || true
			done
			sleep 1
		done
		echo "all demo groups deleted"
		demo_stop || [[ $$? -eq 1 ]]
	fi
	# Stop the managed containerd: the process with the listening socket
	# $(DEMO_CONTAINERD_SOCK) (a containerd outlives agentd, as shims do).
	ino=$$(awk -v s=$(DEMO_CONTAINERD_SOCK) '$$8 == s && $$4 == "00010000" { print $$7; exit }' /proc/net/unix)
	pid=
	if [[ -n "$$ino" ]]; then
		pid=$$(find /proc/[0-9]*/fd -lname "socket:\[$$ino\]" 2>/dev/null | head -n 1 | cut -d/ -f3 || true)
	fi
	if [[ -n "$$pid" ]] && [[ "$$(cat /proc/$$pid/comm 2>/dev/null)" == containerd ]]; then
		echo "stopping the demo's containerd (pid $$pid)"
		kill -TERM "$$pid"
		deadline=$$((SECONDS + 15))
		while kill -0 "$$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
		if kill -0 "$$pid" 2>/dev/null; then
			echo "containerd (pid $$pid) still runs after 15 s; sending SIGKILL"
			kill -KILL "$$pid" || true
			sleep 0.5
		fi
	elif [[ ! -e $(DEMO_CONTAINERD_SOCK) ]]; then
		echo "no demo containerd at $(DEMO_CONTAINERD_SOCK) (the demo used a containerd that was already running; its namespace $(DEMO_NAMESPACE) keeps the imported images: ctr -n $(DEMO_NAMESPACE) images ls)"
	fi
	# Unmount what is left under the demo's directories (pinned network
	# namespaces, tmpfs volumes, rootfs), deepest first.
	mounts() { awk -v a=$(DEMO_RUN_DIR)/ -v b=$(DEMO_DIR)/ 'index($$5"/", a) == 1 || index($$5"/", b) == 1 { print $$5 }' /proc/self/mountinfo | sort -r; }
	for m in $$(mounts); do
		umount "$$m" 2>/dev/null || umount -l "$$m" || true
	done
	if [[ -n "$$(mounts)" ]]; then
		echo "still mounted, so nothing is removed:" >&2
		mounts >&2
		exit 1
	fi
	rm -rf --one-file-system $(DEMO_RUN_DIR) $(DEMO_DIR)
	# The namespace's (now empty) cgroups, and runc's state for it.
	for d in /sys/fs/cgroup/*/$(DEMO_NAMESPACE) /sys/fs/cgroup/$(DEMO_NAMESPACE); do
		[[ -d "$$d" ]] && find "$$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	rm -rf /run/containerd/runc/$(DEMO_NAMESPACE)
	echo "removed $(DEMO_RUN_DIR) and $(OUT)/demo"

test: test-unit test-fuzz test-integration ## run all tests: unit, fuzz, integration (root)

test-unit: ## unit tests: every package but ./integration/...
	@echo "=== unit tests ==="
	pkgs=$$($(GO) list ./... | grep -v /integration)
	$(GO) test -count=1 $$pkgs

test-fuzz: ## fuzz api.Decode for 20 s
	@echo "=== fuzz test: FuzzDecode, 20s ==="
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=20s ./api/

test-integration: ## integration tests (root, containerd, runc); log in _output/integration.log
	@echo "=== integration tests ==="
	contrib/scripts/install-deps.sh --check
	mkdir -p $(OUT)
	set -o pipefail; $(GO) test -count=1 -timeout 20m -v ./integration/... 2>&1 | tee $(OUT)/integration.log

bench: build images ## run the benchmark program ./integration/bench (BENCH_FLAGS=...)
	$(GO) run ./integration/bench $(BENCH_FLAGS)

lint: ## gofmt must list no file; go vet
	@ok=true
	unformatted=$$(find . -path ./_output -prune -o -path ./.git -prune -o -name '*.go' -print0 | xargs -0 $(GOFMT) -l) || ok=false
	if ! $$ok; then
		echo "gofmt failed (see above: a file that does not parse?)" >&2
	fi
	if [[ -n "$$unformatted" ]]; then
		echo "gofmt: these files need gofmt -w:" >&2
		echo "$$unformatted" >&2
	fi
	$$ok && [[ -z "$$unformatted" ]] || exit 1
	echo "gofmt: ok"
	$(GO) vet ./...
	echo "go vet: ok"

install: build ## install agentd and agentctl to PREFIX/bin, the systemd unit, /etc/berth
	@install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN)/agentd $(BIN)/agentctl $(DESTDIR)$(PREFIX)/bin/
	echo "installed $(PREFIX)/bin/agentd and $(PREFIX)/bin/agentctl"
	if [[ -d $(DESTDIR)/etc/systemd/system ]]; then
		unit=$$(mktemp)
		sed 's|/usr/local/bin/agentd|$(PREFIX)/bin/agentd|' contrib/systemd/berth-agent.service >"$$unit"
		install -m 0644 "$$unit" $(DESTDIR)/etc/systemd/system/berth-agent.service
		rm -f "$$unit"
		echo "installed /etc/systemd/system/berth-agent.service; now: systemctl daemon-reload && systemctl enable --now berth-agent"
	else
		echo "no /etc/systemd/system: the systemd unit is not installed (it is contrib/systemd/berth-agent.service)"
	fi
	if [[ -e $(DESTDIR)/etc/berth/agent.toml ]]; then
		echo "kept the existing /etc/berth/agent.toml (the default is contrib/agent.toml)"
	else
		install -D -m 0644 contrib/agent.toml $(DESTDIR)/etc/berth/agent.toml
		echo "installed /etc/berth/agent.toml (every key commented out: the defaults)"
	fi
	install -d -m 0755 $(DESTDIR)/etc/berth/groups.d
	echo "local groups go in /etc/berth/groups.d/*.toml (examples: contrib/examples)"

clean: ## remove _output (except a demo's state: make clean-demo)
	@if [[ -e $(DEMO_DIR) ]]; then
		find $(OUT) -mindepth 1 -maxdepth 1 ! -name demo -exec rm -rf {} +
		echo "kept $(OUT)/demo: make clean-demo removes the demo"
	else
		rm -rf $(OUT)
	fi
