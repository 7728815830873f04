// Package imagecli is `tangram image`, the OCI image store's commands;
// importing it also gives `tangram container` its images (run --image,
// commit). The lean runtime binary, tangram-oci, leaves it out: it runs
// bundles, as runc does, without linking the image store.
package imagecli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/cmd/internal/cliout"
	"github.com/tangram-dev/tangram/cmd/internal/containercli"
	"github.com/tangram-dev/tangram/container"
	"github.com/tangram-dev/tangram/container/image"
	"github.com/tangram-dev/tangram/container/imagesource"
)

func init() {
	containercli.RegisterImages(image.DefaultRoot, func(root string) (container.Images, error) {
		s, err := openImages(root)
		if err != nil {
			return nil, err
		}
		return imagesource.New(s), nil
	})
}

// openImages opens the store at root (default: env TANGRAM_IMAGE_ROOT,
// else image.DefaultRoot).
func openImages(root string) (*image.Store, error) {
	if root == "" {
		root = cliout.EnvOr("TANGRAM_IMAGE_ROOT", image.DefaultRoot)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	return image.Open(abs)
}

// ImageCommand returns `image`: the OCI image store.
func ImageCommand(g *cliout.Printer) *cobra.Command {
	var root string
	c := &cobra.Command{
		Use:   "image",
		Short: "Container images: import OCI layouts and docker save archives, list, inspect, export",
	}
	c.PersistentFlags().StringVar(&root, "images", "", "image store (default: env TANGRAM_IMAGE_ROOT, else "+image.DefaultRoot+")")
	store := func() (*image.Store, error) { return openImages(root) }
	// storeAnd opens the store and finds ref in it.
	storeAnd := func(ref string) (*image.Store, *image.Image, error) {
		s, err := store()
		if err != nil {
			return nil, nil, err
		}
		im, err := s.Get(ref)
		return s, im, err
	}

	var name string
	imp := &cobra.Command{
		Use:   "import PATH",
		Short: "Import an OCI image layout (a directory or a tar of one) or a docker save archive",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := store()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "importing %s …\n", args[0])
			imgs, err := s.Import(cmd.Context(), args[0], name)
			if err != nil {
				return err
			}
			return g.Print(imgs, func(w *tabwriter.Writer) {
				cliout.Row(w, "IMAGE", "DIGEST", "LAYERS", "SIZE")
				for _, im := range imgs {
					cliout.Row(w, im.Ref, short(im.Digest), len(im.Manifest.Layers), humanBytes(im.Size))
				}
			})
		},
	}
	imp.Flags().StringVar(&name, "name", "", "name for an unnamed image, or name:tag to rename the one image imported")

	ls := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List images", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := store()
			if err != nil {
				return err
			}
			imgs, err := s.List()
			if err != nil {
				return err
			}
			return g.Print(imgs, func(w *tabwriter.Writer) {
				cliout.Row(w, "IMAGE", "DIGEST", "LAYERS", "SIZE", "CREATED")
				for _, im := range imgs {
					created := "-"
					if !im.Created.IsZero() {
						created = im.Created.Format(time.RFC3339)
					}
					cliout.Row(w, im.Ref, short(im.Digest), len(im.Manifest.Layers), humanBytes(im.Size), created)
				}
			})
		},
	}

	inspect := &cobra.Command{
		Use: "inspect IMAGE", Short: "Print an image's manifest and config as JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, im, err := storeAnd(args[0])
			if err != nil {
				return err
			}
			out := g
			if g.Format == "table" {
				cp := *g
				cp.Format = "json"
				out = &cp
			}
			return out.Print(map[string]any{"ref": im.Ref, "digest": im.Digest, "size": im.Size, "manifest": im.Manifest, "config": im.Config}, nil)
		},
	}

	history := &cobra.Command{
		Use: "history IMAGE", Short: "Show how an image's layers were made", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, im, err := storeAnd(args[0])
			if err != nil {
				return err
			}
			return g.Print(im.Config.History, func(w *tabwriter.Writer) {
				cliout.Row(w, "CREATED", "CREATED BY", "EMPTY LAYER", "COMMENT")
				for i := len(im.Config.History) - 1; i >= 0; i-- {
					h := im.Config.History[i]
					created := "-"
					if h.Created != nil {
						created = h.Created.Format(time.RFC3339)
					}
					cliout.Row(w, created, h.CreatedBy, h.EmptyLayer, h.Comment)
				}
			})
		},
	}

	export := &cobra.Command{
		Use: "export IMAGE FILE", Short: "Write an image as an OCI image layout tar (import reads it back)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, im, err := storeAnd(args[0])
			if err != nil {
				return err
			}
			tmp := args[1] + ".tmp"
			f, err := os.Create(tmp)
			if err != nil {
				return err
			}
			err = s.Export(im, f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(tmp)
				return err
			}
			return os.Rename(tmp, args[1])
		},
	}

	tag := &cobra.Command{
		Use: "tag IMAGE NEW", Short: "Give an image another name", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := store()
			if err != nil {
				return err
			}
			return s.Tag(args[0], args[1])
		},
	}

	var force bool
	var containers string
	rm := &cobra.Command{
		Use: "rm IMAGE", Aliases: []string{"remove"}, Short: "Remove an image (refused while a container uses it, unless --force)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, im, err := storeAnd(args[0])
			if err != nil {
				return err
			}
			if containers == "" {
				containers = cliout.EnvOr("TANGRAM_CONTAINER_ROOT", container.DefaultConfig().Root)
			}
			abs, _ := filepath.Abs(containers)
			rt, err := container.New(container.Config{Root: abs})
			if err != nil {
				return err
			}
			all, err := rt.List()
			if err != nil {
				return err
			}
			var users []string
			for _, st := range all {
				if st.Annotations[container.AnnotationImageDigest] == im.Digest {
					users = append(users, st.ID)
				}
			}
			if len(users) > 0 && !force {
				return fmt.Errorf("image %s is used by container(s) %s: delete them first, or --force", im.Ref, strings.Join(users, ", "))
			}
			// Layers under a live overlay mount stay on disk until unused.
			inUse := func(dir string) bool { return mountedLower(dir) }
			if err := s.Remove(args[0], inUse); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "removed", im.Ref)
			return nil
		},
	}
	rm.Flags().BoolVarP(&force, "force", "f", false, "remove even while containers use it (their mounted layers are kept)")
	rm.Flags().StringVar(&containers, "root", "", "container state directory to check for users (default: as tangram container)")

	var plainHTTP bool
	var creds string
	regOpts := func(cmd *cobra.Command) (image.RegistryOptions, error) {
		o := image.RegistryOptions{PlainHTTP: plainHTTP, Progress: func(what string, n int64) {
			fmt.Fprintf(cmd.ErrOrStderr(), "  %s  %s\n", short(what), humanBytes(n))
		}}
		if creds == "" {
			creds = os.Getenv("TANGRAM_REGISTRY_AUTH")
		}
		if creds != "" {
			u, p, ok := strings.Cut(creds, ":")
			if !ok {
				return o, fmt.Errorf("registry credentials must be user:password")
			}
			o.Username, o.Password = u, p
		}
		return o, nil
	}
	pull := &cobra.Command{
		Use: "pull HOST/REPO[:TAG|@DIGEST]", Short: "Fetch an image from a registry (OCI distribution API)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := store()
			if err != nil {
				return err
			}
			o, err := regOpts(cmd)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "pulling %s …\n", args[0])
			im, err := s.Pull(cmd.Context(), args[0], o)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), im.Ref, im.Digest)
			return nil
		},
	}
	push := &cobra.Command{
		Use: "push IMAGE HOST/REPO[:TAG]", Short: "Upload an image to a registry (OCI distribution API)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, im, err := storeAnd(args[0])
			if err != nil {
				return err
			}
			o, err := regOpts(cmd)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "pushing %s to %s …\n", im.Ref, args[1])
			if err := s.Push(cmd.Context(), im, args[1], o); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[1], im.Digest)
			return nil
		},
	}
	for _, c := range []*cobra.Command{pull, push} {
		c.Flags().BoolVar(&plainHTTP, "plain-http", false, "HTTP instead of HTTPS (loopback registries always get HTTP)")
		c.Flags().StringVar(&creds, "creds", "", "user:password for the registry (default: env TANGRAM_REGISTRY_AUTH)")
	}
	c.AddCommand(imp, ls, inspect, history, export, tag, rm, pull, push)
	return c
}

// mountedLower reports whether dir is a lower directory of a mounted
// overlay (read from /proc/self/mountinfo).
func mountedLower(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return true // when unsure, keep it
	}
	return strings.Contains(string(b), dir)
}

func short(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
