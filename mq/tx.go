package mq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// TxState is a local transaction's outcome.
type TxState int

// The outcomes: Unknown leaves the half message for the broker to check
// back later (ProducerConfig.TxChecker).
const (
	TxUnknown TxState = iota
	TxCommit
	TxRollback
)

// SendTransaction is the reliable-message pattern: it stores m as
// a half message (invisible to consumers), runs local (the local
// transaction), and commits the message when local returns TxCommit, or
// rolls it back on TxRollback or an error. If this process dies or the
// outcome cannot be delivered, the broker asks the producer group's
// TxChecker, every 30 s up to 15 times, then rolls back.
func (p *Producer) SendTransaction(ctx context.Context, m *Message, local func(ctx context.Context, half *SendResult) (TxState, error)) (*SendResult, TxState, error) {
	if p.cfg.Group == "" {
		return nil, TxRollback, errors.New("mq: transactional messages need ProducerConfig.Group")
	}
	mc := *m
	mc.Props = map[string]string{}
	for k, v := range m.Props {
		mc.Props[k] = v
	}
	mc.Props[wire.PropTx] = "true"
	mc.Props[wire.PropPGroup] = p.cfg.Group
	mc.ShardingKey = m.ShardingKey
	res, err := p.Send(ctx, &mc)
	if err != nil {
		return nil, TxRollback, fmt.Errorf("mq: sending the half message: %w", err)
	}
	state, lerr := local(ctx, res)
	if lerr != nil {
		state = TxRollback
	}
	if state == TxUnknown {
		return res, state, lerr
	}
	if err := p.EndTransaction(ctx, res.ID, state == TxCommit); err != nil {
		return res, state, errors.Join(lerr, fmt.Errorf("mq: the outcome will be resolved by a check-back: %w", err))
	}
	return res, state, lerr
}

// EndTransaction commits or rolls back a half message by its broker ID.
func (p *Producer) EndTransaction(ctx context.Context, id string, commit bool) error {
	name, _, _, err := wire.ParseID(id)
	if err != nil {
		return err
	}
	addr, err := p.c.brokerFor(ctx, name)
	if err != nil {
		return err
	}
	b, err := p.c.broker(ctx, addr)
	if err != nil {
		return err
	}
	_, err = rpc.Call[wire.NameRequest](ctx, b, wire.MethodEndTx, &wire.EndTxRequest{ID: id, Commit: commit}, rpc.Idempotent())
	return err
}

// checkLoop keeps a check stream open to every broker and answers the
// broker's questions with the TxChecker.
func (p *Producer) checkLoop(ctx context.Context) {
	var mu sync.Mutex
	open := map[string]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		if bs, err := p.c.Brokers(ctx); err == nil {
			for _, bi := range bs {
				if bi.Role != "master" {
					continue
				}
				mu.Lock()
				if open[bi.Addr] {
					mu.Unlock()
					continue
				}
				open[bi.Addr] = true
				mu.Unlock()
				wg.Add(1)
				go func(addr string) {
					defer wg.Done()
					p.checkStream(ctx, addr)
					mu.Lock()
					delete(open, addr)
					mu.Unlock()
				}(bi.Addr)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

func (p *Producer) checkStream(ctx context.Context, addr string) {
	b, err := p.c.broker(ctx, addr)
	if err != nil {
		return
	}
	st, err := rpc.NewStream[wire.TxChecksRequest, wire.TxCheck](ctx, b, wire.MethodTxChecks)
	if err != nil {
		return
	}
	defer st.Cancel()
	if err := st.Send(&wire.TxChecksRequest{Group: p.cfg.Group}); err != nil {
		return
	}
	for {
		chk, err := st.Recv()
		if err != nil {
			return
		}
		m := fromStored("", &chk.Msg)
		if rt := chk.Msg.Props[wire.PropRealTopic]; rt != "" {
			m.Topic = rt
		}
		state := p.cfg.TxChecker(ctx, m)
		if state == TxUnknown {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = rpc.Call[wire.NameRequest](cctx, b, wire.MethodEndTx, &wire.EndTxRequest{ID: chk.Msg.ID, Commit: state == TxCommit, FromCheck: true}, rpc.Idempotent())
		cancel()
		if err != nil {
			p.c.log.Warn("mq: answering a transaction check failed", "id", chk.Msg.ID, "err", err)
		}
	}
}
