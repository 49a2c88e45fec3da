package imagebuild

import (
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultBusybox is where Debian's busybox-static installs busybox.
const DefaultBusybox = "/bin/busybox"

// Applets are the busybox applets linked under /bin in the busybox image.
// A fixed list, not `busybox --list`, so building never runs the binary.
var Applets = []string{
	"[", "awk", "base64", "basename", "cat", "chmod", "chown", "clear", "cp",
	"cut", "date", "dd", "df", "diff", "dirname", "du", "echo", "env", "expr",
	"false", "find", "fold", "free", "grep", "gunzip", "gzip", "head",
	"hexdump", "hostname", "id", "ifconfig", "ip", "kill", "killall", "less",
	"ln", "ls", "md5sum", "mkdir", "mkfifo", "mktemp", "more", "mount", "mv",
	"nc", "netstat", "nproc", "nslookup", "od", "pidof", "ping", "printf",
	"ps", "pwd", "readlink", "realpath", "rev", "rm", "rmdir", "sed", "seq",
	"sh", "sha256sum", "sleep", "sort", "stat", "sync", "tac", "tail", "tar",
	"tee", "test", "timeout", "top", "touch", "tr", "true", "umount", "uname",
	"uniq", "uptime", "usleep", "vi", "watch", "wc", "wget", "which",
	"whoami", "xargs", "yes",
}

// Busybox returns a one-layer image with the busybox binary at /bin/busybox,
// a symlink for each of Applets in /bin, /tmp, and /etc/passwd and
// /etc/group with root. Its config runs "sh" with a standard PATH.
// busyboxPath must be a static busybox for this machine's architecture.
func Busybox(busyboxPath string) (v1.Image, error) {
	if err := checkBusybox(busyboxPath); err != nil {
		return nil, err
	}
	files := newLayerFiles()
	files.base()
	addBusybox(files, busyboxPath, Applets)
	layer, err := files.layer()
	if err != nil {
		return nil, err
	}
	return image(layer, v1.Config{
		Cmd:        []string{"sh"},
		Env:        []string{DefaultPath},
		WorkingDir: "/",
	})
}

func checkBusybox(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("busybox image: %w (install busybox-static)", err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("busybox image: %s is not an executable file", path)
	}
	return nil
}

// addBusybox puts busybox at /bin/busybox with symlinks for applets.
func addBusybox(files *layerFiles, busyboxPath string, applets []string) {
	files.hostFile("bin/busybox", 0o755, busyboxPath)
	for _, a := range applets {
		files.symlink("bin/"+a, "busybox")
	}
}
