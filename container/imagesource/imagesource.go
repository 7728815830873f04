// Package imagesource gives the container runtime its images from
// container/image's store: the runtime asks for a container.Images, and
// New adapts a *image.Store to it. (The runtime does not import the store
// itself, so a binary that runs bundles only does not link it.)
package imagesource

import (
	"context"

	"github.com/tangram-dev/tangram/container"
	"github.com/tangram-dev/tangram/container/image"
)

// New returns store as the runtime's source of images.
func New(store *image.Store) container.Images { return source{store} }

type source struct{ s *image.Store }

// Resolve finds ref in the store and unpacks its layers (once).
func (src source) Resolve(ctx context.Context, ref string) (*container.Image, error) {
	img, err := src.s.Get(ref)
	if err != nil {
		return nil, err
	}
	layers, err := src.s.LayerDirs(ctx, img)
	if err != nil {
		return nil, err
	}
	return Convert(img, layers), nil
}

// Commit makes image ref of base plus the changes in upper.
func (src source) Commit(ctx context.Context, base, upper, ref, comment string) (*container.Image, error) {
	b, err := src.s.Get(base)
	if err != nil {
		return nil, err
	}
	img, err := src.s.Commit(ctx, b, upper, ref, comment)
	if err != nil {
		return nil, err
	}
	return Convert(img, nil), nil
}

// Convert is an image of the store as the runtime sees it, with its
// layers' directories.
func Convert(img *image.Image, layers []string) *container.Image {
	c := img.Config.Config
	return &container.Image{Ref: img.Ref, Digest: img.Digest, Layers: layers, Config: container.ImageConfig{
		Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User}}
}
