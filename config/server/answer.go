package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/tangram-dev/tangram/config"
)

// A watch that asks for content is answered with the changed namespaces'
// configuration (what a fetch would return), so a change reaches the
// application in one round trip instead of a notification and then, from
// every client at the same moment, a fetch. Watchers of a namespace mostly
// get the same answer: a fan-out loads each namespace once per notification
// id and encodes each distinct answer once (distinct by the ids, by which
// gray branches select the client and by whether it may read secrets).

// answerMemo shares rendering work among the watches one goroutine answers.
type answerMemo struct {
	served map[string]*served
	bodies map[string][]byte
}

func newAnswerMemo() *answerMemo {
	return &answerMemo{served: map[string]*served{}, bodies: map[string][]byte{}}
}

func (m *answerMemo) servedOf(ctx context.Context, s *Server, c config.Coord, nid int64) (*served, error) {
	k := c.String() + "#" + strconv.FormatInt(nid, 10)
	if sv := m.served[k]; sv != nil {
		return sv, nil
	}
	sv, err := s.servedFor(ctx, c, nid)
	if err != nil {
		return nil, err
	}
	m.served[k] = sv
	return sv, nil
}

// render returns w's answer to changes and a key naming it: watches whose
// answers have the same key get the same bytes. Each client instance
// answered with content is recorded as holding the release, as a fetch
// records it.
func (s *Server) render(ctx context.Context, w *watch, changes []config.Notification, m *answerMemo) (string, []byte) {
	if m == nil {
		m = newAnswerMemo()
	}
	key := answerKey(w, changes)
	if !w.req.Content || len(changes) == 0 {
		if b := m.bodies[key]; b != nil {
			return key, b
		}
		b := changesJSON(changes)
		m.bodies[key] = b
		return key, b
	}
	kb := []byte(key)
	svs := make([]*served, len(changes))
	for i, n := range changes {
		c := config.Coord{Env: w.req.Env, App: w.req.App, Cluster: w.req.Cluster, NS: n.NS}
		sv, err := m.servedOf(ctx, s, c, n.ID)
		if err != nil {
			// Answered without content: the client fetches it.
			s.log.Warn("config: load a watch answer's content; the client will fetch it", "ns", c.String(), "err", err)
			kb = append(kb, "|-"...)
			continue
		}
		svs[i] = sv
		gray, linkGray := sv.viewKey(w.peer)
		kb = append(kb, '|', flag(gray), flag(linkGray), flag(w.secrets[n.NS]))
		s.noteServed(sv, w.peer, gray)
	}
	key = string(kb)
	if b := m.bodies[key]; b != nil {
		return key, b
	}
	out := make([]config.Notification, len(changes))
	for i, n := range changes {
		out[i] = n
		if sv := svs[i]; sv != nil {
			c := config.Coord{Env: w.req.Env, App: w.req.App, Cluster: w.req.Cluster, NS: n.NS}
			out[i].Config = sv.payload(c, n.ID, w.peer, w.secrets[n.NS])
		}
	}
	b, err := json.Marshal(struct {
		Changes []config.Notification `json:"changes"`
	}{out})
	if err != nil { // cannot happen: strings and integers only
		s.log.Error("config: encode a watch answer", "err", err)
		b = changesJSON(changes)
	} else {
		b = append(b, '\n')
	}
	m.bodies[key] = b
	return key, b
}

func flag(b bool) byte {
	if b {
		return '1'
	}
	return '0'
}

// writeAnswer answers a watch through net/http.
func writeAnswer(w http.ResponseWriter, buf []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(buf))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}
