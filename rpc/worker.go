package rpc

import (
	"sync"
	"time"
)

// workerPool runs handlers on goroutines that outlive one call. A fresh
// goroutine per call would start with a small stack and grow it (copying)
// on nearly every call through a codec; a worker keeps its grown stack.
// Idle workers exit after workerIdle; there is no upper bound beyond the
// server's in-flight limit.
type workerPool struct {
	tasks chan func()
	stop  chan struct{}
	wg    *sync.WaitGroup
}

const workerIdle = 10 * time.Second

func newWorkerPool(stop chan struct{}, wg *sync.WaitGroup) *workerPool {
	return &workerPool{tasks: make(chan func()), stop: stop, wg: wg}
}

// run hands fn to an idle worker or starts a new one.
func (p *workerPool) run(fn func()) {
	select {
	case p.tasks <- fn:
	default:
		p.wg.Add(1)
		go p.work(fn)
	}
}

func (p *workerPool) work(fn func()) {
	defer p.wg.Done()
	fn()
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		select {
		case fn := <-p.tasks:
			fn()
			t.Reset(workerIdle)
		case <-t.C:
			return
		case <-p.stop:
			return
		}
	}
}
