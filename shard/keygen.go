package shard

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/tangram-dev/tangram/idgen"
)

// KeyGeneratorTypes lists the key generator types a rule may name.
var KeyGeneratorTypes = []string{"SNOWFLAKE", "SEED"}

// keyGen fills a table's key column on INSERTs that leave it out.
//
//   - SNOWFLAKE: idgen's Twitter layout (props worker-id, 0..1023); the
//     row is then routed by the ID like by any given value.
//   - SEED: idgen's Seed layout, whose db and table fields say where the row
//     lives (props machine 0..63, type 0..7): the row is routed first — by
//     its other sharding columns, and where a strategy shards by the key
//     itself (which must then be ID_SUFFIX), to the next target in turn —
//     and the ID carries that node's suffixes, so a query by the ID alone
//     finds it.
type keyGen struct {
	name   string
	column string
	seed   bool
	typ    int64
	gen    *idgen.Snowflake
	turn   atomic.Uint64 // the next target, for strategies on the key
}

func newKeyGen(typ string, p props) (*keyGen, error) {
	switch strings.ToUpper(typ) {
	case "SNOWFLAKE":
		if err := p.known("worker-id"); err != nil {
			return nil, err
		}
		w, err := p.int("worker-id", 0, false)
		if err != nil {
			return nil, err
		}
		if w < 0 || w > 1023 {
			return nil, fmt.Errorf("property worker-id: %d (want 0..1023)", w)
		}
		g, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Twitter(), Fixed: map[string]int64{"datacenter": w >> 5, "worker": w & 31}})
		if err != nil {
			return nil, err
		}
		return &keyGen{gen: g}, nil
	case "SEED":
		if err := p.known("machine", "type"); err != nil {
			return nil, err
		}
		m, err := p.int("machine", 0, false)
		if err != nil {
			return nil, err
		}
		l := idgen.Seed()
		if m < 0 || m > l.Max("machine") {
			return nil, fmt.Errorf("property machine: %d (want 0..%d)", m, l.Max("machine"))
		}
		t, err := p.int("type", 0, false)
		if err != nil {
			return nil, err
		}
		if t < 0 || t > l.Max("type") {
			return nil, fmt.Errorf("property type: %d (want 0..%d)", t, l.Max("type"))
		}
		g, err := idgen.NewSnowflake(idgen.Config{Layout: l, Fixed: map[string]int64{"machine": m}, PerID: []string{"type", "db", "table"}})
		if err != nil {
			return nil, err
		}
		return &keyGen{gen: g, seed: true, typ: t}, nil
	}
	return nil, fmt.Errorf("unknown key generator type %q (want one of %s)", typ, strings.Join(KeyGeneratorTypes, ", "))
}

// checkSeed: under a SEED generator, a strategy on the key column must
// read the ID's own field (ID_SUFFIX over the Seed layout's db or table).
func (k *keyGen) checkSeed(s *strategy, field string) error {
	if !k.seed || s == nil || len(s.columns) != 1 || s.columns[0] != k.column {
		return nil
	}
	a, ok := s.alg.(*idSuffixAlg)
	if !ok || a.layout.Name != "seed" || a.field != field {
		return fmt.Errorf("the SEED key generator writes the row's %s suffix into %s: shard by %s with ID_SUFFIX (layout seed, field %s), not %s", field, k.column, k.column, field, s.alg.typ())
	}
	return nil
}

// next picks the target of a strategy on the key column (in turn).
func (k *keyGen) next(all []string) string {
	return all[int(k.turn.Add(1)-1)%len(all)]
}

// generate makes the key of a row headed for node n (SEED), or any row.
func (k *keyGen) generate(n *Node) (int64, error) {
	if !k.seed {
		return k.gen.Next()
	}
	db, ok1 := trailingNumber(n.DataSource)
	tb, ok2 := trailingNumber(n.Table)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("shard: the SEED key generator needs data sources and tables whose names end in their number (%s)", n)
	}
	return k.gen.NextFor(k.typ, db, tb)
}

// seedNode is where a row without its key goes under a SEED generator:
// each strategy on another column routes by the row's value; one on the
// key column takes the next target in turn.
func (t *Table) seedNode(conds map[string]Cond) (Node, error) {
	pick := func(s *strategy, all []string) (string, error) {
		if s != nil && len(s.columns) == 1 && s.columns[0] == t.key.column {
			return t.key.next(all), nil
		}
		got, err := s.targets(all, conds, nil)
		if err != nil {
			return "", err
		}
		if len(got) != 1 {
			return "", fmt.Errorf("shard: %s: the row's values name %d targets of %v, want one", t.Name, len(got), all)
		}
		return got[0], nil
	}
	ds, err := pick(t.db, t.DataSources)
	if err != nil {
		return Node{}, err
	}
	tb, err := pick(t.tbl, t.tables[ds])
	if err != nil {
		return Node{}, err
	}
	return Node{DataSource: ds, Table: tb}, nil
}
