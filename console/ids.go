package console

import (
	"net/http"
	"strconv"

	"github.com/tangram-dev/tangram/idgen"
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/store"
)

func (c *Console) registerIDs(mux *http.ServeMux) {
	if c.cfg.IDs == nil {
		return
	}
	mux.Handle("GET /ids", c.page(c.idsPage))
	mux.Handle("POST /ids/tags", c.page(c.saveIDTag))
}

// idRow is a tag with this server's buffer of it.
type idRow struct {
	idgen.Tag
	Buffer *idgen.State
}

// workerRow is a leased number and whether its lease is live.
type workerRow struct {
	idgen.WorkerLease
	Live bool
}

// idsPage: the segment tags (end of the last range, step, this server's
// double buffer) and every leased worker number.
func (c *Console) idsPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	tags, err := c.cfg.IDs.Tags(r.Context())
	if err != nil {
		return err
	}
	bufs := map[string]idgen.State{}
	for _, b := range c.cfg.IDs.Buffers() {
		bufs[b.Tag] = b
	}
	rows := make([]idRow, 0, len(tags))
	for _, t := range tags {
		row := idRow{Tag: t}
		if b, ok := bufs[t.Tag]; ok {
			row.Buffer = &b
		}
		rows = append(rows, row)
	}
	ws, err := c.cfg.IDs.Workers(r.Context())
	if err != nil {
		return err
	}
	now := store.NowMillis()
	wrows := make([]workerRow, 0, len(ws))
	for _, x := range ws {
		wrows = append(wrows, workerRow{WorkerLease: x, Live: x.ExpiresAt >= now})
	}
	c.render(w, r, "ids", "IDs", map[string]any{"Tags": rows, "Workers": wrows})
	return nil
}

// saveIDTag creates a tag or changes its step (admins).
func (c *Console) saveIDTag(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermAdmin, "", "", ""); err != nil {
		return err
	}
	num := func(name string) (int64, error) {
		v := r.FormValue(name)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, api.BadRequest("%s %q: want a whole number", name, v)
		}
		return n, nil
	}
	start, err := num("start")
	if err != nil {
		return err
	}
	step, err := num("step")
	if err != nil {
		return err
	}
	t, err := c.cfg.IDs.CreateTag(r.Context(), idgen.TagRequest{Tag: r.FormValue("tag"), Start: start, Step: step, Description: r.FormValue("description")})
	if err != nil {
		return err
	}
	c.back(w, r, "tag "+t.Tag+" saved: next range from "+strconv.FormatInt(t.MaxID, 10)+", step "+strconv.FormatInt(t.Step, 10), "")
	return nil
}
