package fleet

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/task"
)

// EventKind says what happened in the fleet.
type EventKind int

const (
	EventOnline EventKind = iota + 1
	EventOffline
	EventProgress
	EventResult
	EventDrift
)

func (k EventKind) String() string {
	switch k {
	case EventOnline:
		return "online"
	case EventOffline:
		return "offline"
	case EventProgress:
		return "progress"
	case EventResult:
		return "result"
	case EventDrift:
		return "drift"
	}
	return "unknown"
}

// Event is one thing that happened: an agent came or went, a task reported
// progress or finished.
type Event struct {
	Kind    EventKind
	Host    string
	TaskID  string
	At      time.Time
	Mark    string
	Message string
	Result  *task.Result
}

// Progress is one progress report of a task.
type Progress struct {
	At   time.Time
	Mark string
	Line string
}

type bus struct {
	mu      sync.Mutex
	subs    map[int]chan Event
	next    int
	dropped atomic.Int64
}

func newBus() *bus { return &bus{subs: map[int]chan Event{}} }

func (b *bus) subscribe(buffer int) (<-chan Event, func()) {
	if buffer <= 0 {
		buffer = 256
	}
	ch := make(chan Event, buffer)
	b.mu.Lock()
	id := b.next
	b.next++
	b.subs[id] = ch
	b.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, id)
			b.mu.Unlock()
			close(ch)
		})
	}
}

func (b *bus) publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.subs {
		select {
		case ch <- e:
		default:
			b.dropped.Add(1)
		}
	}
}

// progressLog keeps progress lines of open and recently finished tasks.
type progressLog struct {
	mu       sync.Mutex
	lines    map[string][]Progress
	finished []string // FIFO of finished task ids still kept
}

const (
	maxLinesPerTask   = 10000
	keepFinishedTasks = 1024
)

func newProgressLog() *progressLog { return &progressLog{lines: map[string][]Progress{}} }

func (p *progressLog) open(id string) {
	p.mu.Lock()
	if _, ok := p.lines[id]; !ok {
		p.lines[id] = nil
	}
	p.mu.Unlock()
}

func (p *progressLog) add(id string, pr Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lines[id]
	if len(l) >= maxLinesPerTask {
		return
	}
	p.lines[id] = append(l, pr)
}

func (p *progressLog) finish(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished = append(p.finished, id)
	for len(p.finished) > keepFinishedTasks {
		delete(p.lines, p.finished[0])
		p.finished = p.finished[1:]
	}
}

func (p *progressLog) get(id string) []Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Progress(nil), p.lines[id]...)
}
