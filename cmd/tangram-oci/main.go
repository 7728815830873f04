// Command tangram-oci is Tangram's OCI runtime in a small binary: the
// commands of `tangram container` (runc's verbs and flags) on OCI
// bundles, without the rest of the platform — and without the image store
// (`tangram image`, containers made from images and commit stay in the
// full binary), whose dependencies' package initialisation would cost
// every run twice: in this process and in the container's init. A containerd-style caller runs
// its runtime once per create, start, kill and delete; the full tangram
// binary spends about 4 ms starting (its other components' package
// initialisation and a 60 MB image), this one under 2 ms — the difference
// between matching runc and taking half its time.
//
// Point containerd's runc shim at it with the runtime option
// BinaryName = "/usr/local/bin/tangram-oci"; it accepts runc's global
// flags --root, --log, --log-format and --debug.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/cmd/internal/cliout"
	"github.com/tangram-dev/tangram/cmd/internal/containercli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	out := &cliout.Printer{}
	root := containercli.Command(out)
	root.Use = "tangram-oci"
	root.Short = "Tangram's OCI runtime: runc's verbs on OCI bundles"
	root.SilenceUsage, root.SilenceErrors = true, true
	// No completion command: cobra builds it on every run, and what drives
	// this binary is a container manager (the full tangram has it).
	root.CompletionOptions.DisableDefaultCmd = true
	var logFile, logFormat string
	var debug, systemd bool
	pf := root.PersistentFlags()
	pf.StringVarP(&out.Format, "output", "o", "table", "output format: table or json")
	pf.StringVar(&logFile, "log", "", "append errors and logs to this file (runc's flag; containerd reads the last error from it)")
	pf.StringVar(&logFormat, "log-format", "text", "log file format: text or json")
	pf.BoolVar(&debug, "debug", false, "log at debug level")
	pf.BoolVar(&systemd, "systemd-cgroup", false, "refused: cgroups are managed through cgroupfs (v1 or v2), not systemd")
	var logw *os.File
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		out.Out = cmd.OutOrStdout()
		if systemd {
			return errors.New("--systemd-cgroup: not supported; tangram-oci manages cgroups through cgroupfs (v1 and v2): drop the flag (containerd: SystemdCgroup = false)")
		}
		if logFormat != "text" && logFormat != "json" {
			return fmt.Errorf("--log-format %q: want text or json", logFormat)
		}
		level := slog.LevelError
		if debug {
			level = slog.LevelDebug
		}
		w := cmd.ErrOrStderr()
		if logFile != "" {
			f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				return fmt.Errorf("--log: %w", err)
			}
			logw, w = f, f
		}
		opts := &slog.HandlerOptions{Level: level}
		if logFormat == "json" {
			slog.SetDefault(slog.New(slog.NewJSONHandler(w, opts)))
		} else {
			slog.SetDefault(slog.New(slog.NewTextHandler(w, opts)))
		}
		return out.Check()
	}
	err := root.ExecuteContext(ctx)
	stop()
	var code containercli.ExitCode
	if errors.As(err, &code) {
		os.Exit(int(code)) // the container's own exit code
	}
	if err != nil {
		if logw != nil {
			logError(logw, logFormat, err)
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// logError appends err to the --log file the way runc does, so a caller
// reading the file's last line finds why the command failed.
func logError(f *os.File, format string, err error) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if format == "json" {
		b, _ := json.Marshal(map[string]string{"level": "error", "msg": err.Error(), "time": now})
		f.Write(append(b, '\n'))
		return
	}
	fmt.Fprintf(f, "time=%s level=error msg=%q\n", now, err.Error())
}
